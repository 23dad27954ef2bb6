# The Python half of the nbio module: futures, promises, cancellation, and
# the helpers built on them (sleep, with_timeout, when_all, when_any,
# run_cpu_job, connect_tcp).
#
# This file is not imported on its own: the extension module (nbio.cc)
# executes it in its own namespace when it is imported, after the C++ types
# (Loop, Connection, Server...) exist. Plain Python classes get the cyclic
# garbage collector for free, so a future whose callback refers back to it
# is collected like any other cycle.
#
# Everything here runs on the loop's thread (inside callbacks, or before
# run()); the only cross-thread entry points are Loop.call_soon_threadsafe
# and Loop.stop.


class CancelledError(Exception):
    """The future was cancelled (Future.cancel, a CancellationToken)."""


class InvalidStateError(Exception):
    """The future is not in the state the call needs (result() of a pending
    future, set_result() of a finished one)."""


_PENDING = "pending"
_DONE = "done"
_CANCELLED = "cancelled"


class Future:
    """The result of an operation that finishes later, on one loop.

    A future is pending, then done (with a result or an exception) or
    cancelled, once. Callbacks added with add_done_callback() run on the
    loop, never inline: after the code that finished the future has
    returned, before the loop polls again (the loop's urgent queue, as
    C++ future continuations). So a future and a callback interoperate
    both ways:

        fut = loop.sleep(0.5)
        fut.add_done_callback(lambda f: print("slept", f.result()))

        promise = nbio.Promise(loop)          # callback -> future
        loop.call_later(1.0, promise.set_result, "late")
        promise.future.add_done_callback(...)

    Loop thread only. Created by the loop's helpers or by Promise.
    """

    def __init__(self, loop):
        self._loop = loop
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._callbacks = []
        # Called (once, no arguments) when the future is cancelled: stops
        # whatever would have finished it (a timer, a CPU job).
        self._on_cancel = None

    def __repr__(self):
        if self._state == _DONE:
            what = ("exception=%r" % (self._exception,) if self._exception
                    is not None else "result=%r" % (self._result,))
            return "<nbio.Future done %s>" % what
        return "<nbio.Future %s>" % self._state

    @property
    def loop(self):
        """The Loop this future belongs to."""
        return self._loop

    def done(self):
        """True once the future has a result or an exception, or was
        cancelled."""
        return self._state != _PENDING

    def cancelled(self):
        """True if the future was cancelled."""
        return self._state == _CANCELLED

    def result(self):
        """The result. Raises the future's exception if it failed,
        CancelledError if it was cancelled, InvalidStateError if it is
        still pending (this never blocks: run the loop, or use a
        callback)."""
        if self._state == _PENDING:
            raise InvalidStateError("result() of a pending future")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self):
        """The exception the future failed with, or None if it succeeded.
        Raises CancelledError if it was cancelled, InvalidStateError if it
        is still pending."""
        if self._state == _PENDING:
            raise InvalidStateError("exception() of a pending future")
        if self._state == _CANCELLED:
            raise self._exception
        return self._exception

    def add_done_callback(self, fn):
        """Calls fn(future) on the loop once the future is done (at once,
        on the loop's urgent queue, if it already is). An exception fn
        raises goes to the loop's exception handler."""
        if self._state == _PENDING:
            self._callbacks.append(fn)
        else:
            self._loop._call_urgent(fn, self)

    def remove_done_callback(self, fn):
        """Removes every registration of fn; returns how many there were."""
        before = len(self._callbacks)
        self._callbacks = [cb for cb in self._callbacks if cb != fn]
        return before - len(self._callbacks)

    def cancel(self, msg=None):
        """Cancels the future if it is pending: stops the operation behind
        it and fails it with CancelledError. Returns False if it had
        already finished."""
        if self._state != _PENDING:
            return False
        self._state = _CANCELLED
        self._exception = CancelledError(msg or "cancelled")
        hook, self._on_cancel = self._on_cancel, None
        if hook is not None:
            hook()
        self._schedule_callbacks()
        return True

    def set_result(self, result):
        """Finishes the future with `result`. Raises InvalidStateError if
        it has finished already (Promise.set_result does not)."""
        if self._state != _PENDING:
            raise InvalidStateError("set_result() of a finished future")
        self._result = result
        self._finish()

    def set_exception(self, exception):
        """Fails the future with `exception` (an instance or a class).
        Raises InvalidStateError if it has finished already."""
        if self._state != _PENDING:
            raise InvalidStateError("set_exception() of a finished future")
        if isinstance(exception, type):
            exception = exception()
        if not isinstance(exception, BaseException):
            raise TypeError("set_exception() needs an exception")
        self._exception = exception
        self._finish()

    def then(self, fn):
        """A new future with fn(self)'s return value (or its exception),
        once this one is done. If fn returns a Future, the new future
        follows it."""
        out = Future(self._loop)

        def run(f):
            if out.done():
                return
            try:
                value = fn(f)
            except BaseException as e:  # reported through the future
                out.set_exception(e)
                return
            if isinstance(value, Future):
                _chain(value, out)
            else:
                out.set_result(value)

        self.add_done_callback(run)
        out._on_cancel = self.cancel
        return out

    def _finish(self):
        self._state = _DONE
        self._on_cancel = None
        self._schedule_callbacks()

    def _schedule_callbacks(self):
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._loop._call_urgent(fn, self)


def _chain(source, target):
    """Copies source's outcome into target once source is done."""

    def copy(f):
        if target.done():
            return
        if f.cancelled():
            target.cancel()
        elif f._exception is not None:
            target.set_exception(f._exception)
        else:
            target.set_result(f._result)

    source.add_done_callback(copy)


class Promise:
    """The writing end of a Future: turns a callback into a future.

        promise = nbio.Promise(loop)
        some_api(on_done=promise.set_result)
        return promise.future

    set_result / set_exception return False (and do nothing) when the
    future has already finished, e.g. because it was cancelled. Loop
    thread only; from another thread, go through
    loop.call_soon_threadsafe(promise.set_result, value).
    """

    def __init__(self, loop):
        self.future = Future(loop)

    def __repr__(self):
        return "<nbio.Promise %r>" % (self.future,)

    def set_result(self, result=None):
        """Finishes the future with `result`; False if it had finished."""
        if self.future.done():
            return False
        self.future.set_result(result)
        return True

    def set_exception(self, exception):
        """Fails the future with `exception`; False if it had finished."""
        if self.future.done():
            return False
        self.future.set_exception(exception)
        return True

    def done(self):
        """True once the future has finished (set, failed or cancelled)."""
        return self.future.done()


class CancellationRegistration:
    """What CancellationToken.register returns: unregister() removes the
    callback (a no-op once it has run)."""

    def __init__(self, source, key):
        self._source = source
        self._key = key

    def unregister(self):
        """Removes the callback; returns False if it was not registered
        (it ran already, or was removed)."""
        if self._source is None:
            return False
        found = self._source._callbacks.pop(self._key, None) is not None
        self._source = None
        return found


class CancellationToken:
    """The receiving end of a CancellationSource, handed to operations
    (sleep, with_timeout, run_cpu_job, connect_tcp) so that one cancel()
    stops all of them."""

    def __init__(self, source):
        self._source = source

    @property
    def cancelled(self):
        """True once the source has been cancelled."""
        return self._source._cancelled

    @property
    def reason(self):
        """The reason given to cancel(), or None."""
        return self._source._reason

    def register(self, fn):
        """Calls fn(reason) when the source is cancelled (at once if it is
        already). Returns a CancellationRegistration."""
        source = self._source
        if source._cancelled:
            fn(source._reason)
            return CancellationRegistration(None, None)
        key = source._next_key
        source._next_key += 1
        source._callbacks[key] = fn
        return CancellationRegistration(source, key)


class CancellationSource:
    """Cancels a group of operations at once.

        source = nbio.CancellationSource()
        a = loop.sleep(10, token=source.token)
        b = loop.run_cpu_job(work, token=source.token)
        source.cancel("shutting down")   # both fail with CancelledError

    Callbacks registered on the token run inside cancel(), in order.
    Loop thread only.
    """

    def __init__(self):
        self._cancelled = False
        self._reason = None
        self._callbacks = {}
        self._next_key = 0
        self.token = CancellationToken(self)

    @property
    def cancelled(self):
        """True once cancel() has been called."""
        return self._cancelled

    def cancel(self, reason="cancelled"):
        """Cancels the token and runs its callbacks. False if it already
        was."""
        if self._cancelled:
            return False
        self._cancelled = True
        self._reason = reason
        callbacks, self._callbacks = list(self._callbacks.values()), {}
        for fn in callbacks:
            fn(reason)
        return True


def _bind_token(future, token):
    """Cancels `future` when `token` is cancelled, and forgets the token
    once the future is done."""
    if token is None:
        return
    registration = token.register(lambda reason: future.cancel(reason))
    if future.done():
        registration.unregister()
    else:
        future.add_done_callback(lambda f: registration.unregister())


def _loop_sleep(self, delay, result=None, token=None):
    """A Future that finishes with `result` after `delay` seconds (never
    earlier, on the loop's clock). Cancelling it stops the timer; so does
    cancelling `token`."""
    future = Future(self)

    def fire():
        if not future.done():
            future.set_result(result)

    timer = self.call_later(delay, fire)
    future._on_cancel = timer.cancel
    _bind_token(future, token)
    return future


def with_timeout(future, delay, token=None):
    """A Future that follows `future`, or fails with TimeoutError (and
    cancels `future`) if it has not finished within `delay` seconds.
    Cancelling the returned future cancels `future` too."""
    loop = future.loop
    out = Future(loop)

    def expire():
        if not out.done():
            out.set_exception(TimeoutError(
                "timed out after %g s" % delay))
            future.cancel("timed out")

    timer = loop.call_later(delay, expire)

    def finished(f):
        timer.cancel()
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f._exception is not None:
            out.set_exception(f._exception)
        else:
            out.set_result(f._result)

    future.add_done_callback(finished)

    def cancel_both():
        timer.cancel()
        future.cancel()

    out._on_cancel = cancel_both
    _bind_token(out, token)
    return out


def _loop_with_timeout(self, future, delay, token=None):
    """with_timeout(future, delay): see nbio.with_timeout."""
    return with_timeout(future, delay, token)


def when_all(futures, loop=None):
    """A Future of the list of results of `futures`, in their order, once
    all have succeeded; it fails with the first exception (or
    cancellation) among them, without waiting for the others. An empty
    list needs `loop`."""
    futures = list(futures)
    if loop is None:
        if not futures:
            raise ValueError("when_all([]) needs loop=")
        loop = futures[0].loop
    out = Future(loop)
    results = [None] * len(futures)
    left = [len(futures)]
    if not futures:
        out.set_result([])
        return out

    def make_callback(i):
        def on_done(f):
            if out.done():
                return
            if f.cancelled():
                out.set_exception(CancelledError("when_all: input %d was "
                                                 "cancelled" % i))
            elif f._exception is not None:
                out.set_exception(f._exception)
            else:
                results[i] = f._result
                left[0] -= 1
                if left[0] == 0:
                    out.set_result(results)
        return on_done

    for i, f in enumerate(futures):
        f.add_done_callback(make_callback(i))
    return out


def when_any(futures):
    """A Future of (index, future) for the first of `futures` to finish
    (successfully or not). The others are left running."""
    futures = list(futures)
    if not futures:
        raise ValueError("when_any() of no futures")
    out = Future(futures[0].loop)

    def make_callback(i):
        def on_done(f):
            if not out.done():
                out.set_result((i, f))
        return on_done

    for i, f in enumerate(futures):
        f.add_done_callback(make_callback(i))
    return out


def _loop_run_cpu_job(self, fn, token=None):
    """Runs fn() repeatedly as a CPU job, one call per slice, round-robin
    with the loop's other jobs and inside its CPU budget, so computation
    shares the thread with I/O: fn returns True while it has more to do.
    Returns a Future of None once fn returns a false value, or of the
    exception it raised. Cancelling the future (or `token`) stops the job
    before its next slice. Keep each call short (tens of microseconds to a
    millisecond): the loop cannot interrupt it."""
    future = Future(self)

    def done(exception):
        if future.done():
            return
        if exception is None:
            future.set_result(None)
        else:
            future.set_exception(exception)

    job = self._start_cpu_job(fn, done)
    future._on_cancel = job.cancel
    _bind_token(future, token)
    return future


def _loop_connect_tcp(self, address, handler, token=None, **options):
    """Connects to `address` ("host:port" with a numeric host, or
    (host, port)) and serves the connection with `handler`, as
    listen_tcp() does: handler.on_accept(conn) runs first, then the
    returned Future finishes with the Connection. It fails with
    ConnectionError (refused, unreachable...) or CancelledError if
    `token` is cancelled first. Options: as listen_tcp's TCP options."""
    future = Future(self)

    def done(conn, error):
        if future.done():
            if conn is not None:
                conn.close()
            return
        if conn is not None:
            future.set_result(conn)
        else:
            future.set_exception(ConnectionError(error))

    attempt = self._connect_tcp(address, handler, done, **options)
    future._on_cancel = attempt.cancel
    _bind_token(future, token)
    return future


def _loop_create_future(self):
    """A new pending Future on this loop."""
    return Future(self)


def _loop_run_until_complete(self, future):
    """Runs the loop until `future` is done, then returns its result (or
    raises its exception). RuntimeError if the loop ran out of work or was
    stopped first."""
    future.add_done_callback(lambda f: self.stop())
    self.run()
    if not future.done():
        raise RuntimeError("the loop stopped before the future was done")
    return future.result()


def _loop_enter(self):
    """`with nbio.Loop() as loop:` closes the loop at the end of the block."""
    return self


def _loop_exit(self, *exc_info):
    """Closes the loop (see close())."""
    self.close()


Loop.__enter__ = _loop_enter
Loop.__exit__ = _loop_exit
Loop.sleep = _loop_sleep
Loop.with_timeout = _loop_with_timeout
Loop.run_cpu_job = _loop_run_cpu_job
Loop.connect_tcp = _loop_connect_tcp
Loop.create_future = _loop_create_future
Loop.run_until_complete = _loop_run_until_complete
for _name in ("sleep", "with_timeout", "run_cpu_job", "connect_tcp",
              "create_future", "run_until_complete"):
    getattr(Loop, _name).__name__ = _name
    getattr(Loop, _name).__qualname__ = "Loop." + _name
del _name
