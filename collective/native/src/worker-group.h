// The worker plumbing that the addon's CPU data planes share (net.cc: the socket plane; shm.cc: the shared-memory
// plane), written once so that the two cannot drift apart:
//   - one worker thread per group runs the queued tasks in call order (each plane writes its own Run loop, which
//     differs: shm may run an op inline on the JS thread, net has no such path);
//   - a task's result settles its promise on the JS thread through the group's ThreadSafeFunction, which holds the
//     event loop open only while tasks are pending;
//   - a failure asked for on the JS thread (abort, a peer lost on the control sockets, the environment going away, the
//     handle collected) is recorded once (the first wins) and wakes the worker wherever it waits: the queue's
//     condition variable here, and the plane's own waits through G::WakeWorker() (an eventfd write in net.cc, the
//     futexes of the segment in shm.cc);
//   - the environment's cleanup hook fails the group and waits at most 2 s for the worker to end.
// A plane's group derives from WorkerGroup<Group, Task> (CRTP) and provides: `void Run()` (the worker loop, which must
// end with FinishThread()), `void WakeWorker()` (called on the JS thread after a requested failure is recorded),
// `void OnReleased()` (on the JS thread when the thread-safe function is finalized: free what only the worker used)
// and `static constexpr const char* kHandleName` (error text of a wrong handle). Its Task derives from TaskBase.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "reduce.h"

namespace tensile {

using Clock = std::chrono::steady_clock;

// Collective kinds, numbered as the TypeScript face numbers them (collective/native/addon.ts). A plane's own task
// kinds (net.cc: connect, inject, destroy) follow kBarrier.
enum CollectiveKind { kAllReduce = 0, kBroadcast, kReduce, kAllGather, kReduceScatter, kBarrier };
const char* const kKindNames[] = {"allreduce", "broadcast", "reduce", "allgather", "reduceScatter", "barrier"};
const char* const kDtypeNames[] = {"float32", "float64", "int32"};
const char* const kOpNames[] = {"sum", "prod", "min", "max", "avg"};

// What a task ended with; the promise resolves to it as { ok, code, message, peer }.
struct Result {
  bool ok = true;
  std::string code, message;
  int peer = -1;
};

inline Napi::Object ResultObject(Napi::Env env, const Result& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("ok", r.ok);
  out.Set("code", r.code);
  out.Set("message", r.message);
  out.Set("peer", r.peer);
  return out;
}

// What a task on a destroyed group ends with (destroy() itself, called again, ends ok).
inline Result Destroyed() { return Result{false, "CLOSED", "the process group was destroyed", -1}; }

// A promise already resolved to r (a call on a destroyed group).
inline Napi::Value Resolved(Napi::Env env, const Result& r) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Resolve(ResultObject(env, r));
  return d.Promise();
}

// The fields of a task that both planes have. Created on the JS thread; the worker reads the descriptor and buffers
// and writes `result`; `deferred` and `keep` are touched on the JS thread only.
struct TaskBase {
  explicit TaskBase(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  int kind = 0, dtype = 0, op = 0, root = 0;
  size_t count = 0;  // elements: whole buffer (allreduce, broadcast, reduce), per rank (allgather, reduceScatter)
  const uint8_t* send = nullptr;
  uint8_t* recv = nullptr;
  Clock::time_point deadline;
  int64_t timeout_ms = 0;
  // JS thread only.
  Napi::Promise::Deferred deferred;
  std::vector<Napi::Reference<Napi::Value>> keep;  // the typed arrays and the handle, held until the promise settles
  Result result;
};

// info[i] as a timeout in ms; RangeError unless it is a number > 0.
inline int64_t TimeoutArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber() || !(info[i].As<Napi::Number>().DoubleValue() > 0))
    throw Napi::RangeError::New(info.Env(), "timeoutMs must be > 0");
  return static_cast<int64_t>(info[i].As<Napi::Number>().DoubleValue());
}

// The data of typed array `v` (on an ArrayBuffer or a SharedArrayBuffer), which must hold at least `need` bytes; held
// by `t` until its promise settles. TypeError or RangeError naming `what` otherwise.
inline uint8_t* Bytes(Napi::Env env, Napi::Value v, size_t need, const char* what, TaskBase* t) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(env, std::string(what) + " must be a typed array");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  if (a.ByteLength() < need) {
    throw Napi::RangeError::New(env, std::string(what) + " has " + std::to_string(a.ByteLength()) +
                                         " bytes; the operation needs " + std::to_string(need));
  }
  t->keep.push_back(Napi::Persistent(v));
  return TypedArrayBytes(a);
}

// The descriptor arguments of <plane>Submit(group, kind, dtype, op, root, count, send, recv, timeoutMs, ...): info[1..5]
// and info[8] into t (the deadline counts from now). Throws TypeError or RangeError naming the bad argument.
inline void CollectiveArgs(const Napi::CallbackInfo& info, int world, TaskBase* t) {
  t->kind = static_cast<int>(IntArg(info, 1, "kind", 0, kBarrier));
  t->dtype = static_cast<int>(IntArg(info, 2, "dtype", 0, kInt32));
  t->op = static_cast<int>(IntArg(info, 3, "op", 0, kAvg));
  t->root = static_cast<int>(IntArg(info, 4, "root", 0, world - 1));
  if (!info[5].IsNumber() || !(info[5].As<Napi::Number>().DoubleValue() >= 0))
    throw Napi::RangeError::New(info.Env(), "count must be a number >= 0");
  t->count = static_cast<size_t>(info[5].As<Napi::Number>().DoubleValue());
  t->timeout_ms = TimeoutArg(info, 8);
  t->deadline = Clock::now() + std::chrono::milliseconds(t->timeout_ms);
}

// The buffers of <plane>Submit (info[6] send, info[7] recv), sized for t's kind and count in a group of `world` ranks
// and held by t. A barrier has none.
inline void CollectiveBuffers(const Napi::CallbackInfo& info, int world, TaskBase* t) {
  Napi::Env env = info.Env();
  const size_t bytes = t->count * DtypeSize(t->dtype);
  const size_t n = static_cast<size_t>(world);
  switch (t->kind) {
    case kAllReduce:
    case kReduce:
      t->send = Bytes(env, info[6], bytes, "send buffer", t);
      t->recv = Bytes(env, info[7], bytes, "recv buffer", t);
      break;
    case kBroadcast: t->recv = Bytes(env, info[7], bytes, "buffer", t); break;
    case kAllGather:
      t->send = Bytes(env, info[6], bytes, "send buffer", t);
      t->recv = Bytes(env, info[7], bytes * n, "recv buffer", t);
      break;
    case kReduceScatter:
      t->send = Bytes(env, info[6], bytes * n, "send buffer", t);
      t->recv = Bytes(env, info[7], bytes, "recv buffer", t);
      break;
    default: break;
  }
}

// "allreduce float32 × 1024 (sum)", "broadcast int32 × 8 root 2", "barrier": how a mismatch error names an op.
inline std::string Describe(int kind, int dtype, int op, int root, uint64_t count) {
  std::string s = kind >= 0 && kind <= kBarrier ? kKindNames[kind] : "unknown op " + std::to_string(kind);
  if (kind == kBarrier) return s;
  s += " " + std::string(dtype >= 0 && dtype <= kInt32 ? kDtypeNames[dtype] : "?") + " × " + std::to_string(count);
  if (kind == kAllReduce || kind == kReduce || kind == kReduceScatter)
    s += " (" + std::string(op >= 0 && op <= kAvg ? kOpNames[op] : "?") + ")";
  if (kind == kBroadcast || kind == kReduce) s += " root " + std::to_string(root);
  return s;
}

// Runs on the JS thread for every task the worker hands over (NonBlockingCall): settles its promise, lets the event
// loop go once nothing is pending, frees the task. env is null when the environment is being torn down.
template <typename G, typename T>
void CompleteOnJs(Napi::Env env, Napi::Function, G* g, T* t) {
  if (env == nullptr) return;
  t->deferred.Resolve(ResultObject(env, t->result));
  if (--g->pending == 0) g->tsfn.Unref(env);
  delete t;
}

template <typename G, typename T>
struct WorkerGroup {
  using Tsfn = Napi::TypedThreadSafeFunction<G, T, CompleteOnJs<G, T>>;

  Tsfn tsfn;
  // JS thread only.
  int pending = 0;  // tasks handed to the worker and not yet completed; the tsfn is referenced while > 0
  bool closed_js = false;  // destroy() was called
  // Shared with the worker.
  std::mutex mu;
  std::condition_variable cv, done_cv;
  std::deque<T*> queue;  // guarded by mu
  std::atomic<bool> fail_requested{false};
  Result requested;  // guarded by mu: what the JS side failed the group with
  bool exited = false;  // guarded by mu: the worker takes no more tasks
  bool thread_done = false;  // guarded by mu: the worker has released the tsfn and ends
  bool stop = false;  // guarded by mu: the environment is going away or the handle was collected
  std::shared_ptr<G> self_ref;  // keeps the group alive until the tsfn is finalized

  // JS thread (or the environment's cleanup): fails the group with the given result unless a failure was already
  // requested, and wakes the worker (the queue's condition variable, then the plane's own waits). Never blocks on the
  // worker.
  void RequestFail(const std::string& code, const std::string& message, int peer) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (fail_requested.load()) return;
      requested = Result{false, code, message, peer};
    }
    fail_requested.store(true, std::memory_order_release);
    cv.notify_one();
    static_cast<G*>(this)->WakeWorker();
  }

  // JS thread: queues t for the worker; false (t not queued) once the worker takes no more tasks.
  bool Push(T* t) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (exited) return false;
      queue.push_back(t);
    }
    cv.notify_one();
    return true;
  }

  // JS thread: one more task will complete through the tsfn, which holds the event loop open until it does.
  void Hold(Napi::Env env) {
    if (pending++ == 0) tsfn.Ref(env);
  }

  // JS thread: queues the task and returns its promise, or a promise resolved to CLOSED when the worker has exited.
  Napi::Value Enqueue(Napi::Env env, std::unique_ptr<T> t) {
    Napi::Promise p = t->deferred.Promise();
    if (!Push(t.get())) return Resolved(env, Destroyed());
    t.release();
    Hold(env);
    return p;
  }

  // Worker, after its loop: every task still queued (queued after destroy, or when the environment stops) completes
  // with CLOSED.
  void FailQueued() {
    std::deque<T*> rest;
    {
      std::lock_guard<std::mutex> lock(mu);
      rest.swap(queue);
    }
    for (T* t : rest) {
      t->result = Destroyed();
      tsfn.NonBlockingCall(t);
    }
  }

  // Worker, its last act: releases the tsfn and tells CleanupHook that the thread is done.
  void FinishThread() {
    tsfn.Release();
    {
      std::lock_guard<std::mutex> lock(mu);
      thread_done = true;
    }
    done_cv.notify_all();
  }

  // The environment is shutting down: fail the group, stop the worker and wait for it, at most 2 s.
  static void CleanupHook(void* arg) {
    G* g = static_cast<G*>(arg);
    {
      std::lock_guard<std::mutex> lock(g->mu);
      if (g->thread_done) return;
    }
    g->RequestFail("ABORTED", "the Node.js environment is shutting down", -1);
    std::unique_lock<std::mutex> lock(g->mu);
    g->stop = true;
    g->cv.notify_one();
    g->done_cv.wait_for(lock, std::chrono::seconds(2), [g] { return g->thread_done; });
  }
};

// What a plane's open function hands to JS: an External holding the group.
template <typename G>
struct GroupHandle {
  std::shared_ptr<G> group;
};

// The handle was garbage-collected: fail the group and stop its worker (the worker frees the rest).
template <typename G>
void FinalizeHandle(Napi::Env, GroupHandle<G>* h) {
  G* g = h->group.get();
  g->RequestFail("ABORTED", "the process group was garbage-collected without destroy()", -1);
  {
    std::lock_guard<std::mutex> lock(g->mu);
    g->stop = true;
  }
  g->cv.notify_one();
  delete h;
}

// The group behind a handle; TypeError "expected a <G::kHandleName> group handle" for anything else.
template <typename G>
std::shared_ptr<G> AsGroup(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(env, std::string("expected a ") + G::kHandleName + " group handle");
  return v.As<Napi::External<GroupHandle<G>>>().Data()->group;
}

// JS thread, at the end of a plane's open function: creates the tsfn (named `name`, unreferenced until a task is
// pending), registers the cleanup hook, starts the worker thread (G::Run) and returns the handle for JS.
template <typename G>
Napi::Value StartWorker(Napi::Env env, const std::shared_ptr<G>& g, const char* name) {
  g->self_ref = g;
  g->tsfn = G::Tsfn::New(env, name, 0, 1, g.get(),
                         [](Napi::Env fenv, void*, G* ctx) {
                           napi_remove_env_cleanup_hook(fenv, G::CleanupHook, ctx);
                           ctx->OnReleased();
                           std::shared_ptr<G> last = std::move(ctx->self_ref);
                         },
                         static_cast<void*>(nullptr));
  g->tsfn.Unref(env);
  napi_add_env_cleanup_hook(env, G::CleanupHook, g.get());
  std::shared_ptr<G> keep = g;
  std::thread([keep]() { keep->Run(); }).detach();
  return Napi::External<GroupHandle<G>>::New(env, new GroupHandle<G>{g}, FinalizeHandle<G>);
}

// <plane>Fail(group, code, message, peer): fails the group now (abort, or a peer lost on the control sockets).
template <typename G>
Napi::Value FailJs(const Napi::CallbackInfo& info) {
  std::shared_ptr<G> g = AsGroup<G>(info.Env(), info[0]);
  g->RequestFail(info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::String>().Utf8Value(),
                 info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : -1);
  return info.Env().Undefined();
}

}  // namespace tensile
