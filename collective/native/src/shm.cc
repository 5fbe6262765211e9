// Same-host shared-memory data plane for CPU collectives (TypeScript face: collective/native/addon.ts, used by
// collective/shm-plane.ts).
//
// Segment: rank 0 creates an anonymous memfd (never visible in /dev/shm, so nothing is left behind on any exit path,
// SIGKILL included: the memory goes when the last mapping goes). The other ranks of the host open the same file
// through /proc/<pid of rank 0>/fd/<fd> (the kernel re-opens the memfd, as if the descriptor had been passed over a
// Unix socket) and check a random token in the header. Layout (n ranks, S = slot bytes):
//   header (4 KiB) | n × control block (256 B) | n input slots of S bytes | one output slot of S bytes
//
// Protocol: every collective runs as steps; every rank takes part in every step and counts steps the same way, so a
// step number names the same step on every rank. Each rank owns two counters in its control block:
//   ready[r] = s    : rank r's input slot (and, at an op's first step, its op descriptor) holds step s's data;
//   reduced[r] = s  : rank r has finished reading the input slots for step s and written its part of the output slot.
// Before writing its input slot for step s a rank waits for reduced[q] ≥ s−1 of every q (nobody still reads it);
// a rank writes the output slot only after every ready[q] ≥ s, which every rank publishes only after it has copied
// the output of step s−1 away. Waiters spin briefly, then sleep on the counter's futex; a publisher wakes the futex
// only when its sleeper count says someone sleeps (both sequentially consistent, so no wake-up is lost).
//
// Algorithms: allreduce ≤ small_bytes: every rank reduces all inputs straight into its own buffer (one wait);
// larger: rank r reduces slice r of every input into the output slot (reduce-scatter), then all copy the output
// slot (allgather). reduce: the same, only the root copies out. reduceScatter: each rank publishes its n pieces and
// reduces piece r. allgather: each publishes its input, all copy all. broadcast: the root publishes. barrier: a step.
// At its first step every op exchanges a descriptor (kind, dtype, op, root, count) and every rank checks all of them,
// so a size/dtype mismatch fails on every rank, naming both sides, and leaves the counters in step.
//
// Threads and failures (the queue, the worker thread and the completions are worker-group.h's, shared with net.cc):
// one worker thread per group runs queued operations in order (a single-step op may start,
// and finish, on the JS thread when nothing is queued: see TryInline); completions settle promises
// through a ThreadSafeFunction; the typed arrays are held (references) until then. A wait ends early when: the JS
// side fails the group (abort, or the TCP control sockets saw a peer go: shmFail), another rank published a failure
// in the header, the awaited rank destroyed its group, its process is gone (checked every 100 ms while asleep), or
// the op's deadline passed. The failing rank publishes why in the header and wakes every futex, so the other ranks
// fail within one wake-up with PEER_LOST naming it. After a failure every queued and later op fails the same way.
// Longer than ~500 lines on purpose: the segment layout, the step protocol and every collective of the plane share
// the Group's private state and invariants; they are one unit, with the reductions kept apart in reduce.cc.
#include <fcntl.h>
#include <linux/futex.h>
#include <napi.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "args.h"
#include "memfd.h"
#include "reduce.h"
#include "worker-group.h"

namespace tensile {
namespace {

constexpr uint64_t kMagic = 0x314d48534c534e54ull;  // "TNSLSHM1"
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kCtrlBytes = 256;
constexpr size_t kPage = 4096;

// Why a rank failed, as published in the header's fail word: (reason << 16) | (rank + 1).
enum FailReason : uint32_t { kFailAborted = 1, kFailTimedOut = 2, kFailLost = 3 };

struct Counter {
  std::atomic<uint32_t> value;
  std::atomic<uint32_t> sleepers;
  char pad[64 - 2 * sizeof(std::atomic<uint32_t>)];
};

struct Ctrl {
  alignas(64) Counter ready;
  Counter reduced;
  // Descriptor of the op this rank runs, written before ready[r] of the op's first step.
  struct alignas(64) {
    uint32_t kind, dtype, op, root;
    uint64_t count;
  } desc;
  int32_t pid;
  std::atomic<uint32_t> left;  // 1 once this rank destroyed its group
};
static_assert(sizeof(Ctrl) <= kCtrlBytes, "control block too large");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be lock-free");

struct Header {
  uint64_t magic, token;
  uint32_t world, pad;
  uint64_t slot_bytes;
  alignas(64) std::atomic<uint32_t> fail;
};

size_t SegmentBytes(int world, size_t slot) {
  return kHeaderBytes + ((world * kCtrlBytes + kPage - 1) / kPage) * kPage + (world + 1) * slot;
}

long Futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const timespec* ts) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

bool ProcessAlive(int pid) {
  if (pid <= 0) return true;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  // A killed child that its parent has not reaped yet still answers kill(); its state in /proc says it is gone.
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return errno != ENOENT;
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] == '\0' || close[2] == '\0') return true;
  return close[2] != 'Z' && close[2] != 'X';
}

struct Task : TaskBase {
  explicit Task(Napi::Env env) : TaskBase(env) {}
  bool destroy = false;
  // 1 once the calling thread has begun this single-step op (step taken, input published) and handed it over.
  int stage = 0;
};

// The queue, the worker thread's life and the JS-facing plumbing are WorkerGroup's (worker-group.h).
struct Group : WorkerGroup<Group, Task> {
  static constexpr const char* kHandleName = "shared-memory";
  int world = 0, rank = 0;
  size_t slot = 0, small_bytes = 0;
  int spin = 0;
  int fd = -1;  // rank 0's memfd until shmSeal
  uint8_t* base = nullptr;
  size_t bytes = 0;
  bool busy = false;  // guarded by mu: an op is running (on the worker, or inline on the JS thread)
  // Worker only.
  uint32_t step = 0;
  Result dead;  // !dead.ok once failed

  Header* header() const { return reinterpret_cast<Header*>(base); }
  Ctrl* ctrl(int q) const { return reinterpret_cast<Ctrl*>(base + kHeaderBytes + q * kCtrlBytes); }
  uint8_t* in(int q) const {
    return base + kHeaderBytes + ((world * kCtrlBytes + kPage - 1) / kPage) * kPage + q * slot;
  }
  uint8_t* out() const { return in(world); }

  void Run();
  void Execute(Task* t);
  bool RunAllReduce(Task* t, bool to_root_only);
  bool IsSingleStep(const Task* t) const;
  bool RunSmall(Task* t);
  bool TryInline(Task* t);
  bool AllReached(bool ready, uint32_t target) const;
  bool RunBroadcast(Task* t);
  bool RunAllGather(Task* t);
  bool RunReduceScatter(Task* t);
  bool Begin(Task* t, bool first);
  void WriteDescriptor(const Task* t);
  template <typename Body>
  bool Steps(const Task* t, size_t per_step, Body body);
  bool WaitAll(bool ready, uint32_t target, Task* t);
  bool Wait(int q, bool ready, uint32_t target, Task* t);
  bool Failed(int q, Counter& c, uint32_t target, Task* t, bool* reached);
  bool TakeRequested();
  void Publish(bool ready, uint32_t s);
  bool CheckDescriptors(Task* t);
  bool Arrive(Task* t, uint32_t s, bool first);
  bool StepIn(Task* t, bool first, size_t off, size_t len, uint32_t* s);
  void Die(const Result& why, uint32_t publish);
  void WakeAll();
  void WakeWorker();
  void OnReleased() {}
};

void Group::WakeAll() {
  for (int q = 0; q < world; q++) {
    Futex(&ctrl(q)->ready.value, FUTEX_WAKE, INT_MAX, nullptr);
    Futex(&ctrl(q)->reduced.value, FUTEX_WAKE, INT_MAX, nullptr);
  }
}

void Group::Publish(bool ready, uint32_t s) {
  Counter& c = ready ? ctrl(rank)->ready : ctrl(rank)->reduced;
  c.value.store(s, std::memory_order_seq_cst);
  if (c.sleepers.load(std::memory_order_seq_cst) != 0) Futex(&c.value, FUTEX_WAKE, INT_MAX, nullptr);
}

// Marks this group dead with `why`; when `publish` is non-zero, tells the other ranks through the header.
void Group::Die(const Result& why, uint32_t publish) {
  if (!dead.ok) return;
  dead = why;
  if (publish != 0) {
    uint32_t expected = 0;
    header()->fail.compare_exchange_strong(expected, publish);
  }
  WakeAll();
}

// True when the wait for `c` ≥ target on rank q must end with an error (t->result set); *reached when the counter
// got there after all.
// Adopts a failure the JS side asked for (shmFail) and publishes it for the other ranks. True when there was one.
bool Group::TakeRequested() {
  if (!fail_requested.load(std::memory_order_acquire)) return false;
  if (!dead.ok) return true;
  Result why;
  {
    std::lock_guard<std::mutex> lock(mu);
    why = requested;
  }
  const uint32_t code = why.code == "ABORTED" ? kFailAborted : why.code == "TIMEOUT" ? kFailTimedOut : kFailLost;
  const int who = why.code == "PEER_LOST" && why.peer >= 0 ? why.peer : rank;
  Die(why, (code << 16) | static_cast<uint32_t>(who + 1));
  return true;
}

bool Group::Failed(int q, Counter& c, uint32_t target, Task* t, bool* reached) {
  if (!dead.ok) return true;
  if (TakeRequested()) return true;
  const uint32_t fail = header()->fail.load(std::memory_order_acquire);
  if (fail != 0) {
    const int who = static_cast<int>(fail & 0xffff) - 1;
    const uint32_t reason = fail >> 16;
    Result r;
    r.ok = false;
    r.code = "PEER_LOST";
    r.peer = who;
    r.message = "rank " + std::to_string(who) +
                (reason == kFailAborted    ? " aborted its process group"
                 : reason == kFailTimedOut ? " timed out in a collective and failed the group"
                                           : ": lost (its process exited)") +
                " (shared-memory plane, seen by rank " + std::to_string(rank) + ")";
    Die(r, 0);
    return true;
  }
  if (ctrl(q)->left.load(std::memory_order_acquire) != 0) {
    if (static_cast<int32_t>(c.value.load(std::memory_order_seq_cst) - target) >= 0) {
      *reached = true;
      return false;
    }
    Result r{false, "PEER_LOST", "rank " + std::to_string(q) + " has destroyed its process group", q};
    Die(r, 0);
    return true;
  }
  if (Clock::now() >= t->deadline) {
    Result r{false, "TIMEOUT",
             std::string(kKindNames[t->kind]) + " on rank " + std::to_string(rank) + " did not complete within " +
                 std::to_string(t->timeout_ms) + " ms (waiting for rank " + std::to_string(q) + ")",
             -1};
    Die(r, (kFailTimedOut << 16) | static_cast<uint32_t>(rank + 1));
    return true;
  }
  return false;
}

bool Group::Wait(int q, bool ready, uint32_t target, Task* t) {
  Counter& c = ready ? ctrl(q)->ready : ctrl(q)->reduced;
  int spins = 0;
  auto last_alive = Clock::now();
  for (;;) {
    const uint32_t v = c.value.load(std::memory_order_acquire);
    if (static_cast<int32_t>(v - target) >= 0) return true;
    bool reached = false;
    if (Failed(q, c, target, t, &reached)) return false;
    if (reached) return true;
    if (spins < spin) {
      spins++;
      CpuRelax();
      continue;
    }
    c.sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (c.value.load(std::memory_order_seq_cst) == v) {
      timespec ts{0, 20 * 1000 * 1000};
      Futex(&c.value, FUTEX_WAIT, v, &ts);
    }
    c.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    const auto now = Clock::now();
    if (now - last_alive > std::chrono::milliseconds(100)) {
      last_alive = now;
      if (!ProcessAlive(ctrl(q)->pid)) {
        Result r{false, "PEER_LOST",
                 "rank " + std::to_string(q) + ": lost (process " + std::to_string(ctrl(q)->pid) +
                     " exited; seen by rank " + std::to_string(rank) + " in " + kKindNames[t->kind] + ")",
                 q};
        Die(r, (kFailLost << 16) | static_cast<uint32_t>(q + 1));
        return false;
      }
    }
  }
}

bool Group::WaitAll(bool ready, uint32_t target, Task* t) {
  for (int q = 0; q < world; q++) {
    if (q != rank && !Wait(q, ready, target, t)) return false;
  }
  return true;
}

// The op that rank's control block describes, as a mismatch error names it.
std::string DescribeOp(const Ctrl* c) {
  return Describe(static_cast<int>(c->desc.kind), static_cast<int>(c->desc.dtype), static_cast<int>(c->desc.op),
                  static_cast<int>(c->desc.root), c->desc.count);
}

// Called at an op's first step once every ready[q] has reached it: all ranks see the same descriptors, so all
// reach the same verdict.
bool Group::CheckDescriptors(Task* t) {
  const Ctrl* a = ctrl(0);
  for (int q = 1; q < world; q++) {
    const Ctrl* b = ctrl(q);
    if (a->desc.kind != b->desc.kind || a->desc.dtype != b->desc.dtype || a->desc.count != b->desc.count ||
        (a->desc.kind != kBroadcast && a->desc.kind != kAllGather && a->desc.op != b->desc.op) ||
        ((a->desc.kind == kBroadcast || a->desc.kind == kReduce) && a->desc.root != b->desc.root)) {
      t->result = Result{false, "INVALID_ARGUMENT",
                         "collective mismatch between ranks: rank 0 called " + DescribeOp(a) + " but rank " +
                             std::to_string(q) + " called " + DescribeOp(b) +
                             " (every rank must call the same collectives in the same order, with the same sizes)",
                         q == rank ? 0 : q};
      return false;
    }
  }
  return true;
}

// Starts the next step (`step`): waits until nobody reads this rank's input slot any more, and at the op's first
// step writes the descriptor. The caller then fills the input slot and publishes ready.
bool Group::Begin(Task* t, bool first) {
  const uint32_t s = ++step;
  if (!WaitAll(false, s - 1, t)) return false;
  if (first) WriteDescriptor(t);
  return true;
}

// Writes t's op descriptor into this rank's control block; the other ranks read it once ready[rank] says so.
void Group::WriteDescriptor(const Task* t) {
  Ctrl* me = ctrl(rank);
  me->desc.kind = t->kind;
  me->desc.dtype = t->dtype;
  me->desc.op = t->op;
  me->desc.root = t->root;
  me->desc.count = t->count;
}

// Runs an op of t->count elements as steps of at most `per_step` elements: body(off, len, first) for each piece in
// order, and once with len 0 when count is 0 (every rank still takes the op's first step and checks the
// descriptors). False as soon as a step returns false (t->result or dead says why).
template <typename Body>
bool Group::Steps(const Task* t, size_t per_step, Body body) {
  size_t off = 0;
  bool first = true;
  do {
    const size_t len = std::min(per_step, t->count - off);
    if (!body(off, len, first)) return false;
    first = false;
    off += len;
  } while (off < t->count);
  return true;
}

// Barriers, and allreduce/reduce payloads of at most small_bytes that fit one step: every rank reduces every input
// straight into its own buffer, so the op has a single wait.
bool Group::IsSingleStep(const Task* t) const {
  if (t->kind == kBarrier) return true;
  const size_t bytes = t->count * DtypeSize(t->dtype);
  return (t->kind == kAllReduce || t->kind == kReduce) && bytes <= small_bytes && bytes <= slot;
}

// After this rank published step `s`'s input: waits until every rank has, and on an op's first step checks that all
// describe the same op; on a mismatch publishes `reduced` for the step (so that no peer waits on this rank) and
// returns false (t->result says why).
bool Group::Arrive(Task* t, uint32_t s, bool first) {
  if (!WaitAll(true, s, t)) return false;
  if (first && !CheckDescriptors(t)) {
    Publish(false, s);
    return false;
  }
  return true;
}

// One pipelined step of an op that stages its send buffer as is: begins the step (`*s` its number), copies `len`
// elements from element `off` of the send buffer into this rank's input slot, publishes it and arrives.
bool Group::StepIn(Task* t, bool first, size_t off, size_t len, uint32_t* s) {
  const size_t es = DtypeSize(t->dtype);
  if (!Begin(t, first)) return false;
  *s = step;
  if (len > 0) std::memcpy(in(rank), t->send + off * es, len * es);
  Publish(true, *s);
  return Arrive(t, *s, first);
}

bool Group::RunSmall(Task* t) {
  const size_t es = DtypeSize(t->dtype);
  if (t->stage == 0) {
    if (!Begin(t, true)) return false;
    if (t->count > 0) std::memcpy(in(rank), t->send, t->count * es);
    Publish(true, step);
  }
  const uint32_t s = step;
  if (!Arrive(t, s, true)) return false;
  if (t->kind != kBarrier && (t->kind == kAllReduce || rank == t->root)) {
    const void* srcs[256];
    for (int q = 0; q < world; q++) srcs[q] = in(q);
    Reduce(t->dtype, t->op, t->recv, srcs, world, t->count, t->op == kAvg ? world : 1);
  }
  Publish(false, s);
  return true;
}

bool Group::AllReached(bool ready, uint32_t target) const {
  for (int q = 0; q < world; q++) {
    if (q == rank) continue;
    const Counter& c = ready ? ctrl(q)->ready : ctrl(q)->reduced;
    if (static_cast<int32_t>(c.value.load(std::memory_order_acquire) - target) < 0) return false;
  }
  return true;
}

// Runs a single-step op on the calling (JS) thread when that needs no waiting beyond `spin` polls: the last rank to
// arrive completes at once, with no thread hand-off either way. Returns true when done (t->result set); false when
// the worker must finish it (t->stage says how far it got). Never sleeps; the caller holds `busy`.
bool Group::TryInline(Task* t) {
  if (!dead.ok || fail_requested.load(std::memory_order_acquire)) return false;
  if (!AllReached(false, step)) return false;  // someone still reads this rank's input slot: let the worker wait
  const size_t es = DtypeSize(t->dtype);
  const uint32_t s = ++step;
  WriteDescriptor(t);
  if (t->count > 0) std::memcpy(in(rank), t->send, t->count * es);
  Publish(true, s);
  t->stage = 1;
  for (int i = 0; !AllReached(true, s); i++) {
    if (i >= spin) return false;
    CpuRelax();
  }
  if (!RunSmall(t) && t->result.ok) t->result = dead;
  return true;
}

bool Group::RunAllReduce(Task* t, bool to_root_only) {
  const size_t es = DtypeSize(t->dtype);
  const bool small = t->count * es <= small_bytes;
  const int divisor = t->op == kAvg ? world : 1;
  return Steps(t, slot / es, [&](size_t off, size_t len, bool first) {
    uint32_t s;
    if (!StepIn(t, first, off, len, &s)) return false;
    const void* srcs[256];
    if (small) {
      // Every rank reduces everything into its own buffer: one wait in the critical path.
      for (int q = 0; q < world; q++) srcs[q] = in(q);
      if (!to_root_only || rank == t->root) Reduce(t->dtype, t->op, t->recv + off * es, srcs, world, len, divisor);
      Publish(false, s);
    } else {
      const size_t a = len * rank / world, b = len * (rank + 1) / world;
      for (int q = 0; q < world; q++) srcs[q] = in(q) + a * es;
      if (b > a) Reduce(t->dtype, t->op, out() + a * es, srcs, world, b - a, divisor);
      Publish(false, s);
      if (!to_root_only || rank == t->root) {
        if (!WaitAll(false, s, t)) return false;
        if (len > 0) std::memcpy(t->recv + off * es, out(), len * es);
      }
    }
    return true;
  });
}

bool Group::RunBroadcast(Task* t) {
  const size_t es = DtypeSize(t->dtype);
  return Steps(t, slot / es, [&](size_t off, size_t len, bool first) {
    if (!Begin(t, first)) return false;
    const uint32_t s = step;
    if (rank == t->root && len > 0) std::memcpy(in(rank), t->recv + off * es, len * es);
    Publish(true, s);
    if (first) {
      if (!Arrive(t, s, true)) return false;
    } else if (rank != t->root && !Wait(t->root, true, s, t)) {
      return false;
    }
    if (rank != t->root && len > 0) std::memcpy(t->recv + off * es, in(t->root), len * es);
    Publish(false, s);
    return true;
  });
}

bool Group::RunAllGather(Task* t) {
  const size_t es = DtypeSize(t->dtype);
  return Steps(t, slot / es, [&](size_t off, size_t len, bool first) {
    uint32_t s;
    if (!StepIn(t, first, off, len, &s)) return false;
    for (int q = 0; q < world && len > 0; q++) {
      uint8_t* dst = t->recv + (q * t->count + off) * es;
      if (q != rank || dst != t->send + off * es) std::memcpy(dst, in(q), len * es);
    }
    Publish(false, s);
    return true;
  });
}

// Each step carries one piece of every rank's block (len elements per rank, so a step's n pieces fit the slot).
bool Group::RunReduceScatter(Task* t) {
  const size_t es = DtypeSize(t->dtype);
  const int divisor = t->op == kAvg ? world : 1;
  return Steps(t, slot / es / world, [&](size_t off, size_t len, bool first) {
    if (!Begin(t, first)) return false;
    const uint32_t s = step;
    for (int j = 0; j < world && len > 0; j++)
      std::memcpy(in(rank) + j * len * es, t->send + (j * t->count + off) * es, len * es);
    Publish(true, s);
    if (!Arrive(t, s, first)) return false;
    const void* srcs[256];
    for (int q = 0; q < world; q++) srcs[q] = in(q) + rank * len * es;
    if (len > 0) Reduce(t->dtype, t->op, t->recv + off * es, srcs, world, len, divisor);
    Publish(false, s);
    return true;
  });
}

void Group::Execute(Task* t) {
  if (!dead.ok) {
    t->result = dead;
    return;
  }
  bool ok = false;
  if (IsSingleStep(t)) {
    ok = RunSmall(t);
    if (!ok && t->result.ok) t->result = dead;
    return;
  }
  switch (t->kind) {
    case kAllReduce: ok = RunAllReduce(t, false); break;
    case kReduce: ok = RunAllReduce(t, true); break;
    case kBroadcast: ok = RunBroadcast(t); break;
    case kAllGather: ok = RunAllGather(t); break;
    case kReduceScatter: ok = RunReduceScatter(t); break;
    case kBarrier: {
      t->count = 0;
      ok = RunAllGather(t);
      break;
    }
    default: break;
  }
  if (!ok && t->result.ok) t->result = dead.ok ? Result{false, "INVALID_ARGUMENT", "unknown operation", -1} : dead;
}

void Group::Run() {
  for (;;) {
    Task* t = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [this] {
        return stop || (!busy && (!queue.empty() || (fail_requested.load() && dead.ok)));
      });
      if (stop) {
        exited = true;
        break;
      }
      if (queue.empty()) {
        // Failed while idle: adopt and publish it now, so that the other ranks learn at once.
        lock.unlock();
        TakeRequested();
        continue;
      }
      t = queue.front();
      queue.pop_front();
      if (t->destroy) exited = true;
      busy = true;
    }
    if (t->destroy) {
      ctrl(rank)->left.store(1, std::memory_order_seq_cst);
      WakeAll();
      t->result = Result{};
      tsfn.NonBlockingCall(t);
      break;
    }
    Execute(t);
    {
      std::lock_guard<std::mutex> lock(mu);
      busy = false;
    }
    tsfn.NonBlockingCall(t);
  }
  // Anything queued after destroy (the JS side prevents it) fails.
  FailQueued();
  {
    // Under the lock: shmFail (JS thread) wakes futexes in the segment only while it is mapped.
    std::lock_guard<std::mutex> lock(mu);
    munmap(base, bytes);
    base = nullptr;
  }
  FinishThread();
}

// After a requested failure (WorkerGroup::RequestFail, JS thread): wakes the worker if it sleeps on a peer's counter
// (this also wakes peers' waiters on it: they re-check and sleep).
void Group::WakeWorker() {
  std::lock_guard<std::mutex> lock(mu);
  if (base != nullptr) WakeAll();
}

// shmOpen(world, rank, slotBytes, smallBytes, spin, source?) → { group, pid, fd, token }
// Without `source` (rank 0) creates the segment; with source = { pid, fd, token } opens rank 0's.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = std::make_shared<Group>();
  g->world = IntArg(info, 0, "world", 2, 256);
  g->rank = IntArg(info, 1, "rank", 0, g->world - 1);
  const int slot = IntArg(info, 2, "slotBytes", 4096, 1 << 30);
  g->slot = (static_cast<size_t>(slot) + kPage - 1) / kPage * kPage;
  g->small_bytes = static_cast<size_t>(IntArg(info, 3, "smallBytes", 0, 1 << 30));
  g->spin = IntArg(info, 4, "spin", 0, 1 << 30);
  g->bytes = SegmentBytes(g->world, g->slot);
  uint64_t token = 0;
  int pid = getpid(), fd = -1;
  if (info.Length() < 6 || info[5].IsUndefined() || info[5].IsNull()) {
    fd = MemfdCreate("tensile-shm");
    if (fd < 0) throw Napi::Error::New(env, Errno("memfd_create"));
    if (ftruncate(fd, static_cast<off_t>(g->bytes)) != 0) {
      const std::string e = Errno("ftruncate of the shared-memory segment to " + std::to_string(g->bytes) + " bytes");
      close(fd);
      throw Napi::Error::New(env, e);
    }
    std::random_device rd;
    token = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    g->fd = fd;
  } else {
    Napi::Object src = info[5].As<Napi::Object>();
    const int spid = src.Get("pid").As<Napi::Number>().Int32Value();
    const int sfd = src.Get("fd").As<Napi::Number>().Int32Value();
    token = std::stoull(src.Get("token").As<Napi::String>().Utf8Value(), nullptr, 16);
    const std::string path = PeerFdPath(spid, sfd);
    fd = OpenPeerFd(spid, sfd, O_RDWR);
    if (fd < 0) throw Napi::Error::New(env, Errno("opening rank 0's segment " + path));
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != g->bytes) {
      close(fd);
      throw Napi::Error::New(env, "segment " + path + " has " + std::to_string(st.st_size) + " bytes, expected " +
                                      std::to_string(g->bytes) + " (world or slot size differ between ranks)");
    }
  }
  void* p = mmap(nullptr, g->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const std::string e = Errno("mmap of " + std::to_string(g->bytes) + " bytes");
    close(fd);
    throw Napi::Error::New(env, e);
  }
  g->base = static_cast<uint8_t*>(p);
  Header* h = g->header();
  if (g->fd >= 0) {
    h->magic = kMagic;
    h->token = token;
    h->world = static_cast<uint32_t>(g->world);
    h->slot_bytes = g->slot;
  } else {
    close(fd);
    if (h->magic != kMagic || h->token != token || h->world != static_cast<uint32_t>(g->world) ||
        h->slot_bytes != g->slot) {
      munmap(p, g->bytes);
      throw Napi::Error::New(env, "the segment does not carry this group's token, world or slot size");
    }
  }
  g->ctrl(g->rank)->pid = pid;
  Napi::Object out = Napi::Object::New(env);
  out.Set("group", StartWorker(env, g, "tensile-shm"));
  out.Set("pid", pid);
  out.Set("fd", g->fd);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(token));
  out.Set("token", std::string(hex));
  return out;
}

// shmSeal(group): rank 0 closes its descriptor once every rank has mapped the segment.
Napi::Value Seal(const Napi::CallbackInfo& info) {
  std::shared_ptr<Group> g = AsGroup<Group>(info.Env(), info[0]);
  if (g->fd >= 0) {
    close(g->fd);
    g->fd = -1;
  }
  return info.Env().Undefined();
}

// shmSubmit(group, kind, dtype, op, root, count, send, recv, timeoutMs) → Promise<{ ok, code, message, peer }>
Napi::Value Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Destroyed());
  auto t = std::make_unique<Task>(env);
  CollectiveArgs(info, g->world, t.get());
  CollectiveBuffers(info, g->world, t.get());
  t->keep.push_back(Napi::Persistent(info[0]));
  Napi::Promise p = t->deferred.Promise();
  if (g->IsSingleStep(t.get())) {
    // Latency path: with nothing queued or running, begin (and perhaps finish) the op on this thread.
    bool mine = false;
    {
      std::lock_guard<std::mutex> lock(g->mu);
      if (g->queue.empty() && !g->busy && !g->exited) mine = g->busy = true;
    }
    if (mine) {
      const bool done = g->TryInline(t.get());
      {
        std::lock_guard<std::mutex> lock(g->mu);
        if (!done) g->queue.push_front(t.get());
        g->busy = false;
      }
      g->cv.notify_one();
      if (done) {
        t->deferred.Resolve(ResultObject(env, t->result));
        return p;
      }
      t.release();
      g->Hold(env);
      return p;
    }
  }
  return g->Enqueue(env, std::move(t));
}

// shmDestroy(group) → Promise: runs after every queued op, marks this rank as gone, unmaps, ends the thread.
Napi::Value Destroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Result{});
  g->closed_js = true;
  if (g->fd >= 0) {
    close(g->fd);
    g->fd = -1;
  }
  auto* t = new Task(env);
  t->destroy = true;
  t->keep.push_back(Napi::Persistent(info[0]));
  Napi::Promise p = t->deferred.Promise();
  if (!g->Push(t)) {
    delete t;
    return Resolved(env, Result{});
  }
  g->Hold(env);
  return p;
}

// shmReduce(dtype, op, dst, srcs[], divisor): the vectorised kernel on the JS thread (tests and the benchmark).
Napi::Value ReduceJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int dtype = IntArg(info, 0, "dtype", 0, kInt32);
  const int op = IntArg(info, 1, "op", 0, kAvg);
  if (!info[2].IsTypedArray() || !info[3].IsArray()) throw Napi::TypeError::New(env, "expected dst, srcs[]");
  Napi::TypedArray dst = info[2].As<Napi::TypedArray>();
  Napi::Array srcs = info[3].As<Napi::Array>();
  const size_t es = DtypeSize(dtype);
  const size_t count = dst.ByteLength() / es;
  if (srcs.Length() == 0 || srcs.Length() > 256) throw Napi::RangeError::New(env, "expected 1 to 256 sources");
  std::vector<const void*> ptrs;
  for (uint32_t i = 0; i < srcs.Length(); i++) {
    Napi::Value v = srcs.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().ByteLength() < count * es)
      throw Napi::RangeError::New(env, "source " + std::to_string(i) + " is shorter than dst");
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    ptrs.push_back(TypedArrayBytes(a));
  }
  Reduce(dtype, op, TypedArrayBytes(dst), ptrs.data(), static_cast<int>(ptrs.size()), count,
         IntArg(info, 4, "divisor", 1, 1 << 30));
  return env.Undefined();
}

}  // namespace

void InitShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmOpen", Napi::Function::New(env, Open));
  exports.Set("shmSeal", Napi::Function::New(env, Seal));
  exports.Set("shmSubmit", Napi::Function::New(env, Submit));
  exports.Set("shmFail", Napi::Function::New(env, FailJs<Group>));  // shmFail(group, code, message, peer)
  exports.Set("shmDestroy", Napi::Function::New(env, Destroy));
  exports.Set("shmReduce", Napi::Function::New(env, ReduceJs));
}

}  // namespace tensile
