// The `nbio` Python extension module: nbio's event loop, timers, signals,
// CPU jobs and TCP for Python code, with futures (nbio_py.py, executed into
// this module when it is imported).
//
// The GIL: Loop.run() and Loop.run_once() release it for the whole of the
// C++ iteration, and every callback into Python takes it back for the time
// of the call (pybind11's gil_scoped_acquire). So the loop never holds the
// GIL while it waits in the kernel, other Python threads run meanwhile
// (call_soon_threadsafe, stop), and Python code always runs with it.
//
// Lifetimes: every C++ handle the module creates (Timer, CpuJob, TcpServer,
// TcpContext) lives in a Resource owned by the Loop, so Loop.close() (and the
// Loop's deallocation) destroys all of them before the C++ EventLoop goes.
// Python handle objects hold a reference to their Loop and become no-ops once
// it is closed. Nothing is destroyed inside its own callback: a resource that
// finishes (a one-shot timer fires, a job ends, a server is closed from a
// connection's callback) is retired to a graveyard that a posted task empties
// outside every callback.
//
// References to Python objects held by C++ (callbacks, connection objects)
// are `Ref`s, released with the GIL taken, wherever the C++ side destroys
// them (including queued tasks destroyed with the loop).
//
// Threading: a Loop belongs to one thread, like the C++ EventLoop; stop() and
// call_soon_threadsafe() may be called from any thread.
#include <Python.h>
#include <pybind11/eval.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "reactor/async/cancellation.h"
#include "reactor/event_loop.h"
#include "reactor/net/tcp_connection.h"
#include "reactor/net/tcp_server.h"
#include "reactor/poller/poller_registry.h"
#include "reactor/sys/socket_address.h"
#include "timers/clock.h"

namespace py = pybind11;

namespace nbio {
namespace python {
namespace {

// The Python half of the module (nbio_py.py), as a string literal.
constexpr char kPythonSource[] =
#include "reactor/python/nbio_py.inc"
    ;

// A strong reference to a Python object that C++ code holds, released with
// the GIL taken (the holder may be destroyed by the C++ loop without it).
class Ref {
 public:
  Ref() = default;
  explicit Ref(py::object o) : p_(o.release().ptr()) {}
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(Ref&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  ~Ref() { reset(); }

  void reset() {
    if (p_ != nullptr) {
      py::gil_scoped_acquire gil;
      Py_CLEAR(p_);
    }
  }
  PyObject* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

absl::Duration SecondsToDuration(double seconds) {
  if (!(seconds > 0)) return absl::ZeroDuration();  // NaN and negatives too
  return absl::Seconds(seconds);
}

class PyLoop;

// A C++ handle made for Python code, owned by its PyLoop. Close() destroys
// the handle and drops the Python references; it runs with the GIL held and
// never inside the handle's own callback.
class Resource {
 public:
  explicit Resource(PyLoop* loop) : loop_(loop) {}
  virtual ~Resource() = default;
  virtual void Close() = 0;

  PyLoop* loop() const { return loop_; }
  // Still registered with its loop: not finished, cancelled or closed.
  bool is_open() const { return open_; }

 protected:
  friend class PyLoop;
  PyLoop* const loop_;
  bool open_ = true;
};

// The C++ half of nbio.Loop.
class PyLoop {
 public:
  PyLoop(const std::string& backend, bool manual_clock, bool stop_on_error,
         double cpu_budget)
      : stop_on_error_(stop_on_error) {
    EventLoop::Options options;
    options.backend = backend;
    if (manual_clock) {
      manual_clock_ = std::make_unique<ManualClock>();
      options.clock = manual_clock_.get();
    }
    if (cpu_budget > 0) options.cpu_budget = absl::Seconds(cpu_budget);
    absl::StatusOr<std::unique_ptr<EventLoop>> loop =
        EventLoop::Create(options);
    if (!loop.ok()) throw py::value_error(std::string(loop.status().message()));
    loop_ = std::move(*loop);
  }

  ~PyLoop() { Close(); }

  EventLoop* loop() const { return loop_.get(); }
  bool closed() const { return loop_ == nullptr; }
  bool running() const { return running_; }

  void CheckOpen() const {
    if (loop_ == nullptr) throw std::runtime_error("the loop is closed");
  }
  // For calls that are for the loop's thread only.
  void CheckLoopThread(const char* what) const {
    CheckOpen();
    if (!loop_->IsInLoopThread()) {
      throw std::runtime_error(
          absl::StrCat(what,
                       " called from a thread that is not the loop's: use "
                       "call_soon_threadsafe()"));
    }
  }

  // run() and run_once(): refused inside a callback (the C++ loop would
  // fail a check) and from a second thread while it runs.
  void Run() {
    BeginRun("run()");
    absl::Status status;
    {
      py::gil_scoped_release release;
      status = loop_->Run();
    }
    EndRun(status);
  }

  void RunOnce(std::optional<bool> wait) {
    BeginRun("run_once()");
    const bool block = wait.value_or(manual_clock_ == nullptr);
    absl::Status status;
    {
      py::gil_scoped_release release;
      status = loop_->RunOnce(block ? EventLoop::RunMode::kWait
                                    : EventLoop::RunMode::kNoWait);
    }
    EndRun(status);
  }

  // Whether run() has Python's signal wake-up fd now (tests).
  bool watching_python_signals() const { return signal_wakeup_installed_; }

  void Stop() {
    // From any thread, so only what Stop() itself allows.
    if (loop_ != nullptr) loop_->Stop();
  }

  // Destroys every handle, then the C++ loop. Refused while running (a
  // callback cannot destroy the loop that is running it).
  void Close() {
    if (loop_ == nullptr) return;
    if (running_) {
      throw std::runtime_error(
          "close() called while the loop is running: stop() it and close "
          "it after run() returns");
    }
    closing_ = true;
    // Closing a server runs its connections' on_closed, which may create
    // more handles: take them one at a time until none is left.
    while (!resources_.empty() || !graveyard_.empty()) {
      if (!resources_.empty()) {
        auto it = resources_.begin();
        std::shared_ptr<Resource> r = std::move(it->second);
        resources_.erase(it);
        r->open_ = false;
        r->Close();
        continue;
      }
      std::vector<std::shared_ptr<Resource>> dead = std::move(graveyard_);
      graveyard_.clear();
      for (auto& r : dead) r->Close();
    }
    for (auto& [signo, handler] : signal_handlers_) loop_->RemoveSignal(signo);
    signal_handlers_.clear();
    exception_handler_ = py::object();
    signal_wakeup_.reset();
    set_wakeup_fd_ = py::object();
    if (wakeup_read_ >= 0) close(wakeup_read_);
    if (wakeup_write_ >= 0) close(wakeup_write_);
    wakeup_read_ = wakeup_write_ = -1;
    loop_.reset();  // queued tasks go with it; their Refs take the GIL
    manual_clock_.reset();
    closing_ = false;
  }

  double Time() const {
    CheckOpen();
    return static_cast<double>(loop_->NowNanos()) / 1e9;
  }

  void Advance(double seconds) {
    CheckOpen();
    if (manual_clock_ == nullptr) {
      throw std::runtime_error("advance() needs Loop(manual_clock=True)");
    }
    if (seconds < 0) throw py::value_error("advance() by a negative time");
    manual_clock_->Advance(absl::Seconds(seconds));
  }

  // Registers `r` (the loop owns it from now on).
  template <typename R>
  std::shared_ptr<R> Register(std::shared_ptr<R> r) {
    resources_[r.get()] = r;
    return r;
  }

  // `r` is finished: it is closed now when nothing can be running its
  // callback, or else (inside run()) at the start of a later iteration.
  void Discard(Resource* r) {
    auto it = resources_.find(r);
    if (it == resources_.end()) return;
    std::shared_ptr<Resource> owned = std::move(it->second);
    resources_.erase(it);
    owned->open_ = false;
    if (!running_ || closing_) {
      owned->Close();
      return;
    }
    graveyard_.push_back(std::move(owned));
    if (!flush_posted_) {
      flush_posted_ = true;
      loop_->Post([this] {
        py::gil_scoped_acquire gil;
        flush_posted_ = false;
        std::vector<std::shared_ptr<Resource>> dead = std::move(graveyard_);
        graveyard_.clear();
        for (auto& d : dead) d->Close();
      });
    }
  }

  // Calls fn(*args) (GIL held); an exception goes to ReportError.
  // Returns the result, or nullptr when it raised.
  PyObject* Call(PyObject* fn, PyObject* const* args, size_t nargs,
                 const char* where) {
    if (PyErr_CheckSignals() != 0) ReportError("a signal handler");
    PyObject* result = PyObject_Vectorcall(fn, args, nargs, nullptr);
    if (result == nullptr) ReportError(where);
    return result;
  }
  void CallAndForget(PyObject* fn, PyObject* const* args, size_t nargs,
                     const char* where) {
    Py_XDECREF(Call(fn, args, nargs, where));
  }
  // fn(*args) where args is a tuple.
  void CallWithTuple(PyObject* fn, PyObject* args, const char* where) {
    if (PyErr_CheckSignals() != 0) ReportError("a signal handler");
    PyObject* result = PyObject_Call(fn, args, nullptr);
    if (result == nullptr) ReportError(where);
    Py_XDECREF(result);
  }

  // The Python error set now, raised by a callback: to the exception
  // handler (or sys.excepthook), or, for stop_on_error and for exceptions
  // that are not Exceptions (KeyboardInterrupt, SystemExit), kept to be
  // raised by run() after the loop stops.
  void ReportError(const char* where) {
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    if (type == nullptr) return;
    PyErr_NormalizeException(&type, &value, &trace);
    if (trace != nullptr) PyException_SetTraceback(value, trace);
    py::object t = py::reinterpret_steal<py::object>(type);
    py::object v = py::reinterpret_steal<py::object>(value);
    py::object tb = trace != nullptr ? py::reinterpret_steal<py::object>(trace)
                                     : py::none();
    const bool fatal = stop_on_error_ ||
                       !PyErr_GivenExceptionMatches(t.ptr(), PyExc_Exception);
    if (fatal) {
      if (!pending_type_) {
        pending_type_ = t;
        pending_value_ = v;
        pending_trace_ = tb;
      }
      if (loop_ != nullptr) loop_->Stop();
      return;
    }
    if (exception_handler_) {
      py::dict context;
      context["message"] = py::str(absl::StrCat("exception in ", where));
      context["exception"] = v;
      PyObject* arg = context.ptr();
      PyObject* r =
          PyObject_Vectorcall(exception_handler_.ptr(), &arg, 1, nullptr);
      if (r == nullptr) PyErr_WriteUnraisable(exception_handler_.ptr());
      Py_XDECREF(r);
      return;
    }
    PySys_WriteStderr("nbio: exception in %s\n", where);
    PyObject* hook = PySys_GetObject("excepthook");  // borrowed
    if (hook != nullptr) {
      PyObject* args[3] = {t.ptr(), v.ptr(), tb.ptr()};
      PyObject* r = PyObject_Vectorcall(hook, args, 3, nullptr);
      if (r == nullptr) PyErr_Clear();
      Py_XDECREF(r);
    } else {
      PyErr_Restore(t.release().ptr(), v.release().ptr(), tb.release().ptr());
      PyErr_Print();
    }
  }

  void SetExceptionHandler(py::object handler) {
    exception_handler_ = handler.is_none() ? py::object() : handler;
  }

  // Loop.call_soon / call_soon_threadsafe.
  struct CallState {
    Ref fn;
    Ref args;
    bool cancelled = false;
  };
  void PostCall(std::shared_ptr<CallState> state) {
    loop_->Post([this, state = std::move(state)] {
      // Under the GIL: a Handle may be cancelled from another thread.
      py::gil_scoped_acquire gil;
      PyObject* fn = state->fn.get();
      if (state->cancelled || fn == nullptr) return;
      CallWithTuple(fn, state->args.get(), "a call_soon() callback");
      state->cancelled = true;
      state->fn.reset();
      state->args.reset();
    });
  }

  // Future callbacks: before the next poll, never inline.
  void CallUrgent(py::object fn, py::object arg) {
    CheckLoopThread("a future callback");
    loop_->PostUrgent(
        [this, fn = Ref(std::move(fn)), arg = Ref(std::move(arg))] {
          py::gil_scoped_acquire gil;
          PyObject* a = arg.get();
          CallAndForget(fn.get(), &a, 1, "a future's done callback");
        });
  }

  void AddSignalHandler(int signo, py::object fn, py::tuple args) {
    CheckLoopThread("add_signal_handler()");
    auto& entry = signal_handlers_[signo];
    entry.fn = Ref(std::move(fn));
    entry.args = Ref(std::move(args));
    absl::Status status = loop_->OnSignal(signo, [this](int s) {
      py::gil_scoped_acquire gil;
      auto it = signal_handlers_.find(s);
      if (it == signal_handlers_.end()) return;
      // Keep them alive across the call: the handler may remove itself.
      py::object fn = py::reinterpret_borrow<py::object>(it->second.fn.get());
      py::object args =
          py::reinterpret_borrow<py::object>(it->second.args.get());
      CallWithTuple(fn.ptr(), args.ptr(), "a signal handler");
    });
    if (!status.ok()) {
      signal_handlers_.erase(signo);
      throw std::runtime_error(status.ToString());
    }
  }

  bool RemoveSignalHandler(int signo) {
    CheckLoopThread("remove_signal_handler()");
    auto it = signal_handlers_.find(signo);
    if (it == signal_handlers_.end()) return false;
    loop_->RemoveSignal(signo);
    signal_handlers_.erase(it);
    return true;
  }

  size_t resource_count() const { return resources_.size(); }

 private:
  void BeginRun(const char* what) {
    CheckOpen();
    if (running_) {
      throw std::runtime_error(absl::StrCat(
          what,
          " called while the loop is already running (from inside a "
          "callback, or from another thread)"));
    }
    if (!loop_->IsInLoopThread() && ran_once_) {
      // The C++ loop moves to the thread that runs it; allow that, but
      // only while nothing runs it elsewhere (checked above).
    }
    running_ = true;
    ran_once_ = true;
    InstallSignalWakeup();
  }

  void EndRun(const absl::Status& status) {
    running_ = false;
    RemoveSignalWakeup();
    if (pending_type_) {
      py::object t = std::move(pending_type_);
      py::object v = std::move(pending_value_);
      py::object tb = std::move(pending_trace_);
      PyErr_Restore(t.release().ptr(), v.release().ptr(),
                    tb.is_none() ? nullptr : tb.release().ptr());
      throw py::error_already_set();
    }
    if (!status.ok()) throw std::runtime_error(status.ToString());
  }

  struct SignalHandler {
    Ref fn;
    Ref args;
  };

  // ^C while the loop waits in the kernel. Python's own handler for a
  // signal (SIGINT's raises KeyboardInterrupt) runs only when the thread
  // holding the GIL checks for it, which an idle loop would not do before
  // its next timer or I/O. So, for the time of run() on the main thread,
  // the loop watches a pipe given to signal.set_wakeup_fd(): the C-level
  // handler writes a byte, the loop wakes, and PyErr_CheckSignals() runs
  // the Python handler at once (a KeyboardInterrupt then stops run(), as
  // from any callback). The watcher does not keep run() going. Left alone
  // when another wake-up fd is set (asyncio's, the user's), and off the main
  // thread (where Python allows no wake-up fd).
  void InstallSignalWakeup() {
    if (wakeup_read_ < 0) {
      int fds[2];
      if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return;  // ^C as before
      wakeup_read_ = fds[0];
      wakeup_write_ = fds[1];
      signal_wakeup_ = std::make_unique<FdWatcher>(
          loop_.get(), wakeup_read_, [this](uint32_t) { OnSignalWakeup(); });
      signal_wakeup_->set_keeps_loop_alive(false);
    }
    if (!set_wakeup_fd_) {
      set_wakeup_fd_ = py::module_::import("signal").attr("set_wakeup_fd");
    }
    py::object& set_wakeup_fd = set_wakeup_fd_;
    int previous;
    try {
      previous = set_wakeup_fd(wakeup_write_, py::arg("warn_on_full_buffer") =
                                                  false)
                     .cast<int>();
    } catch (py::error_already_set&) {
      return;  // ValueError: not the main thread
    }
    if (previous != -1) {
      set_wakeup_fd(previous);  // someone else's: theirs to watch
      return;
    }
    DrainSignalWakeup();
    if (signal_wakeup_->SetInterest(kReadable).ok()) {
      signal_wakeup_installed_ = true;
    } else {
      set_wakeup_fd(-1);
    }
  }

  void RemoveSignalWakeup() {
    if (!signal_wakeup_installed_) return;
    signal_wakeup_installed_ = false;
    signal_wakeup_->Stop();
    set_wakeup_fd_(-1);
  }

  void DrainSignalWakeup() {
    char buf[64];
    while (read(wakeup_read_, buf, sizeof(buf)) > 0) {
    }
  }

  void OnSignalWakeup() {
    DrainSignalWakeup();
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) ReportError("a signal handler");
  }

  std::unique_ptr<ManualClock> manual_clock_;
  std::unique_ptr<EventLoop> loop_;
  const bool stop_on_error_;
  bool running_ = false;
  bool ran_once_ = false;
  bool closing_ = false;
  bool flush_posted_ = false;
  absl::flat_hash_map<Resource*, std::shared_ptr<Resource>> resources_;
  std::vector<std::shared_ptr<Resource>> graveyard_;
  absl::flat_hash_map<int, SignalHandler> signal_handlers_;
  py::object exception_handler_;
  py::object pending_type_, pending_value_, pending_trace_;
  // Python's signal wake-up fd while run() runs (InstallSignalWakeup).
  int wakeup_read_ = -1, wakeup_write_ = -1;
  std::unique_ptr<FdWatcher> signal_wakeup_;
  bool signal_wakeup_installed_ = false;
  py::object set_wakeup_fd_;  // signal.set_wakeup_fd
};

// ---------------------------------------------------------------------------
// Handles returned to Python. Each keeps its Loop alive (loop_ref).

struct PyHandle {
  py::object loop_ref;
  std::shared_ptr<PyLoop::CallState> state;

  void Cancel() {
    state->cancelled = true;
    state->fn.reset();
    state->args.reset();
  }
};

class TimerState : public Resource {
 public:
  TimerState(PyLoop* loop, py::object fn, py::tuple args, double period)
      : Resource(loop),
        fn_(std::move(fn)),
        args_(std::move(args)),
        periodic_(period > 0),
        timer_(std::make_unique<Timer>(loop->loop(), [this] { Fire(); })) {}

  void Close() override {
    timer_.reset();
    fn_.reset();
    args_.reset();
  }

  Timer* timer() const { return timer_.get(); }

  void Cancel() {
    if (!is_open()) return;
    if (timer_) timer_->Cancel();
    loop_->Discard(this);
  }

 private:
  void Fire() {
    py::gil_scoped_acquire gil;
    // A one-shot timer is finished once it fires (to the graveyard: this
    // is its own callback). The references stay until then.
    py::object fn = py::reinterpret_borrow<py::object>(fn_.get());
    py::object args = py::reinterpret_borrow<py::object>(args_.get());
    if (!periodic_) loop_->Discard(this);
    loop_->CallWithTuple(fn.ptr(), args.ptr(), "a timer callback");
  }

  Ref fn_;
  Ref args_;
  const bool periodic_;
  std::unique_ptr<Timer> timer_;
};

struct PyTimerHandle {
  py::object loop_ref;
  std::shared_ptr<TimerState> state;
  double when = 0;

  void Cancel() { state->Cancel(); }
  bool pending() const {
    return state->is_open() && state->timer() != nullptr &&
           state->timer()->is_pending();
  }
};

class CpuJobState : public Resource {
 public:
  CpuJobState(PyLoop* loop, py::object fn, py::object on_done)
      : Resource(loop),
        fn_(std::move(fn)),
        on_done_(std::move(on_done)),
        job_(std::make_unique<CpuJob>(loop->loop(),
                                      [this] { return Slice(); })) {}

  void Close() override {
    job_.reset();
    fn_.reset();
    on_done_.reset();
  }
  void Start() { job_->Start(); }
  void Cancel() {
    if (!is_open()) return;
    if (job_) job_->Stop();
    loop_->Discard(this);
  }

 private:
  CpuSliceResult Slice() {
    py::gil_scoped_acquire gil;
    if (!is_open()) return CpuSliceResult::kDone;
    PyObject* r = PyObject_CallNoArgs(fn_.get());
    if (r != nullptr) {
      const int more = PyObject_IsTrue(r);
      Py_DECREF(r);
      if (more == 1) return CpuSliceResult::kMore;
      if (more == 0) {
        Finish(py::none());
        return CpuSliceResult::kDone;
      }
    }
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    if (trace != nullptr) PyException_SetTraceback(value, trace);
    Py_XDECREF(type);
    Py_XDECREF(trace);
    py::object exc = py::reinterpret_steal<py::object>(value);
    if (!PyErr_GivenExceptionMatches(exc.ptr(), PyExc_Exception)) {
      // KeyboardInterrupt and friends stop the loop, as from any callback.
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())),
                      exc.ptr());
      loop_->ReportError("a CPU job");
    }
    Finish(exc);
    return CpuSliceResult::kDone;
  }

  void Finish(py::object exception) {
    py::object on_done = py::reinterpret_borrow<py::object>(on_done_.get());
    loop_->Discard(this);  // its own slice: closed later
    PyObject* arg = exception.ptr();
    loop_->CallAndForget(on_done.ptr(), &arg, 1, "a CPU job's completion");
  }

  Ref fn_;
  Ref on_done_;
  std::unique_ptr<CpuJob> job_;
};

struct PyCpuJobHandle {
  py::object loop_ref;
  std::shared_ptr<CpuJobState> state;
  void Cancel() { state->Cancel(); }
};

// ---------------------------------------------------------------------------
// TCP.

// nbio.Connection: what handlers receive. Valid (open) from on_accept until
// on_closed has returned; then every method is a no-op. C++ holds a strong
// reference to it only while the connection is open (user_data), so a cycle
// between a connection and its user's objects is the garbage collector's
// ordinary business once it is closed (and its attributes live in its
// __dict__, which the collector traverses).
struct PyConnection {
  TcpConnection* conn = nullptr;

  bool Write(py::handle data) {
    if (conn == nullptr) return false;
    if (PyBytes_CheckExact(data.ptr())) {
      char* p;
      Py_ssize_t n;
      PyBytes_AsStringAndSize(data.ptr(), &p, &n);
      return conn->Write(absl::string_view(p, static_cast<size_t>(n)));
    }
    if (PyUnicode_Check(data.ptr())) {
      throw py::type_error("write() takes bytes, not str (encode it first)");
    }
    py::buffer_info info = py::reinterpret_borrow<py::buffer>(data).request();
    return conn->Write(
        absl::string_view(static_cast<const char*>(info.ptr),
                          static_cast<size_t>(info.size * info.itemsize)));
  }
  void Shutdown() {
    if (conn != nullptr) conn->Shutdown();
  }
  void Close() {
    if (conn != nullptr) conn->Close();
  }
  void StartReading() {
    if (conn != nullptr) conn->StartReading();
  }
  void StopReading() {
    if (conn != nullptr) conn->StopReading();
  }
  py::object PeerAddress() const {
    if (conn == nullptr) return py::none();
    absl::StatusOr<SocketAddress> a = conn->PeerAddress();
    if (!a.ok()) return py::none();
    std::string text = a->ToString();
    size_t colon = text.rfind(':');
    std::string host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[')
      host = host.substr(1, host.size() - 2);
    return py::make_tuple(host, static_cast<int>(a->port()));
  }
  size_t queued_bytes() const {
    return conn == nullptr ? 0 : conn->queued_bytes();
  }
  bool closed() const { return conn == nullptr || conn->is_closing(); }
  bool reading() const { return conn != nullptr && conn->is_reading(); }
  int fileno() const { return conn == nullptr ? -1 : conn->fd(); }
};

// Connection.write without pybind11's general dispatcher (argument casters,
// overload resolution, a type lookup by hash): it is the one call made for
// every message, and the dispatcher was a few per cent of an echo server's
// CPU. A plain METH_O method of the Connection type; `self` is checked to be
// a Connection, whose value pybind11 keeps in the instance itself (the
// simple layout: one pointer, no holder).
PyTypeObject* connection_type = nullptr;

PyObject* ConnectionWriteFast(PyObject* self, PyObject* data) {
  if (connection_type == nullptr ||
      !PyObject_TypeCheck(self, connection_type)) {
    PyErr_SetString(PyExc_TypeError, "write() needs a Connection");
    return nullptr;
  }
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  PyConnection* pc =
      inst->simple_layout
          ? static_cast<PyConnection*>(inst->simple_value_holder[0])
          : py::cast<PyConnection*>(py::handle(self));
  try {
    return PyBool_FromLong(pc->Write(py::handle(data)));
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  } catch (const py::builtin_exception& e) {
    e.set_error();
    return nullptr;
  }
}

PyMethodDef connection_write_def = {
    "write", ConnectionWriteFast, METH_O,
    "write($self, data, /)\n--\n\n"
    "Queues bytes (bytes, bytearray, memoryview) for the peer, written at\n"
    "once when nothing is queued. False (the bytes dropped) when the\n"
    "connection is closing or shut down."};

// Turns ConnectionHandler calls into calls of the Python handler's methods
// (looked up once). A missing on_accept starts reading; a missing
// on_peer_closed half-closes once the output is written (the C++ default).
class PyTcpHandler : public ConnectionHandler {
 public:
  PyTcpHandler(PyLoop* loop, py::object handler) : loop_(loop) {
    auto method = [&](const char* name) {
      return py::hasattr(handler, name) ? Ref(handler.attr(name)) : Ref();
    };
    on_accept_ = method("on_accept");
    on_data_ = method("on_data");
    on_drained_ = method("on_drained");
    on_peer_closed_ = method("on_peer_closed");
    on_closed_ = method("on_closed");
    if (!on_data_)
      throw py::type_error("the handler has no on_data(conn, data) method");
  }

  // Called after each on_closed (the client contexts retire themselves).
  void set_after_closed(std::function<void()> fn) {
    after_closed_ = std::move(fn);
  }

  void OnAccept(TcpConnection* c) override {
    py::gil_scoped_acquire gil;
    py::object obj = py::cast(PyConnection{c});
    c->set_user_data(obj.inc_ref().ptr());
    if (on_accept_) {
      PyObject* arg = obj.ptr();
      loop_->CallAndForget(on_accept_.get(), &arg, 1, "on_accept");
    } else {
      c->StartReading();
    }
  }

  void OnData(TcpConnection* c, absl::string_view bytes) override {
    py::gil_scoped_acquire gil;
    PyObject* data = PyBytes_FromStringAndSize(
        bytes.data(), static_cast<Py_ssize_t>(bytes.size()));
    if (data == nullptr) {
      loop_->ReportError("on_data");
      return;
    }
    PyObject* args[2] = {static_cast<PyObject*>(c->user_data()), data};
    loop_->CallAndForget(on_data_.get(), args, 2, "on_data");
    Py_DECREF(data);
  }

  void OnDrained(TcpConnection* c) override {
    if (!on_drained_) return;
    py::gil_scoped_acquire gil;
    PyObject* arg = static_cast<PyObject*>(c->user_data());
    loop_->CallAndForget(on_drained_.get(), &arg, 1, "on_drained");
  }

  void OnPeerClosed(TcpConnection* c) override {
    if (!on_peer_closed_) {
      ConnectionHandler::OnPeerClosed(c);
      return;
    }
    py::gil_scoped_acquire gil;
    PyObject* arg = static_cast<PyObject*>(c->user_data());
    loop_->CallAndForget(on_peer_closed_.get(), &arg, 1, "on_peer_closed");
  }

  void OnClosed(TcpConnection* c, const absl::Status& reason) override {
    py::gil_scoped_acquire gil;
    PyObject* obj = static_cast<PyObject*>(c->user_data());
    c->set_user_data(nullptr);
    if (obj != nullptr) {
      py::object why = reason.ok() ? py::object(py::none())
                                   : py::object(py::str(reason.ToString()));
      // Closed before the call: the handler may keep the object, which is
      // then a harmless closed connection.
      py::cast<PyConnection&>(py::handle(obj)).conn = nullptr;
      if (on_closed_) {
        PyObject* args[2] = {obj, why.ptr()};
        loop_->CallAndForget(on_closed_.get(), args, 2, "on_closed");
      }
      Py_DECREF(obj);
    }
    if (after_closed_) after_closed_();
  }

 private:
  PyLoop* const loop_;
  Ref on_accept_, on_data_, on_drained_, on_peer_closed_, on_closed_;
  std::function<void()> after_closed_;
};

SocketAddress ParseAddress(py::handle address) {
  std::string text;
  if (py::isinstance<py::tuple>(address)) {
    py::tuple t = py::reinterpret_borrow<py::tuple>(address);
    if (t.size() != 2)
      throw py::value_error("an address tuple is (host, port)");
    std::string host = py::cast<std::string>(t[0]);
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    text = absl::StrCat(host, ":", py::cast<int>(t[1]));
  } else {
    text = py::cast<std::string>(address);
  }
  absl::StatusOr<SocketAddress> parsed = SocketAddress::Parse(text);
  if (!parsed.ok())
    throw py::value_error(std::string(parsed.status().message()));
  return *parsed;
}

struct TcpSettings {
  size_t high_watermark = size_t{1} << 20;
  size_t low_watermark = 0;
  double idle_timeout = 0;
  bool no_delay = true;
  size_t read_buffer_size = 64 * 1024;

  TcpOptions ToOptions() const {
    TcpOptions o;
    o.high_watermark = high_watermark;
    o.low_watermark = low_watermark;
    o.idle_timeout = SecondsToDuration(idle_timeout);
    o.no_delay = no_delay;
    if (read_buffer_size > 0) o.read_buffer_size = read_buffer_size;
    return o;
  }
};

class ServerState : public Resource {
 public:
  ServerState(PyLoop* loop, py::object handler)
      : Resource(loop),
        handler_(std::make_unique<PyTcpHandler>(loop, handler)) {}

  void Listen(TcpServerOptions options) {
    absl::StatusOr<std::unique_ptr<TcpServer>> server =
        TcpServer::Create(loop_->loop(), handler_.get(), std::move(options));
    if (!server.ok()) throw std::runtime_error(server.status().ToString());
    server_ = std::move(*server);
  }

  void Close() override {
    server_.reset();  // closes the connections: their on_closed runs here
    handler_.reset();
    drain_done_.reset();
  }

  TcpServer* server() const { return server_.get(); }

  // Stops accepting and closes every connection (on_closed next
  // iteration), then the server is retired.
  void CloseFromPython() {
    if (!is_open()) return;
    if (loop_->running() && server_) {
      server_->StopAccepting();
      server_->context()->CloseAll(absl::CancelledError("server closed"));
    }
    loop_->Discard(this);
  }

  void Drain(py::object done) {
    if (!is_open() || !server_)
      throw std::runtime_error("the server is closed");
    drain_done_ = Ref(std::move(done));
    server_->Drain([this] {
      py::gil_scoped_acquire gil;
      if (!drain_done_) return;
      py::object fn = py::reinterpret_borrow<py::object>(drain_done_.get());
      drain_done_.reset();
      if (!fn.is_none())
        loop_->CallAndForget(fn.ptr(), nullptr, 0, "a drain callback");
    });
  }

 private:
  std::unique_ptr<PyTcpHandler> handler_;
  std::unique_ptr<TcpServer> server_;
  Ref drain_done_;
};

struct PyServer {
  py::object loop_ref;
  std::shared_ptr<ServerState> state;

  TcpServer* server() const {
    return state->is_open() ? state->server() : nullptr;
  }
  void Close() { state->CloseFromPython(); }
  void Drain(py::object done) { state->Drain(std::move(done)); }
  void StopAccepting() {
    if (TcpServer* s = server()) s->StopAccepting();
  }
  py::object Address() const {
    TcpServer* s = server();
    if (s == nullptr) return py::none();
    return py::str(s->address().ToString());
  }
  int Port() const {
    TcpServer* s = server();
    return s == nullptr ? 0 : s->address().port();
  }
  size_t Connections() const {
    TcpServer* s = server();
    return s == nullptr ? 0 : s->context()->connection_count();
  }
  py::dict Stats() const {
    py::dict d;
    TcpServer* s = server();
    if (s == nullptr) return d;
    const TcpServerStats& ss = s->stats();
    const TcpStats& ts = s->context()->stats();
    d["accepted"] = ss.accepted;
    d["refused_over_limit"] = ss.refused_over_limit;
    d["refused_no_fds"] = ss.refused_no_fds;
    d["refused_unwatchable"] = ss.refused_unwatchable;
    d["connections"] = ts.connections;
    d["connections_opened"] = ts.connections_opened;
    d["connections_closed"] = ts.connections_closed;
    d["bytes_read"] = ts.bytes_read;
    d["bytes_written"] = ts.bytes_written;
    d["idle_timeouts"] = ts.idle_timeouts;
    d["resets"] = ts.resets;
    d["read_pauses"] = ts.read_pauses;
    d["queued_bytes"] = ts.queued_bytes;
    return d;
  }
};

// One client connection attempt and then its connection: a TcpContext of
// its own, retired once the connection has closed (or the connect failed).
class ClientState : public Resource,
                    public std::enable_shared_from_this<ClientState> {
 public:
  ClientState(PyLoop* loop, py::object handler, const TcpOptions& options)
      : Resource(loop),
        handler_(std::make_unique<PyTcpHandler>(loop, handler)),
        context_(std::make_unique<TcpContext>(loop->loop(), handler_.get(),
                                              options)) {
    handler_->set_after_closed([this] {
      if (context_ && context_->connection_count() <= 1) loop_->Discard(this);
    });
  }

  void Close() override {
    context_.reset();
    handler_.reset();
    on_done_.reset();
  }

  void Connect(const SocketAddress& to, py::object on_done) {
    on_done_ = Ref(std::move(on_done));
    // The result arrives as a future continuation (an urgent task), which
    // may come after this state is gone: cancelling the attempt destroys
    // the context, which fails the connect with CANCELLED. So the
    // continuation holds a weak reference.
    std::weak_ptr<ClientState> weak = shared_from_this();
    context_->Connect(to, cancel_.token())
        .OnComplete([weak](absl::StatusOr<TcpConnection*> result) {
          if (std::shared_ptr<ClientState> self = weak.lock())
            self->Done(std::move(result));
        });
  }

  // Abandons the connect if it is still in progress: the socket is closed
  // now (no on_accept will come), and the state goes.
  void Cancel() {
    if (!is_open() || connected_) return;
    cancel_.Cancel(absl::CancelledError("connect cancelled"));
    loop_->Discard(this);
  }

 private:
  void Done(absl::StatusOr<TcpConnection*> result) {
    py::gil_scoped_acquire gil;
    if (!on_done_) return;
    py::object fn = py::reinterpret_borrow<py::object>(on_done_.get());
    on_done_.reset();
    py::object conn = py::none();
    py::object error = py::none();
    if (result.ok() && (*result)->user_data() != nullptr) {
      connected_ = true;
      conn = py::reinterpret_borrow<py::object>(
          static_cast<PyObject*>((*result)->user_data()));
    } else {
      error = py::str(result.ok() ? std::string("closed in on_accept")
                                  : result.status().ToString());
    }
    PyObject* args[2] = {conn.ptr(), error.ptr()};
    loop_->CallAndForget(fn.ptr(), args, 2, "a connect callback");
    if (!connected_) loop_->Discard(this);
  }

  std::unique_ptr<PyTcpHandler> handler_;
  std::unique_ptr<TcpContext> context_;
  Ref on_done_;
  CancellationSource cancel_;
  bool connected_ = false;
};

struct PyConnectAttempt {
  py::object loop_ref;
  std::shared_ptr<ClientState> state;
  void Cancel() { state->Cancel(); }
};

PyLoop& LoopOf(py::handle self) { return py::cast<PyLoop&>(self); }

}  // namespace
}  // namespace python
}  // namespace nbio

// pybind11's entry point (PyInit_nbio) is defined at namespace scope.
PYBIND11_MODULE(nbio, m) {
  using namespace nbio;          // NOLINT: the module's whole vocabulary
  using namespace nbio::python;  // NOLINT
  m.doc() = R"doc(nbio: a single-threaded non-blocking I/O runtime, from Python.

One thread, one Loop: timers, callbacks, futures, signal handlers, CPU-bound
work in slices, and TCP servers and clients, run by nbio's C++ event loop
(epoll, poll, select or io_uring). No threads, no asyncio, no async/await: callbacks
and futures, which interoperate both ways.

    import signal
    import nbio

    class Echo:
        def on_accept(self, conn):
            conn.start_reading()
        def on_data(self, conn, data):
            conn.write(data)

    loop = nbio.Loop()
    server = loop.listen_tcp("127.0.0.1:7007", Echo())
    loop.add_signal_handler(signal.SIGTERM, lambda: server.drain(loop.stop))
    loop.run()
    loop.close()

The loop releases the GIL while it waits in the kernel and holds it while it
runs Python callbacks. An exception raised by a callback is reported (to the
handler given to Loop.set_exception_handler, else printed with its traceback
to stderr) and the loop goes on, unless Loop(stop_on_error=True): then run()
stops and raises it. KeyboardInterrupt and SystemExit always stop run().
)doc";

  py::class_<PyLoop>(m, "Loop", py::dynamic_attr(), R"doc(
An event loop: nbio's C++ EventLoop, one per thread.

Loop(backend="", manual_clock=False, stop_on_error=False, cpu_budget=0.001)

backend: a name from nbio.backends() ("epoll", "poll", "select", and
    "io_uring" or "io_uring_poll" where the kernel has it); "" picks the
    best available.
manual_clock: time moves only with advance(seconds) (for tests); run_once()
    then polls without blocking.
stop_on_error: an exception in a callback stops run(), which raises it.
cpu_budget: seconds of CPU-job slices per iteration (run_cpu_job).

Loop thread only, except stop() and call_soon_threadsafe(). Close it with
close() (or let it be collected): that closes every timer, job, server and
connection it made, which then become no-ops.)doc")
      .def(py::init<const std::string&, bool, bool, double>(),
           py::arg("backend") = "", py::arg("manual_clock") = false,
           py::arg("stop_on_error") = false, py::arg("cpu_budget") = 0.001)
      .def(
          "run", &PyLoop::Run,
          "Runs until stop() is called or nothing is left to do (no callback,\n"
          "timer, job, server, connection or signal handler). Raises the\n"
          "callback's exception when stop_on_error is set, and always for\n"
          "KeyboardInterrupt/SystemExit. RuntimeError if called from a "
          "callback.")
      .def("run_once", &PyLoop::RunOnce, py::arg("wait") = py::none(),
           "Runs one iteration: due timers, queued callbacks, one poll "
           "(blocking\n"
           "until the next timer when wait is true; default: true unless the\n"
           "clock is manual), CPU slices. RuntimeError if called from a "
           "callback.")
      .def("stop", &PyLoop::Stop,
           "Makes run() return after the current iteration. Safe from any "
           "thread\n"
           "and from callbacks; wakes the loop if it is waiting.")
      .def("close", &PyLoop::Close,
           "Closes every handle the loop made (timers, jobs, servers with "
           "their\n"
           "connections, client connections, signal handlers), then the loop.\n"
           "Idempotent. RuntimeError while running.")
      .def_property_readonly("closed", &PyLoop::closed,
                             "True once close() has run.")
      .def_property_readonly("running", &PyLoop::running,
                             "True while run() or run_once() is running.")
      .def_property_readonly(
          "backend",
          [](PyLoop& l) {
            l.CheckOpen();
            return std::string(l.loop()->backend_name());
          },
          "The poller backend in use (a name from nbio.backends()).")
      .def(
          "time", &PyLoop::Time,
          "The loop's time in seconds (monotonic; arbitrary epoch), read once\n"
          "per iteration, as timers see it.")
      .def("advance", &PyLoop::Advance, py::arg("seconds"),
           "Moves the manual clock forward (Loop(manual_clock=True) only).")
      .def(
          "call_soon",
          [](py::object self, py::object fn, py::args args) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("call_soon()");
            auto state = std::make_shared<PyLoop::CallState>();
            state->fn = Ref(fn);
            state->args = Ref(args);
            l.PostCall(state);
            return PyHandle{self, state};
          },
          py::arg("callback"),
          "Calls callback(*args) in the next iteration, FIFO. Returns a "
          "Handle\n"
          "(cancel()). Loop thread only.")
      .def(
          "call_soon_threadsafe",
          [](py::object self, py::object fn, py::args args) {
            PyLoop& l = LoopOf(self);
            l.CheckOpen();
            auto state = std::make_shared<PyLoop::CallState>();
            state->fn = Ref(fn);
            state->args = Ref(args);
            l.PostCall(state);
            return PyHandle{self, state};
          },
          py::arg("callback"),
          "call_soon() from any thread: wakes the loop if it is waiting.")
      .def(
          "call_later",
          [](py::object self, double delay, py::object fn, py::args args) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("call_later()");
            auto state =
                l.Register(std::make_shared<TimerState>(&l, fn, args, 0));
            state->timer()->Start(SecondsToDuration(delay));
            return PyTimerHandle{
                self, state,
                static_cast<double>(state->timer()->deadline_nanos()) / 1e9};
          },
          py::arg("delay"), py::arg("callback"),
          "Calls callback(*args) once, `delay` seconds from loop.time() "
          "(never\n"
          "earlier; equal deadlines fire in the order they were set). Returns "
          "a\n"
          "TimerHandle (cancel()).")
      .def(
          "call_every",
          [](py::object self, double period, py::object fn, py::args args) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("call_every()");
            if (!(period > 0))
              throw py::value_error("call_every() needs a period > 0");
            auto state =
                l.Register(std::make_shared<TimerState>(&l, fn, args, period));
            state->timer()->StartPeriodic(absl::Seconds(period));
            return PyTimerHandle{
                self, state,
                static_cast<double>(state->timer()->deadline_nanos()) / 1e9};
          },
          py::arg("period"), py::arg("callback"),
          "Calls callback(*args) every `period` seconds, without drift "
          "(periods\n"
          "missed while the loop was busy are skipped). Returns a "
          "TimerHandle;\n"
          "cancel() stops it, also from inside the callback.")
      .def("_call_urgent", &PyLoop::CallUrgent,
           "fn(arg) before the next poll (future callbacks). Internal.")
      .def(
          "add_signal_handler",
          [](PyLoop& l, int signo, py::object fn, py::args args) {
            l.AddSignalHandler(signo, std::move(fn), std::move(args));
          },
          py::arg("signum"), py::arg("callback"),
          "Calls callback(*args) on the loop when signal `signum` arrives\n"
          "(signalfd: not in signal context). Replaces an earlier handler for\n"
          "the same signal. A handler keeps run() going; remove it to let "
          "run()\n"
          "end. Install handlers before starting other threads.")
      .def("remove_signal_handler", &PyLoop::RemoveSignalHandler,
           py::arg("signum"),
           "Removes the handler of `signum`; False if there was none.")
      .def("set_exception_handler", &PyLoop::SetExceptionHandler,
           py::arg("handler"),
           "handler(context) receives exceptions raised by callbacks; context "
           "is\n"
           "a dict with \"message\" and \"exception\". None restores the "
           "default\n"
           "(print with the traceback to stderr).")
      .def(
          "counters",
          [](PyLoop& l) {
            l.CheckOpen();
            LoopCounters c = l.loop()->counters();
            py::dict d;
            d["iterations"] = c.iterations;
            d["poll_calls"] = c.poll_calls;
            d["poll_blocked_seconds"] =
                static_cast<double>(c.poll_blocked_nanos) / 1e9;
            d["events_dispatched"] = c.events_dispatched;
            d["tasks_run"] = c.tasks_run;
            d["urgent_tasks_run"] = c.urgent_tasks_run;
            d["cpu_slices"] = c.cpu_slices;
            d["timers_fired"] = c.timers_fired;
            d["remote_posts"] = c.remote_posts;
            d["wakeups_sent"] = c.wakeups_sent;
            return d;
          },
          "What the loop has done so far: iterations, poll_calls,\n"
          "poll_blocked_seconds, events_dispatched, tasks_run, "
          "urgent_tasks_run,\n"
          "cpu_slices, timers_fired, remote_posts, wakeups_sent.")
      .def(
          "load",
          [](PyLoop& l) {
            l.CheckOpen();
            LoopLoad load = l.loop()->Load();
            py::dict d;
            d["ready"] = load.tasks_ready;
            d["urgent"] = load.urgent_tasks_ready;
            // Not the loop's own signal wake-up pipe (during run()).
            d["waiting"] = load.fds_waiting -
                           (l.watching_python_signals() ? 1 : 0);
            d["sleeping"] = load.timers_sleeping;
            d["cpu_jobs"] = load.cpu_jobs_pending;
            return d;
          },
          "The loop's queues now: ready (callbacks queued, urgent ones\n"
          "included), urgent, waiting (fds watched: connections, servers),\n"
          "sleeping (timers), cpu_jobs (pending CPU jobs).")
      .def(
          "_start_cpu_job",
          [](py::object self, py::object fn, py::object on_done) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("run_cpu_job()");
            auto state =
                l.Register(std::make_shared<CpuJobState>(&l, fn, on_done));
            state->Start();
            return PyCpuJobHandle{self, state};
          },
          "Starts a CPU job: fn() per slice until it returns a false value;\n"
          "then on_done(None), or on_done(exception). Internal: see "
          "run_cpu_job.")
      .def(
          "listen_tcp",
          [](py::object self, py::object address, py::object handler,
             int backlog, bool reuse_port, size_t max_connections,
             int max_accepts_per_wakeup, size_t high_watermark,
             size_t low_watermark, double idle_timeout, bool no_delay,
             size_t read_buffer_size) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("listen_tcp()");
            TcpServerOptions options;
            options.address = ParseAddress(address);
            options.backlog = backlog;
            options.reuse_port = reuse_port;
            options.max_connections = max_connections;
            if (max_accepts_per_wakeup > 0) {
              options.max_accepts_per_wakeup = max_accepts_per_wakeup;
            }
            options.tcp = TcpSettings{high_watermark, low_watermark,
                                      idle_timeout, no_delay, read_buffer_size}
                              .ToOptions();
            auto state = std::make_shared<ServerState>(&l, handler);
            state->Listen(std::move(options));
            l.Register(state);
            return PyServer{self, state};
          },
          py::arg("address"), py::arg("handler"), py::kw_only(),
          py::arg("backlog") = 1024, py::arg("reuse_port") = false,
          py::arg("max_connections") = 0,
          py::arg("max_accepts_per_wakeup") = 64,
          py::arg("high_watermark") = size_t{1} << 20,
          py::arg("low_watermark") = 0, py::arg("idle_timeout") = 0.0,
          py::arg("no_delay") = true, py::arg("read_buffer_size") = 64 * 1024,
          R"doc(Listens on `address` ("127.0.0.1:7007", "[::1]:0", ":7007", or
(host, port); numeric hosts only; port 0 picks one: see Server.port) and serves
every connection with `handler`, an object with these methods (all but on_data
optional), called on the loop:

    on_accept(conn)          a new connection; call conn.start_reading()
                             (without on_accept, reading starts by itself)
    on_data(conn, data)      bytes arrived (a bytes object)
    on_drained(conn)         output that had to be queued is all written
    on_peer_closed(conn)     the peer shut down its side (default: shut down
                             ours once the output is written)
    on_closed(conn, reason)  the end, exactly once: reason is None for an
                             orderly close, else a string such as
                             "DEADLINE_EXCEEDED: idle timeout"

Options: high_watermark (bytes queued for writing at which reading pauses;
0: never), low_watermark (reading resumes at or below; 0: half the high one),
idle_timeout (seconds without progress before the connection is closed; 0:
never), no_delay (TCP_NODELAY), read_buffer_size, backlog, reuse_port,
max_connections (0: no limit), max_accepts_per_wakeup (accepts per readiness
event before the established connections get their turn). Returns a Server. RuntimeError with the
reason (e.g. address in use) if it cannot listen.)doc")
      .def(
          "_connect_tcp",
          [](py::object self, py::object address, py::object handler,
             py::object on_done, size_t high_watermark, size_t low_watermark,
             double idle_timeout, bool no_delay, size_t read_buffer_size) {
            PyLoop& l = LoopOf(self);
            l.CheckLoopThread("connect_tcp()");
            SocketAddress to = ParseAddress(address);
            TcpOptions options =
                TcpSettings{high_watermark, low_watermark, idle_timeout,
                            no_delay, read_buffer_size}
                    .ToOptions();
            auto state =
                l.Register(std::make_shared<ClientState>(&l, handler, options));
            state->Connect(to, std::move(on_done));
            return PyConnectAttempt{self, state};
          },
          py::arg("address"), py::arg("handler"), py::arg("on_done"),
          py::kw_only(), py::arg("high_watermark") = size_t{1} << 20,
          py::arg("low_watermark") = 0, py::arg("idle_timeout") = 0.0,
          py::arg("no_delay") = true, py::arg("read_buffer_size") = 16 * 1024,
          "Internal: see connect_tcp.")
      .def_property_readonly(
          "_resource_count", &PyLoop::resource_count,
          "How many C++ handles the loop holds (for tests).");

  py::class_<PyHandle>(m, "Handle",
                       "A callback queued by call_soon(): cancel() it.")
      .def("cancel", &PyHandle::Cancel,
           "The callback will not run (a no-op once it ran).")
      .def_property_readonly(
          "cancelled", [](const PyHandle& h) { return h.state->cancelled; },
          "True once cancelled or run.");

  py::class_<PyTimerHandle>(
      m, "TimerHandle",
      "A timer from call_later() or call_every(): cancel() it.")
      .def("cancel", &PyTimerHandle::Cancel,
           "Stops the timer (a no-op once a one-shot timer has fired, or the\n"
           "loop is closed). Safe inside its own callback.")
      .def_property_readonly("pending", &PyTimerHandle::pending,
                             "True while the timer is scheduled.")
      .def_readonly(
          "when", &PyTimerHandle::when,
          "When it was (first) due, on the loop's clock (loop.time()).");

  py::class_<PyCpuJobHandle>(m, "CpuJobHandle",
                             "A CPU job (internal to run_cpu_job).")
      .def("cancel", &PyCpuJobHandle::Cancel,
           "Stops the job before its next slice.");

  py::class_<PyConnectAttempt>(m, "ConnectAttempt", "Internal to connect_tcp.")
      .def("cancel", &PyConnectAttempt::Cancel,
           "Abandons a connect still in progress.");

  py::class_<PyServer>(m, "Server", "A listening TCP server (Loop.listen_tcp).")
      .def("close", &PyServer::Close,
           "Stops listening and closes every connection (on_closed with\n"
           "\"CANCELLED: ...\"). Idempotent.")
      .def("drain", &PyServer::Drain, py::arg("callback") = py::none(),
           "Stops accepting, lets every connection finish what the kernel "
           "holds\n"
           "now, half-closes each once its output is written, and calls\n"
           "callback() once none is left (at once if there is none).")
      .def("stop_accepting", &PyServer::StopAccepting,
           "Closes the listening socket; connections are unaffected.")
      .def_property_readonly(
          "address", &PyServer::Address,
          "The bound address, \"host:port\" (None once closed).")
      .def_property_readonly("port", &PyServer::Port, "The bound port.")
      .def_property_readonly("connections", &PyServer::Connections,
                             "Connections open now.")
      .def("stats", &PyServer::Stats, "The server's counters, as a dict.");

  py::class_<PyConnection> connection(m, "Connection", py::dynamic_attr(),
                                      R"doc(
One TCP stream, handed to the handler's methods. Open from on_accept until
on_closed has returned; after that every method is a no-op (write returns
False). Attributes may be set on it for per-connection state (conn.buffer =
...); the loop drops its own reference when the connection closes.)doc");
  connection
      .def("shutdown", &PyConnection::Shutdown,
           "Half-close: no more writes; FIN once the queued output is written.")
      .def("close", &PyConnection::Close,
           "Closes now, dropping queued output; on_closed follows (not inside\n"
           "this call).")
      .def("start_reading", &PyConnection::StartReading,
           "Starts delivering on_data.")
      .def("stop_reading", &PyConnection::StopReading,
           "Stops delivering on_data (backpressure pauses are separate and\n"
           "automatic).")
      .def_property_readonly("peer_address", &PyConnection::PeerAddress,
                             "(host, port) of the peer, or None.")
      .def_property_readonly("queued_bytes", &PyConnection::queued_bytes,
                             "Bytes waiting to be written.")
      .def_property_readonly("closed", &PyConnection::closed,
                             "True once closing or closed.")
      .def_property_readonly("reading", &PyConnection::reading,
                             "True while on_data is wanted.")
      .def("fileno", &PyConnection::fileno,
           "The socket's fd (-1 once closed).");

  connection_type = reinterpret_cast<PyTypeObject*>(connection.ptr());
  {
    py::object write = py::reinterpret_steal<py::object>(
        PyDescr_NewMethod(connection_type, &connection_write_def));
    if (!write) throw py::error_already_set();
    connection.attr("write") = write;
  }

  m.def(
      "backends", [] { return PollerNames(); },
      "The poller backends on this machine, best first.");

  // The Python half: futures and the helpers built on them.
  py::object globals = m.attr("__dict__");
  py::exec(kPythonSource, globals);
}
