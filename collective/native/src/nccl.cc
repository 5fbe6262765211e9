// NCCL binding. libnccl.so.2 and the CUDA runtime are opened with dlopen at first use, with the prototypes declared
// below (ABI from NVIDIA/nccl src/nccl.h.in and cuda_runtime_api.h), so the addon builds and loads without CUDA.
//
// Threading: every communicator owns one native worker thread and one non-blocking CUDA stream. The JS thread only
// queues tasks and, through a ThreadSafeFunction, settles their promises; the worker thread makes every NCCL call of
// its communicator (NCCL forbids concurrent calls on one communicator), polls completion events, and is also the
// watchdog: while work is in flight it polls ncclCommGetAsyncError and the per-op deadline, and on an error, a
// timeout or an abort request it calls ncclCommAbort, so that a dead peer ends as a rejected promise, not a hang.
// Nothing off the JS thread touches a JS value: tasks carry raw pointers, and the references that keep the host
// arrays and device buffers alive are created and dropped on the JS thread.
// Longer than ~500 lines on purpose: the whole NCCL surface (dlopen table, communicator life cycle, watchdog and
// abort, every collective) shares one private worker-queue state; splitting it would export that state.
#include <napi.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "dl.h"

namespace tensile {
namespace {

// ---- ABI declared here (no headers needed) ------------------------------------------------------------------
using ncclResult_t = int;
using cudaError_t = int;
using ncclComm_t = struct ncclComm*;
using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;
struct ncclUniqueId {
  char internal[128];
};
// ncclConfig_t as of NCCL 2.14: NCCL copies min(size, its sizeof) bytes and defaults newer fields.
struct ncclConfigV214 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
};
static_assert(sizeof(ncclUniqueId) == 128, "ncclUniqueId is 128 bytes");
static_assert(sizeof(ncclConfigV214) == 24, "ncclConfig_t v2.14 is 24 bytes");

constexpr ncclResult_t kNcclSuccess = 0;
constexpr ncclResult_t kNcclSystemError = 2;
constexpr ncclResult_t kNcclInvalidArgument = 4;
constexpr ncclResult_t kNcclInvalidUsage = 5;
constexpr ncclResult_t kNcclRemoteError = 6;
constexpr ncclResult_t kNcclInProgress = 7;
constexpr cudaError_t kCudaSuccess = 0;
constexpr cudaError_t kCudaErrorInsufficientDriver = 35;
constexpr cudaError_t kCudaErrorNoDevice = 100;
constexpr cudaError_t kCudaErrorNotReady = 600;
constexpr cudaError_t kCudaErrorNotReadyOld = 34;
constexpr int kMemcpyHostToDevice = 1;
constexpr int kMemcpyDeviceToHost = 2;
constexpr unsigned kStreamNonBlocking = 0x01;
constexpr unsigned kEventDisableTiming = 0x02;
constexpr int kMinNcclVersion = 21400;

struct NcclApi {
  ncclResult_t (*GetVersion)(int*) = nullptr;
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfigV214*) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*CommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*CommFinalize)(ncclComm_t) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  const char* (*GetLastError)(ncclComm_t) = nullptr;  // optional (2.13)
  ncclResult_t (*AllReduce)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Broadcast)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Reduce)(const void*, void*, size_t, int, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*AllGather)(const void*, void*, size_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*ReduceScatter)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Send)(const void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Recv)(void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*GroupStart)() = nullptr;
  ncclResult_t (*GroupEnd)() = nullptr;
};

struct CudaApi {
  cudaError_t (*GetDeviceCount)(int*) = nullptr;
  cudaError_t (*SetDevice)(int) = nullptr;
  cudaError_t (*Malloc)(void**, size_t) = nullptr;
  cudaError_t (*Free)(void*) = nullptr;
  cudaError_t (*Memcpy)(void*, const void*, size_t, int) = nullptr;
  cudaError_t (*MemcpyAsync)(void*, const void*, size_t, int, cudaStream_t) = nullptr;
  cudaError_t (*StreamCreateWithFlags)(cudaStream_t*, unsigned) = nullptr;
  cudaError_t (*StreamDestroy)(cudaStream_t) = nullptr;
  cudaError_t (*StreamSynchronize)(cudaStream_t) = nullptr;
  cudaError_t (*EventCreateWithFlags)(cudaEvent_t*, unsigned) = nullptr;
  cudaError_t (*EventRecord)(cudaEvent_t, cudaStream_t) = nullptr;
  cudaError_t (*EventQuery)(cudaEvent_t) = nullptr;
  cudaError_t (*EventDestroy)(cudaEvent_t) = nullptr;
  const char* (*GetErrorString)(cudaError_t) = nullptr;
  cudaError_t (*DriverGetVersion)(int*) = nullptr;
  cudaError_t (*RuntimeGetVersion)(int*) = nullptr;
};

struct Runtime {
  bool tried = false;
  bool ok = false;
  std::string reason;
  std::string nccl_path, cudart_path;
  std::vector<std::string> nccl_tried, cudart_tried;
  int nccl_version = 0, runtime_version = 0, driver_version = 0, device_count = 0;
  NcclApi nccl;
  CudaApi cuda;
};

Runtime g_rt;
std::mutex g_rt_mu;

std::vector<std::string> EnvFirst(const char* var, std::vector<std::string> rest) {
  std::vector<std::string> out;
  if (const char* v = std::getenv(var); v != nullptr && *v != '\0') out.emplace_back(v);
  for (auto& s : ExpandCandidates(rest)) out.push_back(std::move(s));
  return out;
}

std::string VersionString(int v) {
  // NCCL_VERSION(X,Y,Z): X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z after.
  int x, y, z;
  if (v >= 10000) {
    x = v / 10000, y = (v % 10000) / 100, z = v % 100;
  } else {
    x = v / 1000, y = (v % 1000) / 100, z = v % 100;
  }
  return std::to_string(x) + "." + std::to_string(y) + "." + std::to_string(z);
}

std::string CudaVersionString(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

#define NCCL_SYM(field, name, required)                                  \
  if (!Sym(nh, name, &g_rt.nccl.field) && (required)) missing.emplace_back(name);
#define CUDA_SYM(field, name)                                            \
  if (!Sym(ch, name, &g_rt.cuda.field)) missing.emplace_back(name);

void LoadRuntimeOnce() {
  std::lock_guard<std::mutex> lock(g_rt_mu);
  if (g_rt.tried) return;
  g_rt.tried = true;
  std::vector<std::string> problems;
  DlResult cr = OpenFirst(EnvFirst(
      "TENSILE_CUDART_LIB",
      {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so",
       "/usr/local/cuda/lib64/libcudart.so.*", "/usr/local/cuda*/targets/x86_64-linux/lib/libcudart.so.*",
       "/usr/local/cuda*/lib64/libcudart.so.*", "/usr/local/lib/python3*/dist-packages/nvidia/cuda_runtime/lib/libcudart.so.*",
       "/usr/lib/python3/dist-packages/nvidia/cuda_runtime/lib/libcudart.so.*"}));
  g_rt.cudart_tried = cr.tried;
  DlResult nr = OpenFirst(EnvFirst(
      "TENSILE_NCCL_LIB",
      {"libnccl.so.2", "libnccl.so", "/usr/lib/x86_64-linux-gnu/libnccl.so.2", "/usr/local/cuda*/lib64/libnccl.so.2",
       "/usr/local/cuda*/targets/x86_64-linux/lib/libnccl.so.2", "/usr/local/nccl*/lib/libnccl.so.2",
       "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
       "/usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2"}));
  g_rt.nccl_tried = nr.tried;
  if (nr.handle == nullptr) {
    problems.push_back("libnccl.so.2 not found (tried: " + Join(nr.tried, ", ") +
                       "; install NCCL or set TENSILE_NCCL_LIB)");
  }
  if (cr.handle == nullptr) {
    problems.push_back("the CUDA runtime (libcudart) not found (tried: " + Join(cr.tried, ", ") +
                       "; set TENSILE_CUDART_LIB)");
  }
  if (!problems.empty()) {
    g_rt.reason = Join(problems, "; ");
    return;
  }
  g_rt.nccl_path = nr.path;
  g_rt.cudart_path = cr.path;
  std::vector<std::string> missing;
  void* nh = nr.handle;
  void* ch = cr.handle;
  NCCL_SYM(GetVersion, "ncclGetVersion", true)
  NCCL_SYM(GetUniqueId, "ncclGetUniqueId", true)
  NCCL_SYM(CommInitRankConfig, "ncclCommInitRankConfig", true)
  NCCL_SYM(CommAbort, "ncclCommAbort", true)
  NCCL_SYM(CommDestroy, "ncclCommDestroy", true)
  NCCL_SYM(CommFinalize, "ncclCommFinalize", true)
  NCCL_SYM(CommGetAsyncError, "ncclCommGetAsyncError", true)
  NCCL_SYM(GetErrorString, "ncclGetErrorString", true)
  NCCL_SYM(GetLastError, "ncclGetLastError", false)
  NCCL_SYM(AllReduce, "ncclAllReduce", true)
  NCCL_SYM(Broadcast, "ncclBroadcast", true)
  NCCL_SYM(Reduce, "ncclReduce", true)
  NCCL_SYM(AllGather, "ncclAllGather", true)
  NCCL_SYM(ReduceScatter, "ncclReduceScatter", true)
  NCCL_SYM(Send, "ncclSend", true)
  NCCL_SYM(Recv, "ncclRecv", true)
  NCCL_SYM(GroupStart, "ncclGroupStart", true)
  NCCL_SYM(GroupEnd, "ncclGroupEnd", true)
  CUDA_SYM(GetDeviceCount, "cudaGetDeviceCount")
  CUDA_SYM(SetDevice, "cudaSetDevice")
  CUDA_SYM(Malloc, "cudaMalloc")
  CUDA_SYM(Free, "cudaFree")
  CUDA_SYM(Memcpy, "cudaMemcpy")
  CUDA_SYM(MemcpyAsync, "cudaMemcpyAsync")
  CUDA_SYM(StreamCreateWithFlags, "cudaStreamCreateWithFlags")
  CUDA_SYM(StreamDestroy, "cudaStreamDestroy")
  CUDA_SYM(StreamSynchronize, "cudaStreamSynchronize")
  CUDA_SYM(EventCreateWithFlags, "cudaEventCreateWithFlags")
  CUDA_SYM(EventRecord, "cudaEventRecord")
  CUDA_SYM(EventQuery, "cudaEventQuery")
  CUDA_SYM(EventDestroy, "cudaEventDestroy")
  CUDA_SYM(GetErrorString, "cudaGetErrorString")
  CUDA_SYM(DriverGetVersion, "cudaDriverGetVersion")
  CUDA_SYM(RuntimeGetVersion, "cudaRuntimeGetVersion")
  if (!missing.empty()) {
    g_rt.reason = "symbols missing from " + nr.path + " or " + cr.path + ": " + Join(missing, ", ") +
                  " (NCCL >= 2.14 is required)";
    return;
  }
  g_rt.nccl.GetVersion(&g_rt.nccl_version);
  if (g_rt.nccl_version < kMinNcclVersion) {
    g_rt.reason = "NCCL " + VersionString(g_rt.nccl_version) + " at " + nr.path +
                  " is too old: non-blocking communicators need NCCL >= 2.14";
    return;
  }
  g_rt.cuda.RuntimeGetVersion(&g_rt.runtime_version);
  g_rt.cuda.DriverGetVersion(&g_rt.driver_version);
  if (g_rt.driver_version == 0) {
    g_rt.reason = "no NVIDIA driver is loaded (cudaDriverGetVersion reports 0; is this a GPU machine?)";
    return;
  }
  int count = 0;
  cudaError_t e = g_rt.cuda.GetDeviceCount(&count);
  if (e == kCudaErrorInsufficientDriver || g_rt.driver_version < g_rt.runtime_version) {
    g_rt.reason = "the NVIDIA driver is too old: it supports CUDA " + CudaVersionString(g_rt.driver_version) +
                  " but " + cr.path + " is CUDA " + CudaVersionString(g_rt.runtime_version);
    return;
  }
  if (e == kCudaErrorNoDevice || (e == kCudaSuccess && count == 0)) {
    g_rt.reason = "no CUDA device is visible (cudaGetDeviceCount: " +
                  std::string(e == kCudaSuccess ? "0 devices" : g_rt.cuda.GetErrorString(e)) +
                  "; check CUDA_VISIBLE_DEVICES)";
    return;
  }
  if (e != kCudaSuccess) {
    g_rt.reason = std::string("cudaGetDeviceCount failed: ") + g_rt.cuda.GetErrorString(e);
    return;
  }
  g_rt.device_count = count;
  g_rt.ok = true;
}

const Runtime& Rt(Napi::Env env) {
  LoadRuntimeOnce();
  if (!g_rt.ok) throw Napi::Error::New(env, "NCCL backend unavailable: " + g_rt.reason);
  return g_rt;
}

std::string CudaErr(cudaError_t e) { return std::string(g_rt.cuda.GetErrorString(e)) + " (" + std::to_string(e) + ")"; }

size_t DtypeBytes(int dtype) {
  switch (dtype) {
    case 0: case 1: case 10: case 11: return 1;
    case 6: case 9: return 2;
    case 2: case 3: case 7: return 4;
    case 4: case 5: case 8: return 8;
    default: return 0;
  }
}

// ---- device buffers -----------------------------------------------------------------------------------------
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  int device = 0;
};

void FreeDeviceBuffer(Napi::Env, DeviceBuffer* b) {
  if (b->ptr != nullptr && g_rt.ok) {
    g_rt.cuda.SetDevice(b->device);
    g_rt.cuda.Free(b->ptr);
  }
  delete b;
}

DeviceBuffer* AsDeviceBuffer(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsExternal()) throw Napi::TypeError::New(env, std::string(what) + " must be a device buffer");
  DeviceBuffer* b = v.As<Napi::External<DeviceBuffer>>().Data();
  if (b->ptr == nullptr) throw Napi::Error::New(env, std::string(what) + " was freed");
  return b;
}

// ---- communicator -------------------------------------------------------------------------------------------
enum Kind { kAllReduce = 0, kBroadcast, kReduce, kAllGather, kReduceScatter, kSend, kRecv, kBarrier, kSendRecv };
enum Special { kOp = 0, kInit, kDestroy };

struct Result {
  bool ok = true;
  std::string code;
  std::string message;
};

struct Task {
  explicit Task(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Special special = kOp;
  int kind = 0;
  size_t count = 0;
  int dtype = 7;
  int op = 0;
  int peer = 0;
  int64_t timeout_ms = 0;
  // Device path: device pointers with offsets applied. Host path: host pointers and byte lengths.
  bool host = false;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t send_bytes = 0;
  size_t recv_bytes = 0;
  // JS-thread-only members.
  Napi::Promise::Deferred deferred;
  std::vector<Napi::Reference<Napi::Value>> keep;
  // Worker-only members.
  cudaEvent_t event = nullptr;
  std::chrono::steady_clock::time_point deadline;
  Result result;
};

struct Comm;
void CallJs(Napi::Env env, Napi::Function, Comm* comm, Task* task);
using Tsfn = Napi::TypedThreadSafeFunction<Comm, Task, CallJs>;

struct Comm {
  int world = 0, rank = 0, device = 0;
  ncclUniqueId id{};
  Tsfn tsfn;
  // JS thread only.
  int pending = 0;
  bool closed_js = false;
  // Shared with the worker.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Task*> queue;
  std::atomic<bool> abort_requested{false};
  std::string abort_reason;  // guarded by mu
  std::atomic<bool> dead{false};
  bool exited = false;       // guarded by mu: the worker no longer takes tasks
  bool thread_done = false;  // guarded by mu: the worker thread has returned from Run
  std::condition_variable done_cv;
  std::shared_ptr<Comm> self_ref;  // keeps this alive until the ThreadSafeFunction finalizes
  // Worker only.
  ncclComm_t nccl = nullptr;
  cudaStream_t stream = nullptr;
  std::deque<Task*> inflight;
  std::vector<cudaEvent_t> events;
  void* scratch[2] = {nullptr, nullptr};
  size_t scratch_bytes[2] = {0, 0};
  std::string dead_code, dead_message;

  void Complete(Task* t) {
    if (t->event != nullptr) {
      events.push_back(t->event);
      t->event = nullptr;
    }
    tsfn.NonBlockingCall(t);
  }
  void Fail(Task* t, const std::string& code, const std::string& message) {
    t->result.ok = false;
    t->result.code = code;
    t->result.message = message;
    Complete(t);
  }
  void Run(Task* init);
  bool Init(Task* init);
  void Launch(Task* t);
  bool Enqueue(Task* t, const void* send, void* recv, std::string* err);
  bool WaitReady(std::chrono::steady_clock::time_point deadline, const char* what, Task* t);
  bool Poll();
  void Kill(const std::string& code, const std::string& message, Task* culprit);
  void Shutdown(Task* destroy);
  bool Scratch(int i, size_t bytes, std::string* err);
  std::string NcclErr(ncclResult_t r) {
    std::string s = std::string(g_rt.nccl.GetErrorString(r)) + " (" + std::to_string(r) + ")";
    if (g_rt.nccl.GetLastError != nullptr) {
      const char* last = g_rt.nccl.GetLastError(nccl);
      if (last != nullptr && *last != '\0') s += ": " + std::string(last);
    }
    return s;
  }
};

void CallJs(Napi::Env env, Napi::Function, Comm* comm, Task* task) {
  if (env == nullptr) return;  // environment shutting down: the task is leaked with the process
  Napi::Object out = Napi::Object::New(env);
  out.Set("ok", task->result.ok);
  out.Set("code", task->result.code);
  out.Set("message", task->result.message);
  task->deferred.Resolve(out);
  if (--comm->pending == 0) comm->tsfn.Unref(env);
  delete task;
}

using Clock = std::chrono::steady_clock;

long env_us(const char* name, long dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return dflt;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return end != v && n >= 0 ? n : dflt;
}

Clock::time_point DeadlineAfter(int64_t ms) { return Clock::now() + std::chrono::milliseconds(ms); }

std::string PeerCode(ncclResult_t r) {
  return r == kNcclRemoteError || r == kNcclSystemError ? "PEER_LOST" : "NCCL";
}

// Aborts the communicator and fails every queued and in-flight task. `culprit` (may be null) gets `code`; the rest
// get ABORTED. Later submissions fail at once with the same message.
void Comm::Kill(const std::string& code, const std::string& message, Task* culprit) {
  if (nccl != nullptr) {
    g_rt.nccl.CommAbort(nccl);
    nccl = nullptr;
  }
  dead_code = code;
  dead_message = message;
  dead.store(true);
  if (culprit != nullptr) Fail(culprit, code, message);
  for (Task* t : inflight) {
    if (t != culprit) Fail(t, code == "ABORTED" ? code : "ABORTED", "communicator aborted: " + message);
  }
  inflight.clear();
}

// Polls until NCCL has finished enqueueing (non-blocking mode returns ncclInProgress), watching the deadline and
// abort requests. Returns false after killing the communicator.
bool Comm::WaitReady(Clock::time_point deadline, const char* what, Task* t) {
  for (;;) {
    ncclResult_t state = kNcclSuccess;
    ncclResult_t r = g_rt.nccl.CommGetAsyncError(nccl, &state);
    if (r != kNcclSuccess) state = r;
    if (state == kNcclSuccess) return true;
    if (state != kNcclInProgress) {
      Kill(PeerCode(state), std::string(what) + " failed: " + NcclErr(state), t);
      return false;
    }
    if (abort_requested.load()) {
      std::lock_guard<std::mutex> lock(mu);
      Kill("ABORTED", "abort requested (" + abort_reason + ")", t);
      return false;
    }
    if (Clock::now() > deadline) {
      Kill("TIMEOUT", std::string(what) + " timed out", t);
      return false;
    }
    sched_yield();
  }
}

bool Comm::Scratch(int i, size_t bytes, std::string* err) {
  if (scratch_bytes[i] >= bytes) return true;
  if (scratch[i] != nullptr) g_rt.cuda.Free(scratch[i]);
  scratch[i] = nullptr;
  scratch_bytes[i] = 0;
  size_t want = bytes < 256 ? 256 : bytes;
  cudaError_t e = g_rt.cuda.Malloc(&scratch[i], want);
  if (e != kCudaSuccess) {
    scratch[i] = nullptr;
    *err = "cudaMalloc(" + std::to_string(want) + ") failed: " + CudaErr(e);
    return false;
  }
  scratch_bytes[i] = want;
  return true;
}

// Enqueues the NCCL call(s) of `t` on the stream. Returns false with *err on an immediate NCCL error.
bool Comm::Enqueue(Task* t, const void* send, void* recv, std::string* err) {
  const NcclApi& n = g_rt.nccl;
  ncclResult_t r = kNcclSuccess;
  switch (t->kind) {
    case kAllReduce: r = n.AllReduce(send, recv, t->count, t->dtype, t->op, nccl, stream); break;
    case kBroadcast: r = n.Broadcast(send, recv, t->count, t->dtype, t->peer, nccl, stream); break;
    case kReduce: r = n.Reduce(send, recv, t->count, t->dtype, t->op, t->peer, nccl, stream); break;
    case kAllGather: r = n.AllGather(send, recv, t->count, t->dtype, nccl, stream); break;
    case kReduceScatter: r = n.ReduceScatter(send, recv, t->count, t->dtype, t->op, nccl, stream); break;
    case kSend: r = n.Send(send, t->count, t->dtype, t->peer, nccl, stream); break;
    case kRecv: r = n.Recv(recv, t->count, t->dtype, t->peer, nccl, stream); break;
    case kBarrier: r = n.AllReduce(recv, recv, 1, 2, 0, nccl, stream); break;
    case kSendRecv:
      n.GroupStart();
      r = n.Send(send, t->count, t->dtype, t->peer, nccl, stream);
      if (r == kNcclSuccess || r == kNcclInProgress) r = n.Recv(recv, t->count, t->dtype, t->peer, nccl, stream);
      {
        ncclResult_t g = n.GroupEnd();
        if (r == kNcclSuccess || r == kNcclInProgress) r = g;
      }
      break;
    default: *err = "unknown operation kind " + std::to_string(t->kind); return false;
  }
  if (r != kNcclSuccess && r != kNcclInProgress) {
    *err = NcclErr(r);
    t->result.code = (r == kNcclInvalidArgument || r == kNcclInvalidUsage) ? "INVALID_ARGUMENT" : PeerCode(r);
    return false;
  }
  return true;
}

const char* KindName(int kind) {
  static const char* names[] = {"allreduce", "broadcast", "reduce", "allgather", "reduceScatter",
                                "send", "recv", "barrier", "sendrecv"};
  return kind >= 0 && kind <= kSendRecv ? names[kind] : "op";
}

// Runs one task: the device path enqueues and adds it to the in-flight list; the host path (and barrier) first
// drains in-flight work, stages through device scratch, and completes before returning.
void Comm::Launch(Task* t) {
  t->deadline = DeadlineAfter(t->timeout_ms);
  std::string err;
  const bool staged = t->host || t->kind == kBarrier;
  const void* send = t->send;
  void* recv = t->recv;
  if (staged) {
    while (!inflight.empty()) {
      if (!Poll()) {
        Fail(t, "ABORTED", "communicator aborted: " + dead_message);
        return;
      }
    }
    const size_t need0 = t->kind == kBarrier ? 4 : t->send_bytes;
    const size_t need1 = t->kind == kBarrier ? 4 : t->recv_bytes;
    const bool in_place = t->kind == kBarrier || t->send == t->recv || t->send == nullptr || t->recv == nullptr;
    if (!Scratch(0, need0 > need1 ? need0 : need1, &err) || (!in_place && !Scratch(1, need1, &err))) {
      Fail(t, "CUDA", err);
      return;
    }
    void* s0 = scratch[0];
    void* s1 = in_place ? scratch[0] : scratch[1];
    if (t->send != nullptr && t->send_bytes > 0) {
      cudaError_t e = g_rt.cuda.MemcpyAsync(s0, t->send, t->send_bytes, kMemcpyHostToDevice, stream);
      if (e != kCudaSuccess) {
        Fail(t, "CUDA", "host-to-device copy failed: " + CudaErr(e));
        return;
      }
    }
    send = s0;
    recv = t->recv == nullptr ? (t->kind == kBarrier ? s0 : nullptr) : s1;
    if (t->kind == kReduce && t->recv == nullptr) recv = s0;
  }
  if (!Enqueue(t, send, recv, &err)) {
    std::string code = t->result.code.empty() ? "NCCL" : t->result.code;
    if (code == "INVALID_ARGUMENT") {
      Fail(t, code, std::string(KindName(t->kind)) + ": " + err);
    } else {
      Kill(code, std::string(KindName(t->kind)) + " failed: " + err, t);
    }
    return;
  }
  if (!WaitReady(t->deadline, KindName(t->kind), t)) return;
  if (t->event == nullptr) {
    if (!events.empty()) {
      t->event = events.back();
      events.pop_back();
    } else {
      g_rt.cuda.EventCreateWithFlags(&t->event, kEventDisableTiming);
    }
  }
  g_rt.cuda.EventRecord(t->event, stream);
  inflight.push_back(t);
  if (!staged) return;
  while (!inflight.empty()) {
    if (!Poll()) return;  // t was failed by Kill
  }
  // Poll completed t (after copying the result back to the host).
}

// One pass over in-flight work: completes finished tasks in order, checks async errors, deadlines and abort
// requests. Returns false when the communicator was killed.
bool Comm::Poll() {
  if (abort_requested.load()) {
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(mu);
      reason = abort_reason;
    }
    Kill("ABORTED", "abort requested (" + reason + ")", nullptr);
    return false;
  }
  ncclResult_t state = kNcclSuccess;
  if (nccl != nullptr) {
    ncclResult_t r = g_rt.nccl.CommGetAsyncError(nccl, &state);
    if (r != kNcclSuccess) state = r;
    if (state != kNcclSuccess && state != kNcclInProgress) {
      Task* front = inflight.empty() ? nullptr : inflight.front();
      Kill(PeerCode(state), "asynchronous NCCL error: " + NcclErr(state), front);
      return false;
    }
  }
  while (!inflight.empty()) {
    Task* t = inflight.front();
    cudaError_t e = g_rt.cuda.EventQuery(t->event);
    if (e == kCudaErrorNotReady || e == kCudaErrorNotReadyOld) {
      if (Clock::now() > t->deadline) {
        Kill("TIMEOUT",
             std::string(KindName(t->kind)) + " did not complete within " + std::to_string(t->timeout_ms) + " ms",
             t);
        return false;
      }
      return true;
    }
    inflight.pop_front();
    if (e != kCudaSuccess) {
      Kill("CUDA", std::string(KindName(t->kind)) + " failed on the device: " + CudaErr(e), t);
      return false;
    }
    if (t->host || t->kind == kBarrier) {
      const bool in_place = t->send == t->recv || t->send == nullptr;
      void* src = in_place ? scratch[0] : scratch[1];
      bool copy_back = t->recv != nullptr && t->recv_bytes > 0;
      if (t->kind == kReduce && t->peer != rank) copy_back = false;  // only the root's buffer holds the result
      if (copy_back) {
        cudaError_t c = g_rt.cuda.Memcpy(t->recv, src, t->recv_bytes, kMemcpyDeviceToHost);
        if (c != kCudaSuccess) {
          Kill("CUDA", "device-to-host copy failed: " + CudaErr(c), t);
          return false;
        }
      }
    }
    Complete(t);
  }
  return true;
}

bool Comm::Init(Task* init) {
  cudaError_t e = g_rt.cuda.SetDevice(device);
  if (e != kCudaSuccess) {
    Fail(init, "CUDA", "cudaSetDevice(" + std::to_string(device) + ") failed: " + CudaErr(e));
    return false;
  }
  e = g_rt.cuda.StreamCreateWithFlags(&stream, kStreamNonBlocking);
  if (e != kCudaSuccess) {
    Fail(init, "CUDA", "cudaStreamCreateWithFlags failed: " + CudaErr(e));
    return false;
  }
  ncclConfigV214 config{sizeof(ncclConfigV214), 0xcafebeef, static_cast<unsigned>(kMinNcclVersion), 0};
  ncclResult_t r = g_rt.nccl.CommInitRankConfig(&nccl, world, id, rank, &config);
  if (r != kNcclSuccess && r != kNcclInProgress) {
    std::string msg = "ncclCommInitRankConfig(nranks=" + std::to_string(world) + ", rank=" + std::to_string(rank) +
                      ", device=" + std::to_string(device) + ") failed: " + NcclErr(r);
    if (nccl != nullptr) g_rt.nccl.CommAbort(nccl);
    nccl = nullptr;
    Fail(init, r == kNcclInvalidArgument || r == kNcclInvalidUsage ? "INVALID_ARGUMENT" : PeerCode(r), msg);
    return false;
  }
  if (!WaitReady(DeadlineAfter(init->timeout_ms), "ncclCommInitRankConfig", init)) return false;
  Complete(init);
  return true;
}

void Comm::Shutdown(Task* destroy) {
  // Drain, then Finalize (flushes work; non-blocking: poll until done) and Destroy. Abort when either fails.
  while (!inflight.empty() && Poll()) {
  }
  if (nccl != nullptr) {
    ncclResult_t r = g_rt.nccl.CommFinalize(nccl);
    bool ok = r == kNcclSuccess || r == kNcclInProgress;
    if (ok) ok = WaitReady(DeadlineAfter(destroy != nullptr ? destroy->timeout_ms : 1000), "ncclCommFinalize", nullptr);
    if (ok && nccl != nullptr) {
      g_rt.nccl.CommDestroy(nccl);
      nccl = nullptr;
    } else if (nccl != nullptr) {
      g_rt.nccl.CommAbort(nccl);
      nccl = nullptr;
    }
  }
  dead.store(true);
  for (cudaEvent_t ev : events) g_rt.cuda.EventDestroy(ev);
  events.clear();
  for (int i = 0; i < 2; i++) {
    if (scratch[i] != nullptr) g_rt.cuda.Free(scratch[i]);
    scratch[i] = nullptr;
  }
  if (stream != nullptr) g_rt.cuda.StreamDestroy(stream);
  stream = nullptr;
  if (destroy != nullptr) Complete(destroy);
}

// How long the worker keeps polling after its last activity before it sleeps: spinning keeps the round trip of
// back-to-back awaited calls short (no futex wake-up per call) at the cost of one busy core for that window.
std::chrono::microseconds SpinWindow() {
  static const std::chrono::microseconds us{env_us("TENSILE_NCCL_SPIN_US", 200)};
  return us;
}

void Comm::Run(Task* init) {
  bool alive = Init(init);
  auto last_progress = Clock::now();
  while (alive) {
    Task* next = nullptr;
    const auto idle = Clock::now() - last_progress;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (queue.empty() && !abort_requested.load()) {
        if (inflight.empty() && idle > SpinWindow()) {
          // Idle: wake every 100 ms to watch for asynchronous errors (a peer's death while we wait).
          cv.wait_for(lock, std::chrono::milliseconds(100));
        } else if (!inflight.empty() && idle > std::chrono::milliseconds(2)) {
          // Long-running work: poll every ~50 µs instead of spinning.
          cv.wait_for(lock, std::chrono::microseconds(50));
        }
      }
      if (!queue.empty()) {
        next = queue.front();
        queue.pop_front();
      }
    }
    if (next != nullptr) {
      last_progress = Clock::now();
      if (next->special == kDestroy) {
        Shutdown(next);
        break;
      }
      Launch(next);
      if (dead.load()) break;
      continue;
    }
    const size_t before = inflight.size();
    if (!Poll()) break;
    if (inflight.size() != before) {
      last_progress = Clock::now();
    } else {
      sched_yield();
    }
  }
  // Dead or destroyed: fail whatever is still queued, release resources, let the JS side go.
  if (!dead.load()) dead.store(true);
  std::deque<Task*> rest;
  {
    std::lock_guard<std::mutex> lock(mu);
    exited = true;
    rest.swap(queue);
  }
  for (Task* t : inflight) rest.push_back(t);
  inflight.clear();
  const std::string code = dead_code.empty() ? "CLOSED" : (dead_code == "ABORTED" ? "ABORTED" : "ABORTED");
  const std::string msg = dead_message.empty() ? "communicator destroyed" : "communicator aborted: " + dead_message;
  for (Task* t : rest) {
    if (t->special == kDestroy) {
      Complete(t);
    } else {
      Fail(t, code, msg);
    }
  }
  if (nccl != nullptr || stream != nullptr) Shutdown(nullptr);
  tsfn.Release();
  {
    std::lock_guard<std::mutex> lock(mu);
    thread_done = true;
  }
  done_cv.notify_all();
}

// Runs when the Node.js environment shuts down with this communicator still alive (no destroy()). It aborts the
// communicator and waits (bounded) for the worker thread to finish, so that the thread does not outlive the
// environment's ThreadSafeFunction or the process's static objects. Registered after the TSFN is created, so it runs
// before the TSFN's own cleanup.
void CleanupHook(void* arg) {
  Comm* c = static_cast<Comm*>(arg);
  {
    std::lock_guard<std::mutex> lock(c->mu);
    if (c->thread_done) return;
    c->abort_reason = "the Node.js environment is shutting down";
  }
  c->abort_requested.store(true);
  c->cv.notify_one();
  std::unique_lock<std::mutex> lock(c->mu);
  c->done_cv.wait_for(lock, std::chrono::seconds(5), [c] { return c->thread_done; });
}

struct CommHandle {
  std::shared_ptr<Comm> comm;
};

void FinalizeHandle(Napi::Env, CommHandle* h) {
  // Dropped without destroy(): ask the worker to abort; it exits on its own.
  if (!h->comm->dead.load()) {
    {
      std::lock_guard<std::mutex> lock(h->comm->mu);
      h->comm->abort_reason = "the process group was garbage-collected without destroy()";
    }
    h->comm->abort_requested.store(true);
    h->comm->cv.notify_one();
  }
  delete h;
}

std::shared_ptr<Comm> AsComm(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(env, "expected a communicator handle");
  return v.As<Napi::External<CommHandle>>().Data()->comm;
}

// ---- JS entry points ----------------------------------------------------------------------------------------
Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LoadRuntimeOnce();
  Napi::Object out = Napi::Object::New(env);
  out.Set("ok", g_rt.ok);
  out.Set("reason", g_rt.reason);
  out.Set("ncclPath", g_rt.nccl_path);
  out.Set("cudartPath", g_rt.cudart_path);
  auto arr = [&](const std::vector<std::string>& v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), v[i]);
    return a;
  };
  out.Set("ncclTried", arr(g_rt.nccl_tried));
  out.Set("cudartTried", arr(g_rt.cudart_tried));
  out.Set("ncclVersion", g_rt.nccl_version);
  out.Set("cudaRuntimeVersion", g_rt.runtime_version);
  out.Set("cudaDriverVersion", g_rt.driver_version);
  out.Set("deviceCount", g_rt.device_count);
  return out;
}

Napi::Value GetUniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Runtime& rt = Rt(env);
  ncclUniqueId id{};
  ncclResult_t r = rt.nccl.GetUniqueId(&id);
  if (r != kNcclSuccess) {
    throw Napi::Error::New(env, std::string("ncclGetUniqueId failed: ") + rt.nccl.GetErrorString(r));
  }
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(id.internal), sizeof(id.internal));
}

int64_t Timeout(Napi::Env env, Napi::Value v) {
  double ms = v.As<Napi::Number>().DoubleValue();
  if (!(ms > 0)) throw Napi::RangeError::New(env, "timeoutMs must be > 0");
  return static_cast<int64_t>(ms);
}

Napi::Value CommInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Rt(env);
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "uniqueId must be a Uint8Array");
  Napi::TypedArray idArr = info[0].As<Napi::TypedArray>();
  if (idArr.ByteLength() != sizeof(ncclUniqueId)) {
    throw Napi::RangeError::New(env, "uniqueId must be 128 bytes, got " + std::to_string(idArr.ByteLength()));
  }
  auto comm = std::make_shared<Comm>();
  std::memcpy(comm->id.internal, TypedArrayBytes(idArr), 128);
  comm->world = info[1].As<Napi::Number>().Int32Value();
  comm->rank = info[2].As<Napi::Number>().Int32Value();
  comm->device = info[3].As<Napi::Number>().Int32Value();
  auto* init = new Task(env);
  init->special = kInit;
  init->timeout_ms = Timeout(env, info[4]);
  Napi::Promise ready = init->deferred.Promise();
  comm->self_ref = comm;
  comm->tsfn = Tsfn::New(env, "tensile-nccl", 0, 1, comm.get(),
                         [](Napi::Env fenv, void*, Comm* ctx) {
                           napi_remove_env_cleanup_hook(fenv, CleanupHook, ctx);
                           std::shared_ptr<Comm> last = std::move(ctx->self_ref);
                         },
                         static_cast<void*>(nullptr));
  napi_add_env_cleanup_hook(env, CleanupHook, comm.get());
  // Pending tasks (init included) keep the process alive; an idle communicator does not.
  comm->pending = 1;
  std::shared_ptr<Comm> keep = comm;
  std::thread([keep, init]() { keep->Run(init); }).detach();
  Napi::Object out = Napi::Object::New(env);
  auto* handle = new CommHandle{comm};
  out.Set("comm", Napi::External<CommHandle>::New(env, handle, FinalizeHandle));
  out.Set("ready", ready);
  return out;
}

// Queues t for the worker; false (t not taken) when the worker has already exited.
bool Push(const std::shared_ptr<Comm>& comm, Task* t) {
  {
    std::lock_guard<std::mutex> lock(comm->mu);
    if (comm->exited) return false;
    comm->queue.push_back(t);
  }
  comm->cv.notify_one();
  return true;
}

Napi::Value Rejected(Napi::Env env, const std::string& code, const std::string& message) {
  auto d = Napi::Promise::Deferred::New(env);
  Napi::Object out = Napi::Object::New(env);
  out.Set("ok", false);
  out.Set("code", code);
  out.Set("message", message);
  d.Resolve(out);
  return d.Promise();
}

// Resolves a buffer argument: a device buffer (pointer + offset, bounds checked) or a host typed array.
void BindBuffer(Napi::Env env, Task* t, Napi::Value v, double offset, size_t need, bool is_send) {
  const char* what = is_send ? "send buffer" : "recv buffer";
  if (v.IsUndefined() || v.IsNull()) return;
  if (v.IsTypedArray()) {
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    if (a.ByteLength() < need) {
      throw Napi::RangeError::New(env, std::string(what) + " has " + std::to_string(a.ByteLength()) +
                                           " bytes; the operation needs " + std::to_string(need));
    }
    uint8_t* p = TypedArrayBytes(a);
    t->host = true;
    if (is_send) {
      t->send = p;
      t->send_bytes = need;
    } else {
      t->recv = p;
      t->recv_bytes = need;
    }
  } else {
    DeviceBuffer* b = AsDeviceBuffer(env, v, what);
    if (!(offset >= 0) || offset + static_cast<double>(need) > static_cast<double>(b->bytes)) {
      throw Napi::RangeError::New(env, std::string(what) + ": offset " + std::to_string(static_cast<size_t>(offset)) +
                                           " + " + std::to_string(need) + " bytes exceeds the buffer's " +
                                           std::to_string(b->bytes) + " bytes");
    }
    uint8_t* p = static_cast<uint8_t*>(b->ptr) + static_cast<size_t>(offset);
    if (is_send) {
      t->send = p;
      t->send_bytes = need;
    } else {
      t->recv = p;
      t->recv_bytes = need;
    }
  }
  t->keep.push_back(Napi::Persistent(v));
}

// ncclSubmit(comm, kind, count, dtype, op, peer, timeoutMs, send, sendOffset, recv, recvOffset) → Promise<result>
Napi::Value Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Comm> comm = AsComm(env, info[0]);
  if (comm->dead.load() || comm->closed_js) {
    return Rejected(env, comm->closed_js ? "CLOSED" : "ABORTED",
                    comm->closed_js ? "the process group was destroyed" : "the communicator was aborted");
  }
  auto task = std::make_unique<Task>(env);
  task->kind = info[1].As<Napi::Number>().Int32Value();
  const double count = info[2].As<Napi::Number>().DoubleValue();
  task->dtype = info[3].As<Napi::Number>().Int32Value();
  task->op = info[4].As<Napi::Number>().Int32Value();
  task->peer = info[5].As<Napi::Number>().Int32Value();
  task->timeout_ms = Timeout(env, info[6]);
  const size_t es = DtypeBytes(task->dtype);
  if (es == 0) throw Napi::RangeError::New(env, "unknown NCCL datatype " + std::to_string(task->dtype));
  if (!(count >= 0) || count > 9.0e15) throw Napi::RangeError::New(env, "count must be >= 0");
  task->count = static_cast<size_t>(count);
  const size_t bytes = task->count * es;
  const size_t n = static_cast<size_t>(comm->world);
  size_t send_need = bytes, recv_need = bytes;
  switch (task->kind) {
    case kAllGather: recv_need = bytes * n; break;
    case kReduceScatter: send_need = bytes * n; break;
    case kBarrier: send_need = recv_need = 0; break;
    default: break;
  }
  if (task->kind != kBarrier) {
    if (task->kind != kRecv) BindBuffer(env, task.get(), info[7], info[8].As<Napi::Number>().DoubleValue(), send_need, true);
    if (task->kind != kSend) BindBuffer(env, task.get(), info[9], info[10].As<Napi::Number>().DoubleValue(), recv_need, false);
    if (task->host && task->send != nullptr && task->recv != nullptr && task->kind != kBarrier) {
      // Host and device buffers cannot be mixed in one operation.
      const bool send_host = info[7].IsTypedArray();
      const bool recv_host = info[9].IsTypedArray();
      if (send_host != recv_host) throw Napi::TypeError::New(env, "send and recv must both be host or both device");
    }
  }
  task->keep.push_back(Napi::Persistent(info[0]));  // the communicator must outlive its operations
  Napi::Promise p = task->deferred.Promise();
  if (!Push(comm, task.get())) return Rejected(env, "ABORTED", "the communicator was aborted");
  task.release();
  if (comm->pending++ == 0) comm->tsfn.Ref(env);
  return p;
}

Napi::Value CommDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Comm> comm = AsComm(env, info[0]);
  if (comm->closed_js) return Rejected(env, "CLOSED", "the process group was already destroyed");
  comm->closed_js = true;
  if (comm->dead.load()) {
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Object out = Napi::Object::New(env);
    out.Set("ok", true);
    out.Set("code", "");
    out.Set("message", "");
    d.Resolve(out);
    return d.Promise();
  }
  auto* t = new Task(env);
  t->special = kDestroy;
  t->timeout_ms = info.Length() > 1 && info[1].IsNumber() ? Timeout(env, info[1]) : 30000;
  Napi::Promise p = t->deferred.Promise();
  if (!Push(comm, t)) {
    delete t;
    return Rejected(env, "CLOSED", "the communicator has already shut down");
  }
  if (comm->pending++ == 0) comm->tsfn.Ref(env);
  return p;
}

Napi::Value CommAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Comm> comm = AsComm(env, info[0]);
  {
    std::lock_guard<std::mutex> lock(comm->mu);
    comm->abort_reason = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "abort()";
  }
  comm->abort_requested.store(true);
  comm->cv.notify_one();
  return env.Undefined();
}

Napi::Value Malloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Runtime& rt = Rt(env);
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  const int device = info[1].As<Napi::Number>().Int32Value();
  if (!(bytes > 0)) throw Napi::RangeError::New(env, "cudaMalloc: bytes must be > 0");
  cudaError_t e = rt.cuda.SetDevice(device);
  if (e != kCudaSuccess) throw Napi::Error::New(env, "cudaSetDevice(" + std::to_string(device) + ") failed: " + CudaErr(e));
  void* p = nullptr;
  e = rt.cuda.Malloc(&p, static_cast<size_t>(bytes));
  if (e != kCudaSuccess) throw Napi::Error::New(env, "cudaMalloc(" + std::to_string(static_cast<size_t>(bytes)) + ") failed: " + CudaErr(e));
  auto* b = new DeviceBuffer{p, static_cast<size_t>(bytes), device};
  return Napi::External<DeviceBuffer>::New(env, b, FreeDeviceBuffer);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBuffer* b = AsDeviceBuffer(env, info[0], "buffer");
  g_rt.cuda.SetDevice(b->device);
  g_rt.cuda.Free(b->ptr);
  b->ptr = nullptr;
  return env.Undefined();
}

Napi::Value BufferBytes(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "expected a device buffer");
  return Napi::Number::New(info.Env(), static_cast<double>(info[0].As<Napi::External<DeviceBuffer>>().Data()->bytes));
}

Napi::Value CopyToDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceBuffer* b = AsDeviceBuffer(env, info[0], "dst");
  const size_t off = static_cast<size_t>(info[1].As<Napi::Number>().DoubleValue());
  Napi::TypedArray a = info[2].As<Napi::TypedArray>();
  if (off + a.ByteLength() > b->bytes) throw Napi::RangeError::New(env, "copy exceeds the device buffer");
  g_rt.cuda.SetDevice(b->device);
  cudaError_t e = g_rt.cuda.Memcpy(static_cast<uint8_t*>(b->ptr) + off,
                                   TypedArrayBytes(a), a.ByteLength(),
                                   kMemcpyHostToDevice);
  // From pageable memory cudaMemcpy may return before the DMA lands, and the legacy stream it used is not ordered
  // with the communicators' non-blocking streams: wait for it, so the next collective sees the data.
  if (e == kCudaSuccess) e = g_rt.cuda.StreamSynchronize(nullptr);
  if (e != kCudaSuccess) throw Napi::Error::New(env, "cudaMemcpy to device failed: " + CudaErr(e));
  return env.Undefined();
}

Napi::Value CopyFromDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray a = info[0].As<Napi::TypedArray>();
  DeviceBuffer* b = AsDeviceBuffer(env, info[1], "src");
  const size_t off = static_cast<size_t>(info[2].As<Napi::Number>().DoubleValue());
  if (off + a.ByteLength() > b->bytes) throw Napi::RangeError::New(env, "copy exceeds the device buffer");
  g_rt.cuda.SetDevice(b->device);
  cudaError_t e = g_rt.cuda.Memcpy(TypedArrayBytes(a),
                                   static_cast<uint8_t*>(b->ptr) + off, a.ByteLength(), kMemcpyDeviceToHost);
  if (e != kCudaSuccess) throw Napi::Error::New(env, "cudaMemcpy from device failed: " + CudaErr(e));
  return env.Undefined();
}

}  // namespace

void InitNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclLoad", Napi::Function::New(env, Load, "ncclLoad"));
  exports.Set("ncclGetUniqueId", Napi::Function::New(env, GetUniqueId, "ncclGetUniqueId"));
  exports.Set("ncclCommInit", Napi::Function::New(env, CommInit, "ncclCommInit"));
  exports.Set("ncclSubmit", Napi::Function::New(env, Submit, "ncclSubmit"));
  exports.Set("ncclCommDestroy", Napi::Function::New(env, CommDestroy, "ncclCommDestroy"));
  exports.Set("ncclCommAbort", Napi::Function::New(env, CommAbort, "ncclCommAbort"));
  exports.Set("cudaMalloc", Napi::Function::New(env, Malloc, "cudaMalloc"));
  exports.Set("cudaFree", Napi::Function::New(env, Free, "cudaFree"));
  exports.Set("cudaBufferBytes", Napi::Function::New(env, BufferBytes, "cudaBufferBytes"));
  exports.Set("cudaCopyToDevice", Napi::Function::New(env, CopyToDevice, "cudaCopyToDevice"));
  exports.Set("cudaCopyFromDevice", Napi::Function::New(env, CopyFromDevice, "cudaCopyFromDevice"));
}

}  // namespace tensile
