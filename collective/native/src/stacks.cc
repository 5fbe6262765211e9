// JavaScript stacks of a main thread that is busy (TypeScript side: collective/js-stacks.ts).
//
// A worker stuck in a synchronous loop never returns to the event loop, so neither a control message nor Node's
// report-on-signal (a JavaScript signal handler in Node 20) can answer. V8 itself can still stop it: every loop
// back-edge and function entry checks the isolate's stack guard, and `Isolate::RequestInterrupt` (callable from any
// thread) makes the next such check run a callback on the JS thread, between JS instructions. That callback takes
// `StackTrace::CurrentStackTrace` (function, script, line, column per frame) and formats it as text.
//
// Why this file leaves Node-API: Node-API has no way to interrupt running JavaScript or read its stack; only V8's
// API (node's own headers, which node-gyp builds against) has `RequestInterrupt`. The V8 calls are confined to
// `Install` (on the JS thread), `Capture` (RequestInterrupt only, from the server thread) and `OnInterrupt` (on the
// JS thread, inside V8's interrupt: it opens a HandleScope, reads the stack and copies strings out; it never calls
// into JavaScript and never throws).
//
// Mechanism: `stacksInstall(name)` remembers the calling isolate and starts one server thread listening on the
// abstract Unix socket `name` (no file to clean up; gone with the process, SIGKILL included; bound twice, exact and
// NUL-padded, see Listen). A client (the agent) connects and sends "stack\n"; the thread checks the peer's uid (same
// user or root), requests the interrupt and also wakes the event loop (a threadsafe function), then waits at most
// `timeoutMs` for the first answer, writes the text back and closes. Outcomes, each said in the text: the stack (the
// interrupt ran: JS was running); "idle in the event loop" (the wake-up ran first: no JS was running; the caller's
// diagnostic report covers that case); "nothing within N ms" (blocked in a system call or native code). A late or
// second answer to a request (already answered, or timed out) is recognised by its generation number and dropped.
//
// Safety: no signal handler is installed (libuv's threads and the worker's own handlers are untouched). The state is
// allocated once and never freed, so a late interrupt or the server thread never touches freed memory; the env's
// cleanup hook forgets the isolate (under the mutex that RequestInterrupt is called under) before V8 disposes it,
// then stops and joins the thread. Every socket read and write has a timeout, so one slow client cannot hold the
// thread for long.
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <v8.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace tensile {
namespace {

struct Dumper {
  std::mutex mu;
  std::condition_variable cv;
  v8::Isolate* isolate = nullptr;  // guarded by mu; null before install and after the env's cleanup
  napi_env env = nullptr;
  std::string name;                // abstract socket name, without the leading NUL
  int exactFd = -1;   // the abstract socket, bound to exactly the name's bytes
  int paddedFd = -1;  // the same name NUL-padded to the whole sun_path (see Listen)
  int stopPipe[2] = {-1, -1};  // Stop() writes a byte to wake the server's poll()
  bool stopping = false;
  std::thread* thread = nullptr;   // heap-allocated and joined in Stop(); never a static std::thread (exit-safe)
  napi_threadsafe_function wake = nullptr;  // guarded by mu; null once stopped (see Stop)
  int maxFrames = 64;
  int timeoutMs = 2000;
  uint64_t requested = 0;  // generation of the newest request
  uint64_t answered = 0;   // generation whose stack is in `text`
  std::string text;
};

// A larger inline map is left out (the stack keeps its generated positions) so the reply stays small.
constexpr size_t kMaxSourceMapUrlBytes = 4u << 20;

Dumper* D() {
  static Dumper* d = new Dumper();  // never freed: see "Safety" above
  return d;
}

std::string Utf8(v8::Isolate* isolate, v8::Local<v8::String> s) {
  if (s.IsEmpty()) return std::string();
  v8::String::Utf8Value v(isolate, s);
  return *v == nullptr ? std::string() : std::string(*v, static_cast<size_t>(v.length()));
}

// Runs on the JS thread inside V8's interrupt check. No JavaScript is called; only V8's stack-trace API.
std::string FormatStack(v8::Isolate* isolate, int maxFrames) {
  v8::HandleScope scope(isolate);
  v8::Local<v8::StackTrace> trace = v8::StackTrace::CurrentStackTrace(isolate, maxFrames, v8::StackTrace::kDetailed);
  const int n = trace->GetFrameCount();
  std::string out = "JavaScript stack of pid " + std::to_string(getpid()) +
                    " (main thread, taken by a V8 interrupt while it ran JavaScript; " + std::to_string(n) +
                    (n == maxFrames ? " frames: the limit, older ones are not shown" : " frames") +
                    "):\n";
  for (int i = 0; i < n; i++) {
    v8::Local<v8::StackFrame> f = trace->GetFrame(isolate, static_cast<uint32_t>(i));
    std::string fn = Utf8(isolate, f->GetFunctionName());
    std::string script = Utf8(isolate, f->GetScriptNameOrSourceURL());
    if (fn.empty()) fn = "<anonymous>";
    if (script.empty()) script = "<unknown>";
    out += "    at ";
    if (f->IsConstructor()) out += "new ";
    out += fn + " (" + (f->IsEval() ? "eval at " : "") + script + ":" + std::to_string(f->GetLineNumber()) + ":" +
           std::to_string(f->GetColumn()) + ")" + (f->IsWasm() ? " [wasm]" : "") + "\n";
  }
  if (n == 0) out += "    (no JavaScript frames)\n";
  // Transpiled scripts (tsx, bundles) report generated positions; their source maps let the reader (js-stacks.ts)
  // map them back. One line per script, after the frames: "source-map\t<script>\t<sourceMappingURL>".
  std::set<std::string> seen;
  for (int i = 0; i < n; i++) {
    v8::Local<v8::StackFrame> f = trace->GetFrame(isolate, static_cast<uint32_t>(i));
    std::string script = Utf8(isolate, f->GetScriptNameOrSourceURL());
    if (script.empty() || !seen.insert(script).second) continue;
    std::string url = Utf8(isolate, f->GetScriptSourceMappingURL());
    if (url.empty() || url.size() > kMaxSourceMapUrlBytes || url.find_first_of("\t\n") != std::string::npos) continue;
    out += "source-map\t" + script + "\t" + url + "\n";
  }
  return out;
}

void OnInterrupt(v8::Isolate* isolate, void* data) {
  Dumper* d = D();
  const uint64_t gen = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data));
  int maxFrames;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    // A request that timed out, or that the wake-up already answered (the idle thread ran JavaScript later).
    if (gen != d->requested || d->answered == gen || d->isolate != isolate) return;
    maxFrames = d->maxFrames;
  }
  std::string text = FormatStack(isolate, maxFrames);
  std::lock_guard<std::mutex> lk(d->mu);
  if (gen != d->requested || d->answered == gen) return;
  d->text = std::move(text);
  d->answered = gen;
  d->cv.notify_all();
}

// The event loop ran the wake-up call: no JavaScript was running when the request came (a busy thread never gets
// here; its interrupt answers first). On the JS thread, from libuv; `env` is null while the function is torn down.
void OnWake(napi_env env, napi_value, void*, void* data) {
  if (env == nullptr) return;
  Dumper* d = D();
  const uint64_t gen = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data));
  std::lock_guard<std::mutex> lk(d->mu);
  if (gen != d->requested || d->answered == gen) return;
  d->text = "no JavaScript stack: pid " + std::to_string(getpid()) +
            "'s main thread is idle in the event loop (no JavaScript was running: it waits for I/O, a timer or a " +
            "promise; the diagnostic report lists its handles)\n";
  d->answered = gen;
  d->cv.notify_all();
}

// On the server thread: asks the JS thread for its stack, waits at most timeoutMs.
std::string Capture() {
  Dumper* d = D();
  std::unique_lock<std::mutex> lk(d->mu);
  if (d->isolate == nullptr || d->stopping) return "error: the JavaScript thread is shutting down\n";
  const uint64_t gen = ++d->requested;
  void* tag = reinterpret_cast<void*>(static_cast<uintptr_t>(gen));
  d->isolate->RequestInterrupt(OnInterrupt, tag);
  // Also wake the event loop: an idle thread runs no JavaScript, so only the loop can say that it is idle.
  if (d->wake != nullptr) napi_call_threadsafe_function(d->wake, tag, napi_tsfn_nonblocking);
  const bool ok = d->cv.wait_for(lk, std::chrono::milliseconds(d->timeoutMs),
                                 [&] { return d->answered == gen || d->stopping; });
  if (ok && d->answered == gen) return d->text;
  if (d->stopping) return "error: the JavaScript thread is shutting down\n";
  return "no JavaScript stack: pid " + std::to_string(getpid()) + "'s main thread reached no interrupt check and " +
         "did not come back to the event loop within " + std::to_string(d->timeoutMs) +
         " ms (it is blocked in a system call or native code)\n";
}

bool ReadRequest(int fd) {
  char buf[64];
  size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
    if (std::memchr(buf, '\n', got) != nullptr) break;
  }
  return got >= 6 && std::memcmp(buf, "stack\n", 6) == 0;
}

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the client went away or the send timed out: nothing to do
    off += static_cast<size_t>(w);
  }
}

void Serve(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != geteuid() && cred.uid != 0)) {
    WriteAll(fd, "error: only the same user or root may take this process's stacks\n");
    return;
  }
  timeval tv{1, 0};  // a client that sends or reads nothing must not hold the thread
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (!ReadRequest(fd)) {
    WriteAll(fd, "error: expected the request \"stack\\n\"\n");
    return;
  }
  WriteAll(fd, Capture());
}

void ServerLoop(int exactFd, int paddedFd, int stopFd) {
  pollfd fds[3] = {{exactFd, POLLIN, 0}, {paddedFd, POLLIN, 0}, {stopFd, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[2].revents != 0) return;  // Stop() wrote to the pipe
    for (int i = 0; i < 2; i++) {
      if (fds[i].revents == 0) continue;
      const int fd = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) continue;  // EAGAIN (the client gave up), EINTR, ECONNABORTED: poll again
      const int flags = fcntl(fd, F_GETFL);
      if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      Serve(fd);
      close(fd);
    }
  }
}

// Forgets the isolate and the wake-up function, wakes and joins the server thread, closes the sockets. Idempotent;
// on the JS thread. `releaseWake`: stacksClose releases the threadsafe function; at the env's cleanup Node finalizes
// it by itself, so it is only forgotten there.
void Stop(bool releaseWake) {
  Dumper* d = D();
  std::thread* t;
  napi_threadsafe_function wake;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    d->isolate = nullptr;
    d->stopping = true;
    d->cv.notify_all();
    t = d->thread;
    d->thread = nullptr;
    wake = d->wake;
    d->wake = nullptr;
  }
  if (releaseWake && wake != nullptr) napi_release_threadsafe_function(wake, napi_tsfn_abort);
  if (t != nullptr) {
    const char one = 1;
    while (write(d->stopPipe[1], &one, 1) < 0 && errno == EINTR) {
    }
    t->join();
    delete t;
  }
  std::lock_guard<std::mutex> lk(d->mu);
  for (int* fd : {&d->exactFd, &d->paddedFd, &d->stopPipe[0], &d->stopPipe[1]}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  d->env = nullptr;
  d->name.clear();
}

void Cleanup(void*) { Stop(false); }

// Binds `name` in the abstract namespace. `padded`: the address is the whole sun_path, the name followed by NULs,
// which is what Node 20's net.connect('\0name') asks for (libuv 1.46 passes sizeof(sun_path)); otherwise exactly the
// name's bytes, as other clients (and newer libuv's uv_pipe_connect2) do. Both are served, so either client finds us.
int Listen(const std::string& name, bool padded, std::string* err) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.empty() || name.size() > sizeof addr.sun_path - 1) {
    *err = "socket name \"" + name + "\": expected 1 to " + std::to_string(sizeof addr.sun_path - 1) + " bytes";
    return -1;
  }
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = '\0': the abstract namespace
  const socklen_t len = padded ? static_cast<socklen_t>(sizeof addr)
                               : static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 4) != 0) {
    *err = "bind/listen on the abstract socket @" + name + (padded ? " (NUL-padded)" : "") + ": " +
           std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// stacksInstall(name: string, maxFrames: number, timeoutMs: number) -> void. On the main JS thread only (the caller
// checks). Idempotent for the same env and name; throws Error when installed under another env or name, or when the
// socket cannot be bound (the message names the call and errno).
void Install(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber())
    throw Napi::TypeError::New(env, "stacksInstall(name: string, maxFrames: number, timeoutMs: number)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const double maxFrames = info[1].As<Napi::Number>().DoubleValue();
  const double timeoutMs = info[2].As<Napi::Number>().DoubleValue();
  if (!(maxFrames >= 1 && maxFrames <= 1000) || maxFrames != static_cast<double>(static_cast<int>(maxFrames)))
    throw Napi::RangeError::New(env, "maxFrames " + std::to_string(maxFrames) + ": expected an integer in [1, 1000]");
  if (!(timeoutMs >= 1 && timeoutMs <= 60000) || timeoutMs != static_cast<double>(static_cast<int>(timeoutMs)))
    throw Napi::RangeError::New(env, "timeoutMs " + std::to_string(timeoutMs) + ": expected an integer in [1, 60000]");
  Dumper* d = D();
  {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->thread != nullptr) {
      if (d->env == static_cast<napi_env>(env) && d->name == name) return;
      throw Napi::Error::New(env, "the stack dumper is already installed (as @" + d->name + ")");
    }
  }
  std::string err;
  const int exactFd = Listen(name, false, &err);
  if (exactFd < 0) throw Napi::Error::New(env, err);
  const int paddedFd = Listen(name, true, &err);
  int stopPipe[2] = {-1, -1};
  if (paddedFd < 0 || pipe2(stopPipe, O_CLOEXEC) != 0) {
    if (paddedFd >= 0) err = std::string("pipe2: ") + std::strerror(errno);
    close(exactFd);
    if (paddedFd >= 0) close(paddedFd);
    throw Napi::Error::New(env, err);
  }
  napi_value resource = Napi::String::New(env, "tensile-stacks");
  napi_threadsafe_function wake = nullptr;
  if (napi_create_threadsafe_function(env, nullptr, nullptr, resource, 0, 1, nullptr, nullptr, nullptr, OnWake,
                                      &wake) != napi_ok) {
    for (int fd : {exactFd, paddedFd, stopPipe[0], stopPipe[1]}) close(fd);
    throw Napi::Error::New(env, "napi_create_threadsafe_function failed");
  }
  napi_unref_threadsafe_function(env, wake);  // it must not keep the process alive
  std::lock_guard<std::mutex> lk(d->mu);
  d->wake = wake;
  d->isolate = v8::Isolate::GetCurrent();
  d->env = env;
  d->name = name;
  d->exactFd = exactFd;
  d->paddedFd = paddedFd;
  d->stopPipe[0] = stopPipe[0];
  d->stopPipe[1] = stopPipe[1];
  d->stopping = false;
  d->maxFrames = static_cast<int>(maxFrames);
  d->timeoutMs = static_cast<int>(timeoutMs);
  d->thread = new std::thread(ServerLoop, exactFd, paddedFd, stopPipe[0]);
  napi_add_env_cleanup_hook(env, Cleanup, nullptr);
}

// stacksClose() -> void: stops the server (the env's cleanup does the same at exit). Idempotent.
void Close(const Napi::CallbackInfo& info) {
  Dumper* d = D();
  napi_env installedIn;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    installedIn = d->env;
  }
  if (installedIn == nullptr) return;
  if (installedIn != static_cast<napi_env>(info.Env()))
    throw Napi::Error::New(info.Env(), "stacksClose: the stack dumper was installed by another thread");
  napi_remove_env_cleanup_hook(installedIn, Cleanup, nullptr);
  Stop(true);
}

}  // namespace

void InitStacks(Napi::Env env, Napi::Object exports) {
  exports.Set("stacksInstall", Napi::Function::New(env, Install, "stacksInstall"));
  exports.Set("stacksClose", Napi::Function::New(env, Close, "stacksClose"));
}

}  // namespace tensile
