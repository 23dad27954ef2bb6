"""Tests of the nbio Python module: loop, timers, futures, CPU jobs, TCP.

Timer tests use Loop(manual_clock=True) and never sleep. TCP tests bind to
127.0.0.1 port 0 and run both ends on one loop.
"""
import gc
import io
import os
import signal
import sys
import threading
import time
import tracemalloc
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sanitizers  # noqa: E402

sanitizers.preload_if_needed(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "nbio.so"))
import nbio  # noqa: E402


def manual_loop(**kwargs):
    return nbio.Loop(manual_clock=True, **kwargs)


def step(loop, seconds=0.0, times=3):
    """Advances the manual clock and runs a few non-blocking iterations."""
    if seconds:
        loop.advance(seconds)
    for _ in range(times):
        loop.run_once()


class TimerTest(unittest.TestCase):

    def test_timers_fire_in_deadline_order_then_fifo(self):
        loop = manual_loop()
        fired = []
        loop.call_later(0.030, fired.append, "c")
        loop.call_later(0.010, fired.append, "a1")
        loop.call_later(0.020, fired.append, "b")
        loop.call_later(0.010, fired.append, "a2")
        step(loop, 0.050)
        self.assertEqual(fired, ["a1", "a2", "b", "c"])
        loop.close()

    def test_timer_never_fires_early(self):
        loop = manual_loop()
        fired = []
        handle = loop.call_later(0.010, fired.append, 1)
        self.assertTrue(handle.pending)
        step(loop, 0.0099)
        self.assertEqual(fired, [])
        self.assertTrue(handle.pending)
        step(loop, 0.0002)
        self.assertEqual(fired, [1])
        self.assertFalse(handle.pending)
        loop.close()

    def test_time_follows_the_manual_clock(self):
        loop = manual_loop()
        t0 = loop.time()
        step(loop, 1.5)
        self.assertAlmostEqual(loop.time() - t0, 1.5, places=6)
        loop.close()

    def test_cancel_before_firing(self):
        loop = manual_loop()
        fired = []
        handle = loop.call_later(0.01, fired.append, 1)
        handle.cancel()
        self.assertFalse(handle.pending)
        step(loop, 1.0)
        self.assertEqual(fired, [])
        self.assertEqual(loop.load()["sleeping"], 0)
        loop.close()

    def test_cancel_after_firing_is_a_no_op(self):
        loop = manual_loop()
        fired = []
        handle = loop.call_later(0.01, fired.append, 1)
        step(loop, 0.02)
        handle.cancel()
        handle.cancel()
        self.assertEqual(fired, [1])
        loop.close()

    def test_periodic_timer_cancelled_inside_its_callback(self):
        loop = manual_loop()
        ticks = []

        def tick():
            ticks.append(loop.time())
            if len(ticks) == 3:
                handle.cancel()

        handle = loop.call_every(0.01, tick)
        for _ in range(10):
            step(loop, 0.01, times=1)
        self.assertEqual(len(ticks), 3)
        self.assertFalse(handle.pending)
        loop.close()

    def test_call_soon_runs_fifo_and_can_be_cancelled(self):
        loop = manual_loop()
        out = []
        loop.call_soon(out.append, 1)
        h = loop.call_soon(out.append, 2)
        loop.call_soon(out.append, 3)
        h.cancel()
        step(loop)
        self.assertEqual(out, [1, 3])
        loop.close()

    def test_run_returns_when_nothing_is_left(self):
        loop = nbio.Loop()
        out = []
        loop.call_later(0.01, out.append, "timer")
        loop.call_soon(out.append, "soon")
        loop.run()
        self.assertEqual(out, ["soon", "timer"])
        self.assertEqual(loop.load(), {"ready": 0, "urgent": 0, "waiting": 0,
                                       "sleeping": 0, "cpu_jobs": 0})
        self.assertGreater(loop.counters()["timers_fired"], 0)
        loop.close()

    def test_every_backend_runs_timers(self):
        for backend in nbio.backends():
            loop = nbio.Loop(backend=backend)
            self.assertEqual(loop.backend, backend)
            out = []
            loop.call_later(0.001, out.append, backend)
            loop.run()
            self.assertEqual(out, [backend])
            loop.close()

    def test_with_statement_closes_the_loop(self):
        with nbio.Loop() as loop:
            handle = loop.call_later(10, print)
        self.assertTrue(loop.closed)
        self.assertFalse(handle.pending)

    def test_handles_after_close_are_no_ops(self):
        loop = manual_loop()
        handle = loop.call_later(1, print)
        every = loop.call_every(1, print)
        loop.close()
        handle.cancel()
        every.cancel()
        self.assertFalse(handle.pending)
        self.assertTrue(loop.closed)
        with self.assertRaises(RuntimeError):
            loop.call_soon(print)
        with self.assertRaises(RuntimeError):
            loop.run()
        loop.close()  # idempotent


class FutureTest(unittest.TestCase):

    def test_future_to_callback(self):
        loop = manual_loop()
        seen = []
        fut = loop.sleep(0.01, result="slept")
        fut.add_done_callback(lambda f: seen.append(f.result()))
        self.assertFalse(fut.done())
        with self.assertRaises(nbio.InvalidStateError):
            fut.result()
        step(loop, 0.02)
        self.assertEqual(seen, ["slept"])
        # Added after it finished: still called, on the loop, not inline.
        fut.add_done_callback(lambda f: seen.append("late"))
        self.assertEqual(seen, ["slept"])
        step(loop)
        self.assertEqual(seen, ["slept", "late"])
        loop.close()

    def test_callback_to_future(self):
        loop = manual_loop()
        promise = nbio.Promise(loop)
        loop.call_later(0.01, promise.set_result, 42)
        step(loop, 0.02)
        self.assertEqual(promise.future.result(), 42)
        self.assertFalse(promise.set_result(43))
        loop.close()

    def test_callbacks_run_never_inline(self):
        loop = manual_loop()
        promise = nbio.Promise(loop)
        seen = []
        promise.future.add_done_callback(lambda f: seen.append(f.result()))
        promise.set_result("x")
        self.assertEqual(seen, [])
        step(loop)
        self.assertEqual(seen, ["x"])
        loop.close()

    def test_exception_and_cancel(self):
        loop = manual_loop()
        p = nbio.Promise(loop)
        p.set_exception(ValueError("bad"))
        self.assertIsInstance(p.future.exception(), ValueError)
        with self.assertRaises(ValueError):
            p.future.result()
        fut = loop.sleep(10)
        self.assertEqual(loop.load()["sleeping"], 1)
        self.assertTrue(fut.cancel())
        self.assertFalse(fut.cancel())
        self.assertTrue(fut.cancelled())
        self.assertEqual(loop.load()["sleeping"], 0)  # the timer stopped
        with self.assertRaises(nbio.CancelledError):
            fut.result()
        loop.close()

    def test_then_chains(self):
        loop = manual_loop()
        fut = loop.sleep(0.01, 2).then(lambda f: f.result() * 10).then(
            lambda f: loop.sleep(0.01, f.result() + 1))
        step(loop, 0.02)
        step(loop, 0.02)
        self.assertEqual(fut.result(), 21)
        loop.close()

    def test_when_all_and_when_any(self):
        loop = manual_loop()
        a, b, c = loop.sleep(0.03, "a"), loop.sleep(0.01, "b"), loop.sleep(0.02, "c")
        all_ = nbio.when_all([a, b, c])
        any_ = nbio.when_any([a, b, c])
        step(loop, 0.015)
        self.assertTrue(any_.done())
        self.assertFalse(all_.done())
        index, first = any_.result()
        self.assertEqual((index, first.result()), (1, "b"))
        step(loop, 0.02)
        self.assertEqual(all_.result(), ["a", "b", "c"])
        self.assertEqual(nbio.when_all([], loop=loop).done(), True)
        failing_input = nbio.Promise(loop)
        failing2 = nbio.when_all([failing_input.future, loop.sleep(5)])
        failing_input.set_exception(KeyError("k"))
        step(loop, 0.02)
        # Fails fast: the other input is still sleeping.
        self.assertIsInstance(failing2.exception(), KeyError)
        loop.close()

    def test_with_timeout(self):
        loop = manual_loop()
        slow = loop.sleep(10)
        timed = nbio.with_timeout(slow, 0.05)
        fast = loop.with_timeout(loop.sleep(0.01, "ok"), 0.05)
        step(loop, 0.02)
        self.assertEqual(fast.result(), "ok")
        self.assertFalse(timed.done())
        step(loop, 0.04)
        self.assertIsInstance(timed.exception(), TimeoutError)
        self.assertTrue(slow.cancelled())
        loop.close()

    def test_cancellation_source_cancels_everything_on_its_token(self):
        loop = manual_loop()
        source = nbio.CancellationSource()
        a = loop.sleep(10, token=source.token)
        b = loop.run_cpu_job(lambda: True, token=source.token)
        reasons = []
        source.token.register(reasons.append)
        step(loop)
        self.assertEqual(loop.load()["cpu_jobs"], 1)
        self.assertTrue(source.cancel("enough"))
        self.assertFalse(source.cancel())
        self.assertTrue(a.cancelled() and b.cancelled())
        self.assertEqual(reasons, ["enough"])
        step(loop)
        self.assertEqual(loop.load()["cpu_jobs"], 0)
        self.assertEqual(loop.load()["sleeping"], 0)
        # A token already cancelled cancels at once.
        self.assertTrue(loop.sleep(1, token=source.token).cancelled())
        loop.close()

    def test_run_until_complete(self):
        loop = nbio.Loop()
        self.assertEqual(loop.run_until_complete(loop.sleep(0.01, 7)), 7)
        loop.close()


class CpuJobTest(unittest.TestCase):

    def test_job_shares_the_thread_with_timers(self):
        # Each slice "takes" 0.1 ms of the manual clock: with a 1 ms budget
        # an iteration runs about ten slices, then the loop polls and runs
        # its timers.
        loop = manual_loop(cpu_budget=0.001)
        events = []
        count = [0]

        def work():
            count[0] += 1
            loop.advance(0.0001)
            return count[0] < 300

        job = loop.run_cpu_job(work)
        ticker = loop.call_every(0.002, lambda: events.append(count[0]))
        job.add_done_callback(lambda f: ticker.cancel())
        for _ in range(1000):
            if job.done():
                break
            loop.run_once()
        self.assertIsNone(job.result())
        self.assertEqual(count[0], 300)
        # The timer ran about every 20 slices while the job was going.
        self.assertGreater(len(events), 10, events)
        self.assertTrue(all(0 < c < 300 for c in events), events)
        self.assertGreater(loop.counters()["cpu_slices"], 299)
        loop.close()

    def test_job_exception_fails_its_future(self):
        loop = manual_loop()

        def boom():
            raise ZeroDivisionError("slice")

        fut = loop.run_cpu_job(boom)
        step(loop)
        self.assertIsInstance(fut.exception(), ZeroDivisionError)
        loop.close()

    def test_cancel_stops_the_job(self):
        loop = manual_loop()
        calls = [0]

        def work():
            calls[0] += 1
            return True

        fut = loop.run_cpu_job(work)
        step(loop, times=2)
        fut.cancel()
        before = calls[0]
        step(loop, times=3)
        self.assertEqual(calls[0], before)
        self.assertGreater(before, 0)
        loop.close()


class ThreadTest(unittest.TestCase):

    def test_call_soon_threadsafe_wakes_a_waiting_loop(self):
        loop = nbio.Loop()
        out = []
        blocker = loop.call_later(30, out.append, "never")

        def other():
            time.sleep(0.05)
            loop.call_soon_threadsafe(out.append, "from thread")
            loop.call_soon_threadsafe(blocker.cancel)

        t = threading.Thread(target=other)
        started = time.monotonic()
        t.start()
        loop.run()
        t.join()
        self.assertEqual(out, ["from thread"])
        self.assertLess(time.monotonic() - started, 5)
        loop.close()

    def test_stop_from_another_thread(self):
        loop = nbio.Loop()
        loop.call_later(30, print, "never")
        t = threading.Timer(0.05, loop.stop)
        started = time.monotonic()
        t.start()
        loop.run()
        t.join()
        self.assertLess(time.monotonic() - started, 5)
        loop.close()

    def test_other_threads_run_while_the_loop_waits(self):
        # The GIL is released in the poll: a pure-Python thread makes
        # progress while the loop sleeps on a timer.
        loop = nbio.Loop()
        counter = [0]
        done = threading.Event()

        def spin():
            while not done.is_set():
                counter[0] += 1

        t = threading.Thread(target=spin)
        t.start()
        loop.call_later(0.2, done.set)
        loop.run()
        t.join()
        self.assertGreater(counter[0], 1000)
        loop.close()


class ErrorTest(unittest.TestCase):

    def test_exception_in_callback_is_reported_and_the_loop_goes_on(self):
        loop = manual_loop()
        reports = []
        loop.set_exception_handler(reports.append)
        out = []

        def bad():
            raise ValueError("oops")

        loop.call_soon(bad)
        loop.call_soon(out.append, "after")
        step(loop)
        self.assertEqual(out, ["after"])
        self.assertEqual(len(reports), 1)
        self.assertIsInstance(reports[0]["exception"], ValueError)
        self.assertIn("call_soon", reports[0]["message"])
        loop.close()

    def test_default_report_prints_the_traceback(self):
        loop = manual_loop()

        def bad_callback():
            raise ValueError("printed")

        loop.call_soon(bad_callback)
        saved = sys.stderr
        sys.stderr = io.StringIO()
        try:
            step(loop)
            text = sys.stderr.getvalue()
        finally:
            sys.stderr = saved
        self.assertIn("Traceback", text)
        self.assertIn("bad_callback", text)
        self.assertIn("ValueError: printed", text)
        loop.close()

    def test_stop_on_error_makes_run_raise(self):
        loop = nbio.Loop(stop_on_error=True)
        out = []

        def bad():
            raise KeyError("stop")

        loop.call_soon(bad)
        loop.call_later(30, out.append, "never")
        with self.assertRaises(KeyError):
            loop.run()
        self.assertEqual(out, [])
        loop.close()

    def test_keyboard_interrupt_always_stops(self):
        loop = nbio.Loop()

        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        loop.call_later(30, print)
        with self.assertRaises(KeyboardInterrupt):
            loop.run()
        loop.close()

    def test_sigint_stops_an_idle_run_at_once(self):
        # Nothing happens on the loop but a timer an hour away: ^C must not
        # wait for it. A watchdog stops the loop after 20 s otherwise (and
        # the KeyboardInterrupt would then come only after run() returned).
        loop = nbio.Loop()
        far = loop.call_later(3600, print)
        watchdog_fired = []

        def watchdog():
            watchdog_fired.append(True)
            loop.stop()

        dog = threading.Timer(20, watchdog)
        dog.start()
        kill = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        kill.start()
        try:
            with self.assertRaises(KeyboardInterrupt):
                loop.run()
        finally:
            # Joined, not only cancelled: a thread left running would take
            # the process-directed signals of later tests (test_signal_handler
            # relies on the loop's thread being the only one to block them).
            dog.cancel()
            dog.join()
            kill.join()
        self.assertEqual(watchdog_fired, [])
        # The wake-up fd is Python's again once run() returns.
        self.assertEqual(signal.set_wakeup_fd(-1), -1)
        # The loop's own pipe is not counted as a watched fd, and does not
        # keep run() going: with nothing else, run() returns.
        far.cancel()
        out = []
        loop.call_soon(lambda: out.append(loop.load()["waiting"]))
        loop.run()
        self.assertEqual(out, [0])
        loop.close()

    def test_a_wakeup_fd_set_by_the_user_is_left_alone(self):
        r, w = os.pipe()
        os.set_blocking(w, False)
        old = signal.set_wakeup_fd(w)
        try:
            loop = nbio.Loop()
            seen = []
            loop.call_soon(lambda: seen.append(signal.set_wakeup_fd(w)))
            loop.run()
            self.assertEqual(seen, [w], "run() replaced the user's fd")
            self.assertEqual(signal.set_wakeup_fd(w), w)
            loop.close()
        finally:
            signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)

    def test_run_off_the_main_thread_still_works(self):
        loop = nbio.Loop()
        out = []
        loop.call_later(0.01, out.append, "timer")
        t = threading.Thread(target=loop.run)
        t.start()
        t.join(20)
        self.assertFalse(t.is_alive())
        self.assertEqual(out, ["timer"])
        loop.close()

    def test_run_inside_a_callback_is_refused(self):
        loop = manual_loop()
        errors = []

        def nested():
            for call in (loop.run, loop.run_once, loop.close):
                try:
                    call()
                except RuntimeError as e:
                    errors.append(str(e))

        loop.call_soon(nested)
        step(loop)
        self.assertEqual(len(errors), 3, errors)
        loop.close()

    def test_signal_handler(self):
        loop = nbio.Loop()
        got = []

        def on_usr1(tag):
            got.append(tag)
            loop.remove_signal_handler(signal.SIGUSR1)

        loop.add_signal_handler(signal.SIGUSR1, on_usr1, "usr1")
        # To this thread, where the handler blocks the signal: a process-wide
        # kill() may go to any thread that does not block it, such as one an
        # earlier test has joined but the kernel has not yet reaped, and
        # SIGUSR1's default action ends the process ("install handlers
        # before starting other threads", says add_signal_handler).
        loop.call_soon(signal.pthread_kill, threading.get_ident(),
                       signal.SIGUSR1)
        loop.call_later(10, print, "never")
        loop.call_later(0.001, lambda: None)
        t = loop.call_every(0.01, lambda: got and loop.stop())
        loop.run()
        t.cancel()
        self.assertEqual(got, ["usr1"])
        self.assertFalse(loop.remove_signal_handler(signal.SIGUSR1))
        loop.close()


class Echo:
    def on_accept(self, conn):
        conn.start_reading()

    def on_data(self, conn, data):
        conn.write(data)


class Client:
    """Sends `payload`, collects the echo, closes when all is back."""

    def __init__(self, payload, done):
        self.payload = payload
        self.done = done

    def on_accept(self, conn):
        conn.received = bytearray()
        conn.handler = self  # a cycle: closed connections must not leak
        conn.start_reading()
        with_str = False
        try:
            conn.write("text")
        except TypeError:
            with_str = True
        assert with_str, "write(str) must raise TypeError"
        conn.write(self.payload)

    def on_data(self, conn, data):
        conn.received += data
        if len(conn.received) >= len(self.payload):
            conn.close()

    def on_closed(self, conn, reason):
        self.done(bytes(conn.received), reason)


class TcpTest(unittest.TestCase):

    def test_echo_round_trip_and_connection_api(self):
        loop = nbio.Loop()
        server = loop.listen_tcp("127.0.0.1:0", Echo())
        port = server.port
        self.assertGreater(port, 0)
        results = []
        fut = loop.connect_tcp(("127.0.0.1", server.port),
                               Client(memoryview(b"x" * 100000),  # any buffer
                                      lambda d, r: results.append((d, r))))
        conns = []
        fut.add_done_callback(lambda f: conns.append(f.result()))
        fut.add_done_callback(lambda f: conns.append(f.result().peer_address))
        loop.call_later(0.5, server.close)
        loop.run()
        self.assertEqual(results, [(b"x" * 100000, None)])
        self.assertEqual(conns[1], ("127.0.0.1", port))
        self.assertEqual(server.port, 0)  # closed
        conn = conns[0]
        self.assertTrue(conn.closed)
        self.assertFalse(conn.write(b"after close"))
        self.assertEqual(loop._resource_count, 0)
        loop.close()

    def test_echo_on_every_backend(self):
        # On io_uring the server's side of each connection is a direct
        # descriptor: no fileno, the same callbacks, and a peer address
        # asked through a descriptor made for the call.
        for backend in nbio.backends():
            with self.subTest(backend=backend):
                loop = nbio.Loop(backend=backend)
                peers = []

                class PeerEcho(Echo):
                    def on_accept(self, conn):
                        peers.append(conn.peer_address)
                        conn.start_reading()

                server = loop.listen_tcp("127.0.0.1:0", PeerEcho())
                results = []
                payload = bytes(range(256)) * 400
                loop.connect_tcp(("127.0.0.1", server.port),
                                 Client(payload,
                                        lambda d, r: results.append((d, r))))
                loop.call_later(0.5, server.close)
                loop.run()
                self.assertEqual(results, [(payload, None)])
                self.assertEqual(len(peers), 1)
                self.assertEqual(peers[0][0], "127.0.0.1")
                self.assertNotIn(peers[0][1], (0, server.port))
                self.assertEqual(loop._resource_count, 0)
                loop.close()

    def test_connect_refused_fails_the_future(self):
        loop = nbio.Loop()
        server = loop.listen_tcp("127.0.0.1:0", Echo())
        port = server.port
        server.close()
        fut = loop.connect_tcp(("127.0.0.1", port), Echo())
        loop.run()
        self.assertIsInstance(fut.exception(), ConnectionError)
        self.assertIn("refused", str(fut.exception()))
        loop.close()

    def test_cancelled_connect_never_completes(self):
        loop = nbio.Loop()
        server = loop.listen_tcp("127.0.0.1:0", Echo())
        accepted = []

        class Recorder(Echo):
            def on_accept(self, conn):
                accepted.append(conn)

        futures = [loop.connect_tcp(("127.0.0.1", server.port), Recorder())
                   for _ in range(2)]
        futures[0].cancel()  # before the loop ran at all
        loop.call_soon(futures[1].cancel)  # while the connect is in flight
        source = nbio.CancellationSource()
        futures.append(loop.connect_tcp(("127.0.0.1", server.port), Recorder(),
                                        token=source.token))
        source.cancel()
        loop.call_later(0.1, server.close)
        loop.run()
        self.assertTrue(all(f.cancelled() for f in futures))
        self.assertEqual(accepted, [])
        self.assertEqual(loop._resource_count, 0)
        loop.close()

    def test_idle_timeout_closes_silent_connections(self):
        loop = nbio.Loop()
        reasons = []

        class Quiet(Echo):
            def on_closed(self, conn, reason):
                reasons.append(reason)
                server.close()

        server = loop.listen_tcp("127.0.0.1:0", Quiet(), idle_timeout=0.1)

        class Silent:
            def on_accept(self, conn):
                conn.start_reading()

            def on_data(self, conn, data):
                pass

        started = time.monotonic()
        loop.connect_tcp(("127.0.0.1", server.port), Silent())
        loop.run()
        self.assertEqual(len(reasons), 1)
        self.assertIn("idle", reasons[0])
        self.assertGreaterEqual(time.monotonic() - started, 0.1)
        loop.close()

    def test_drain_lets_connections_finish(self):
        loop = nbio.Loop()
        server = loop.listen_tcp("127.0.0.1:0", Echo())
        results = []
        drained = []
        for i in range(20):
            loop.connect_tcp(("127.0.0.1", server.port),
                             Client(bytes([i]) * 5000, lambda d, r: results.append(d)))
        loop.call_later(0.05, server.drain, lambda: drained.append(True))
        loop.run()
        self.assertEqual(drained, [True])
        self.assertEqual(sorted(results), sorted(bytes([i]) * 5000 for i in range(20)))
        loop.close()

    def test_close_loop_with_open_connections(self):
        loop = nbio.Loop()
        closed = []

        class Recorder(Echo):
            def on_closed(self, conn, reason):
                closed.append(reason)

        server = loop.listen_tcp("127.0.0.1:0", Recorder())
        for _ in range(5):
            loop.connect_tcp(("127.0.0.1", server.port), Echo())
        loop.call_later(0.1, loop.stop)
        loop.run()
        self.assertEqual(server.connections, 5)
        loop.close()
        self.assertEqual(len(closed), 5)
        self.assertTrue(all(r and "CANCELLED" in r for r in closed), closed)
        self.assertIsNone(server.address)
        server.close()  # a no-op now

    def test_watermarks_pause_reading(self):
        loop = nbio.Loop()
        stats = []

        class Hoard:
            """Never reads: the server's output queue fills up."""

            def on_accept(self, conn):
                pass

            def on_data(self, conn, data):
                pass

        server = loop.listen_tcp("127.0.0.1:0", Echo(), high_watermark=64 * 1024)

        class Flood(Hoard):
            def on_accept(self, conn):
                for _ in range(200):
                    conn.write(b"z" * 65536)

        loop.connect_tcp(("127.0.0.1", server.port), Flood())

        started = time.monotonic()

        def check():
            # Until the server has paused reading (the client never reads,
            # so the echo queues up), or 20 s (slow sanitizer builds).
            st = server.stats()
            if st["read_pauses"] > 0 or time.monotonic() - started > 20:
                stats.append(st)
                loop.stop()

        loop.call_every(0.01, check)
        loop.run()
        self.assertGreater(stats[0]["read_pauses"], 0)
        self.assertLessEqual(stats[0]["queued_bytes"], 64 * 1024 + 65536)
        loop.close()

    def test_no_leak_after_10000_connections(self):
        loop = nbio.Loop()
        server = loop.listen_tcp("127.0.0.1:0", Echo())
        target = ("127.0.0.1", server.port)
        total = 10000
        batch = 100
        state = {"started": 0, "finished": 0, "bad": 0}
        marks = {}

        def finished(data, reason):
            state["finished"] += 1
            if data != b"ping" * 8 or reason is not None:
                state["bad"] += 1
            if state["finished"] == 1000:
                gc.collect()
                marks["early"] = tracemalloc.get_traced_memory()[0]
            if state["finished"] == total:
                server.close()
            elif state["finished"] % batch == 0:
                start_batch()

        def start_batch():
            for _ in range(batch):
                state["started"] += 1
                loop.connect_tcp(target, Client(b"ping" * 8, finished))

        tracemalloc.start()
        try:
            start_batch()
            loop.run()
            gc.collect()
            late = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertEqual(state["finished"], total)
        self.assertEqual(state["bad"], 0)
        live = [o for o in gc.get_objects() if type(o) is nbio.Connection]
        self.assertEqual(live, [])
        self.assertEqual(loop._resource_count, 0)
        # 9,000 connections after the first 1,000: bounded growth.
        self.assertLess(late - marks["early"], 256 * 1024,
                        (marks["early"], late))
        loop.close()


class DocTest(unittest.TestCase):

    def test_everything_public_has_a_docstring(self):
        missing = []
        for name in dir(nbio):
            if name.startswith("_"):
                continue
            obj = getattr(nbio, name)
            if not getattr(obj, "__doc__", None):
                missing.append(name)
            if isinstance(obj, type):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") or not callable(value) and not isinstance(value, property):
                        continue
                    if not getattr(value, "__doc__", None):
                        missing.append(name + "." + attr)
        self.assertEqual(missing, [])
        self.assertIn("nbio", nbio.__doc__)


if __name__ == "__main__":
    unittest.main()
