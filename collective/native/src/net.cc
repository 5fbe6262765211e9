// Native socket data plane for CPU collectives across hosts (TypeScript face: collective/native/addon.ts, used by
// collective/net-plane.ts).
//
// Connections: every rank listens on a native TCP socket (netOpen) and publishes host:port and a random token in the
// store; on the group's worker thread (netConnect) rank r connects to every rank q < r, sends a hello (magic, q's
// token, r) and waits for q's acknowledgement; it accepts the connections of every q > r, checking the token and
// that q is expected and new (anything else is closed and ignored: a stray connection cannot break the setup). The
// result is a full mesh of TCP streams, then switched to non-blocking with TCP_NODELAY and 4 MiB buffers.
//
// Frames: every message is a 40-byte header (magic, op sequence number, op descriptor: kind, dtype, op, root, count;
// step number; payload bytes) and its payload. A receiver checks each header against its own op: a bad magic or
// length is a corrupt stream (PEER_LOST naming the sender: that link cannot be trusted any more); a different
// descriptor is a mismatch (INVALID_ARGUMENT naming both sides). Either ends the plane: the streams are out of step,
// so every later op fails the same way (the TS side then fails the whole world, as a timeout does).
//
// Algorithms (n ranks): allreduce ≤ small_bytes: recursive doubling (extra ranks of a non-power of two fold in and
// out); larger: ring reduce-scatter + ring allgather, n−1 steps each, the received chunk reduced segment by segment
// while the rest is still arriving. reduceScatter / allgather: the same ring phases. broadcast: a pipelined chain
// from the root in segments. reduce: the ring reduce-scatter then a gather of the chunks to the root (small buffers:
// recursive doubling), on a scratch copy for non-roots. barrier: recursive doubling of headers alone. Every exchange
// sends one frame and receives one frame at once (poll on both sockets), so the ring never deadlocks on full socket
// buffers.
//
// Threads and failures (the queue, the worker thread and the completions are worker-group.h's, shared with shm.cc):
// one worker thread per group runs queued operations in order; completions settle promises
// through a ThreadSafeFunction; the typed arrays are held (references) until then. A wait ends early when the JS side
// fails the group (netFail: abort, or the TCP control sockets saw a peer go; an eventfd wakes the poll), a data socket
// closes or errs (PEER_LOST naming the peer), or the op's deadline passes (TIMEOUT). After a failure every queued and
// later op fails the same way.
// Longer than ~500 lines on purpose: the connection setup, the frame protocol and every collective of the plane share
// the Group's private state and invariants; they are one unit, with the reductions kept apart in reduce.cc.
#include <arpa/inet.h>
#include <fcntl.h>
#include <napi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "args.h"
#include "reduce.h"
#include "worker-group.h"

namespace tensile {
namespace {

constexpr uint32_t kFrameMagic = 0x54454e54u;  // "TNET"
constexpr uint32_t kHelloMagic = 0x4c454854u;  // "THEL"
constexpr int kHelloMs = 10000;  // an accepted connection must say hello within this

// The socket plane's own tasks, after the collectives (worker-group.h).
enum NetKind { kConnect = kBarrier + 1, kInject, kDestroy };

struct Frame {
  uint32_t magic, seq;
  uint8_t kind, dtype, op, pad;
  uint32_t root;
  uint64_t count;
  uint32_t step, pad2;
  uint64_t bytes;
};
static_assert(sizeof(Frame) == 40, "frame header layout");

struct Hello {
  uint32_t magic, rank;
  uint64_t token;
};

struct PeerAddr {
  std::string host;
  int port = 0;
  uint64_t token = 0;
};

struct Task : TaskBase {
  explicit Task(Napi::Env env) : TaskBase(env) {}
  int divisor = 0;              // what avg divides by
  std::vector<PeerAddr> peers;  // kConnect
  std::vector<uint8_t> raw;     // kInject
};

// The queue, the worker thread's life and the JS-facing plumbing are WorkerGroup's (worker-group.h).
struct Group : WorkerGroup<Group, Task> {
  static constexpr const char* kHandleName = "socket-plane";
  int world = 0, rank = 0;
  size_t small_bytes = 0, seg_bytes = 0;
  uint64_t token = 0;
  int listen_fd = -1, wake_fd = -1;
  std::vector<int> fds;  // one stream per peer (-1 for this rank)
  // Worker only.
  uint32_t seq = 0;
  Result dead;
  // Scratch buffers, grown to the largest op so far and kept for the group's life.
  std::vector<uint8_t> tmp, tmp2, tmp3, scratch;
  // One segment (seg_bytes): received pieces that are reduced at once land here, so the reduction reads them from the
  // cache instead of from a chunk-sized buffer in memory.
  std::vector<uint8_t> stage;

  void Run();
  void Execute(Task* t);
  bool Connect(Task* t);
  bool Inject(Task* t);
  bool Fail(const Result& why);
  bool CheckFailed(Task* t);
  bool Exchange(Task* t, uint32_t sstep, int to, const uint8_t* sbuf, size_t slen, uint32_t rstep, int from,
                uint8_t* rbuf, size_t rlen, const std::function<void(size_t, size_t)>& on_seg);
  bool CheckHeader(Task* t, int from, const Frame& h, uint32_t step, size_t rlen);
  bool Closed(Task* t, int peer, const std::string& why);
  bool AllReduce(Task* t, uint8_t* buf, int to_root);
  bool RecursiveDoubling(Task* t, uint8_t* buf);
  bool Ring(Task* t, uint8_t* buf, int to_root);
  bool Broadcast(Task* t);
  bool AllGather(Task* t);
  bool ReduceScatter(Task* t);
  void CloseAll();
  void WakeWorker();
  void OnReleased();
};

inline int Mod(int a, int n) { return ((a % n) + n) % n; }

// Marks the group dead with `why` (the first failure wins); always returns false, for `return Fail(...)`.
bool Group::Fail(const Result& why) {
  if (dead.ok) dead = why;
  return false;
}

// Adopts a failure the JS side asked for (netFail). True when the group is dead (t->result is then set by Execute).
bool Group::CheckFailed(Task* t) {
  if (!dead.ok) return true;
  if (fail_requested.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(mu);
    dead = requested;
    return true;
  }
  if (Clock::now() >= t->deadline) {
    const char* what = t->kind < 6 ? kKindNames[t->kind] : "connecting the socket plane";
    dead = Result{false, "TIMEOUT",
                  std::string(what) + " on rank " + std::to_string(rank) + " did not complete within " +
                      std::to_string(t->timeout_ms) + " ms (native socket plane)",
                  -1};
    return true;
  }
  return false;
}

Result Lost(int peer, int self, const std::string& why) {
  return Result{false, "PEER_LOST",
                "rank " + std::to_string(peer) + ": " + why + " (native socket plane, seen by rank " +
                    std::to_string(self) + ")",
                peer};
}

bool Group::CheckHeader(Task* t, int from, const Frame& h, uint32_t step, size_t rlen) {
  if (h.magic != kFrameMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", h.magic);
    return Fail(Lost(from, rank,
                     "corrupt frame on its data socket (magic 0x" + std::string(hex) +
                         ", expected 0x54454e54); the stream cannot be trusted any more"));
  }
  if (h.kind != t->kind || h.dtype != t->dtype || h.count != t->count ||
      (t->kind != kBroadcast && t->kind != kAllGather && t->kind != kBarrier && h.op != t->op) ||
      ((t->kind == kBroadcast || t->kind == kReduce) && h.root != static_cast<uint32_t>(t->root))) {
    const std::string theirs = Describe(h.kind, h.dtype, h.op, static_cast<int>(h.root), h.count);
    const std::string mine = Describe(t->kind, t->dtype, t->op, t->root, t->count);
    const bool first = from < rank;
    return Fail(Result{false, "INVALID_ARGUMENT",
                       "collective mismatch between ranks: rank " + std::to_string(first ? from : rank) + " called " +
                           (first ? theirs : mine) + " but rank " + std::to_string(first ? rank : from) + " called " +
                           (first ? mine : theirs) +
                           " (every rank must call the same collectives in the same order, with the same sizes; the "
                           "socket plane cannot continue after it)",
                       from});
  }
  if (h.seq != seq || h.step != step || h.bytes != rlen) {
    return Fail(Result{false, "INVALID_ARGUMENT",
                       "rank " + std::to_string(from) + " sent collective #" + std::to_string(h.seq) + " step " +
                           std::to_string(h.step) + " with " + std::to_string(h.bytes) + " bytes, but rank " +
                           std::to_string(rank) + " expected #" + std::to_string(seq) + " step " +
                           std::to_string(step) + " with " + std::to_string(rlen) +
                           " bytes (tuning differs between ranks, or the streams are out of step)",
                       from});
  }
  return true;
}

// A data socket to `peer` closed or failed. A rank closes its sockets when it leaves after a failure it has already
// told the world about over the TCP control connections (the lost rank, a timeout), so the notice (netFail) usually
// arrives here within milliseconds and names the real cause; wait for it up to kCloseGraceMs before blaming `peer`.
constexpr int kCloseGraceMs = 1000;

bool Group::Closed(Task* t, int peer, const std::string& why) {
  const auto until = std::min(t->deadline, Clock::now() + std::chrono::milliseconds(kCloseGraceMs));
  while (!fail_requested.load(std::memory_order_acquire) && Clock::now() < until) {
    pollfd p{wake_fd, POLLIN, 0};
    poll(&p, 1, 20);
  }
  if (CheckFailed(t) && dead.code != "TIMEOUT") return false;
  dead = Result{};
  return Fail(Lost(peer, rank, why));
}

// Sends one frame (step sstep: header + slen bytes of sbuf) to rank `to` and receives one frame (step rstep, rlen
// payload bytes) from rank `from` into rbuf, both at once (either may be -1: none). With `on_seg`, rbuf is one
// segment long (stage): every seg_bytes-aligned piece of the payload lands at its start and is handed to
// on_seg(offset, bytes) as soon as it has arrived (the tail too), before the next one is read, so that a reduction
// reads it from the cache. Blocks this worker thread; false when the group failed (dead says why).
bool Group::Exchange(Task* t, uint32_t sstep, int to, const uint8_t* sbuf, size_t slen, uint32_t rstep, int from,
                     uint8_t* rbuf, size_t rlen, const std::function<void(size_t, size_t)>& on_seg) {
  Frame hs{};
  hs.magic = kFrameMagic;
  hs.seq = seq;
  hs.kind = static_cast<uint8_t>(t->kind);
  hs.dtype = static_cast<uint8_t>(t->dtype);
  hs.op = static_cast<uint8_t>(t->op);
  hs.root = static_cast<uint32_t>(t->root);
  hs.count = t->count;
  hs.step = sstep;
  hs.bytes = slen;
  Frame hr{};
  size_t sent = 0, got = 0, done_to = 0;
  const size_t send_total = to >= 0 ? sizeof hs + slen : 0;
  const size_t recv_total = from >= 0 ? sizeof hr + rlen : 0;
  bool header_ok = false;
  for (;;) {
    if (CheckFailed(t)) return false;
    bool progress = false;
    if (sent < send_total) {
      iovec iov[2];
      int n = 0;
      if (sent < sizeof hs) iov[n++] = {reinterpret_cast<uint8_t*>(&hs) + sent, sizeof hs - sent};
      const size_t poff = sent > sizeof hs ? sent - sizeof hs : 0;
      if (slen > poff) iov[n++] = {const_cast<uint8_t*>(sbuf) + poff, slen - poff};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = n;
      const ssize_t w = sendmsg(fds[to], &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        sent += static_cast<size_t>(w);
        progress = true;
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return Closed(t, to, Errno("sending on its data socket failed"));
      }
    }
    if (got < recv_total) {
      ssize_t r;
      if (got < sizeof hr) {
        r = recv(fds[from], reinterpret_cast<uint8_t*>(&hr) + got, sizeof hr - got, MSG_DONTWAIT);
      } else if (on_seg) {
        // rbuf holds one segment: read up to its end; the loop below hands it to on_seg before the next read.
        const size_t at = (got - sizeof hr) % seg_bytes;
        r = recv(fds[from], rbuf + at, std::min(seg_bytes - at, recv_total - got), MSG_DONTWAIT);
      } else {
        r = recv(fds[from], rbuf + (got - sizeof hr), recv_total - got, MSG_DONTWAIT);
      }
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        const std::string why = r == 0 ? std::string("closed its data connection (its process exited or left the group)")
                                       : Errno("receiving on its data socket failed");
        return Closed(t, from, why);
      }
      if (r > 0) {
        got += static_cast<size_t>(r);
        progress = true;
        if (!header_ok && got >= sizeof hr) {
          if (!CheckHeader(t, from, hr, rstep, rlen)) return false;
          header_ok = true;
        }
        if (header_ok && on_seg) {
          const size_t have = got - sizeof hr;
          while (done_to < rlen && (have - done_to >= seg_bytes || have == rlen)) {
            const size_t n = std::min(seg_bytes, have - done_to);
            on_seg(done_to, n);
            done_to += n;
          }
        }
      }
    }
    if (sent >= send_total && got >= recv_total) return true;
    if (progress) continue;
    pollfd p[3];
    int np = 0;
    const bool same = to >= 0 && to == from;
    if (sent < send_total) p[np++] = {fds[to], static_cast<short>(POLLOUT | (same && got < recv_total ? POLLIN : 0)), 0};
    if (got < recv_total && !(same && sent < send_total)) p[np++] = {fds[from], POLLIN, 0};
    p[np++] = {wake_fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t->deadline - Clock::now()).count();
    const int wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left + 1, 100)));
    if (poll(p, static_cast<nfds_t>(np), wait_ms) < 0 && errno != EINTR)
      return Fail(Result{false, "PEER_LOST", Errno("poll on the data sockets failed"), -1});
  }
}

// In place on buf (count elements). The last reduction applies avg's divisor. Frame steps: 0 folds the extra ranks
// of a non-power of two in, 1 + i is doubling round i, 1 + log2(p) hands the result back to the folded ranks.
bool Group::RecursiveDoubling(Task* t, uint8_t* buf) {
  const size_t es = DtypeSize(t->dtype);
  const size_t bytes = t->count * es;
  if (tmp.size() < bytes) tmp.resize(bytes);
  const int op = t->op == kAvg ? kSum : t->op;
  int p = 1, rounds = 0;
  while (p * 2 <= world) {
    p *= 2;
    rounds++;
  }
  const int extra = world - p;
  const uint32_t unfold = static_cast<uint32_t>(1 + rounds);
  auto combine = [&]() {
    const void* srcs[2] = {buf, tmp.data()};
    if (bytes > 0) Reduce(t->dtype, op, buf, srcs, 2, t->count, 1);
  };
  int vrank = rank - extra;
  if (rank < 2 * extra) {
    if (rank % 2 == 0) {
      if (!Exchange(t, 0, rank + 1, buf, bytes, 0, -1, nullptr, 0, nullptr)) return false;
      if (!Exchange(t, 0, -1, nullptr, 0, unfold, rank + 1, buf, bytes, nullptr)) return false;
      vrank = -1;
    } else {
      if (!Exchange(t, 0, -1, nullptr, 0, 0, rank - 1, tmp.data(), bytes, nullptr)) return false;
      combine();
      vrank = rank / 2;
    }
  }
  if (vrank >= 0) {
    for (int i = 0; i < rounds; i++) {
      const int vpeer = vrank ^ (1 << i);
      const int peer = vpeer < extra ? vpeer * 2 + 1 : vpeer + extra;
      const uint32_t step = static_cast<uint32_t>(1 + i);
      // Both sides send their buffer before reducing into it: the reduction waits for the whole exchange.
      if (!Exchange(t, step, peer, buf, bytes, step, peer, tmp.data(), bytes, nullptr)) return false;
      combine();
    }
    if (rank < 2 * extra && !Exchange(t, unfold, rank - 1, buf, bytes, 0, -1, nullptr, 0, nullptr)) return false;
  }
  if (t->op == kAvg && bytes > 0) {
    const void* srcs[1] = {buf};
    Reduce(t->dtype, kAvg, buf, srcs, 1, t->count, t->divisor);
  }
  return true;
}

// Ring reduce-scatter then, when `to_root` < 0, ring allgather, in place on buf (count elements): after the
// reduce-scatter rank r holds the reduced chunk r+1. With `to_root` ≥ 0 (reduce) every rank sends its chunk to the
// root instead, which receives them one peer after the other (the others only wait on the root, so no cycle).
bool Group::Ring(Task* t, uint8_t* buf, int to_root) {
  const size_t es = DtypeSize(t->dtype);
  const int n = world;
  auto lo = [&](int c) { return t->count * static_cast<size_t>(c) / n; };
  auto len = [&](int c) { return lo(c + 1) - lo(c); };
  if (stage.size() < seg_bytes) stage.resize(seg_bytes);
  const int right = Mod(rank + 1, n), left = Mod(rank - 1, n);
  uint32_t step = 0;
  for (int s = 0; s < n - 1; s++) {
    const int sc = Mod(rank - s, n), rc = Mod(rank - s - 1, n);
    const bool last = s == n - 2;
    const int op = t->op == kAvg ? (last ? kAvg : kSum) : t->op;
    uint8_t* dst = buf + lo(rc) * es;
    const uint8_t* in = stage.data();
    const int dtype = t->dtype, divisor = t->divisor;
    auto reduce_seg = [&, dst, in, op, dtype, divisor](size_t off, size_t nb) {
      const void* srcs[2] = {dst + off, in};
      Reduce(dtype, op, dst + off, srcs, 2, nb / es, divisor);
    };
    if (!Exchange(t, step, right, buf + lo(sc) * es, len(sc) * es, step, left, stage.data(), len(rc) * es, reduce_seg))
      return false;
    step++;
  }
  if (to_root >= 0) {
    if (rank != to_root) {
      const int c = Mod(rank + 1, n);
      return Exchange(t, step, to_root, buf + lo(c) * es, len(c) * es, 0, -1, nullptr, 0, nullptr);
    }
    for (int q = 0; q < n; q++) {
      const int c = Mod(q + 1, n);
      if (q != rank && !Exchange(t, 0, -1, nullptr, 0, step, q, buf + lo(c) * es, len(c) * es, nullptr)) return false;
    }
    return true;
  }
  for (int s = 0; s < n - 1; s++) {
    const int sc = Mod(rank + 1 - s, n), rc = Mod(rank - s, n);
    if (!Exchange(t, step, right, buf + lo(sc) * es, len(sc) * es, step, left, buf + lo(rc) * es, len(rc) * es,
                  nullptr))
      return false;
    step++;
  }
  return true;
}

// allreduce into buf (`to_root` < 0), or reduce to rank `to_root` (large buffers: a reduce-scatter and a gather to the
// root; small ones: the whole recursive doubling, every rank ending with the result).
bool Group::AllReduce(Task* t, uint8_t* buf, int to_root) {
  const size_t bytes = t->count * DtypeSize(t->dtype);
  if (t->send != buf && bytes > 0) std::memcpy(buf, t->send, bytes);
  // Recursive doubling also for buffers too short to cut into one element per rank.
  if (bytes <= small_bytes || t->count < static_cast<size_t>(world)) return RecursiveDoubling(t, buf);
  return Ring(t, buf, to_root);
}

// A chain from the root, in segments: rank v (counted from the root) receives segment k from v−1 while it forwards
// segment k−1 to v+1.
bool Group::Broadcast(Task* t) {
  const size_t bytes = t->count * DtypeSize(t->dtype);
  const int v = Mod(rank - t->root, world);
  const int right = v < world - 1 ? Mod(rank + 1, world) : -1;
  const int left = v > 0 ? Mod(rank - 1, world) : -1;
  const size_t nseg = std::max<size_t>(1, (bytes + seg_bytes - 1) / seg_bytes);
  auto seg_off = [&](size_t k) { return std::min(bytes, k * seg_bytes); };
  auto seg_len = [&](size_t k) { return std::min(bytes, (k + 1) * seg_bytes) - seg_off(k); };
  for (size_t k = 0; k <= nseg; k++) {
    const bool sending = k >= 1 && right >= 0;
    const bool receiving = k < nseg && left >= 0;
    if (!sending && !receiving) continue;
    // The frame of segment j carries step j: sent at iteration j+1, received at iteration j.
    if (!Exchange(t, static_cast<uint32_t>(k - 1), sending ? right : -1, sending ? t->recv + seg_off(k - 1) : nullptr,
                  sending ? seg_len(k - 1) : 0, static_cast<uint32_t>(k), receiving ? left : -1,
                  receiving ? t->recv + seg_off(k) : nullptr, receiving ? seg_len(k) : 0, nullptr))
      return false;
  }
  return true;
}

bool Group::AllGather(Task* t) {
  const size_t b = t->count * DtypeSize(t->dtype);
  if (b > 0 && t->recv + rank * b != t->send) std::memmove(t->recv + rank * b, t->send, b);
  const int right = Mod(rank + 1, world), left = Mod(rank - 1, world);
  for (int s = 0; s < world - 1; s++) {
    const int sc = Mod(rank - s, world), rc = Mod(rank - s - 1, world);
    if (!Exchange(t, static_cast<uint32_t>(s), right, t->recv + sc * b, b, static_cast<uint32_t>(s), left,
                  t->recv + rc * b, b, nullptr))
      return false;
  }
  return true;
}

// Ring reduce-scatter: the block a rank forwards at step s+1 is the one it reduced at step s (its own input block
// op what arrived), so two alternating accumulators suffice; the last step reduces into the output.
bool Group::ReduceScatter(Task* t) {
  const size_t es = DtypeSize(t->dtype);
  const size_t b = t->count * es;
  if (stage.size() < seg_bytes) stage.resize(seg_bytes);
  if (tmp2.size() < b) tmp2.resize(b);
  if (tmp3.size() < b) tmp3.resize(b);
  const int right = Mod(rank + 1, world), left = Mod(rank - 1, world);
  const uint8_t* out = t->send + Mod(rank - 1, world) * b;
  for (int s = 0; s < world - 1; s++) {
    const int rc = Mod(rank - s - 2, world);
    const bool last = s == world - 2;
    const int op = t->op == kAvg ? (last ? kAvg : kSum) : t->op;
    uint8_t* dst = last ? t->recv : (s % 2 == 0 ? tmp2.data() : tmp3.data());
    const uint8_t* mine = t->send + rc * b;
    const uint8_t* in = stage.data();
    const int dtype = t->dtype, divisor = t->divisor;
    auto reduce_seg = [&, dst, mine, in, op, dtype, divisor](size_t off, size_t nb) {
      const void* srcs[2] = {mine + off, in};
      Reduce(dtype, op, dst + off, srcs, 2, nb / es, divisor);
    };
    if (!Exchange(t, static_cast<uint32_t>(s), right, out, b, static_cast<uint32_t>(s), left, stage.data(), b,
                  reduce_seg))
      return false;
    out = dst;
  }
  return true;
}

bool SetNonBlocking(int fd, bool on) {
  const int fl = fcntl(fd, F_GETFL, 0);
  return fl >= 0 && fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) == 0;
}

// Buffer sizes stay the kernel's to tune (net.ipv4.tcp_rmem/tcp_wmem): a fixed SO_SNDBUF/SO_RCVBUF turns autotuning
// off and caps the window, which a link with a long round trip needs larger; on loopback, fixed 4 MiB buffers were
// no faster (64 MB, 2 simulated hosts, three A/B pairs: 33.5-34.1 ms against 33.9-37.6 ms).
void TuneSocket(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Waits for `events` on fd until the task's deadline or a failure (false; dead says why), or until `until` (false,
// dead still ok).
bool WaitFd(Group* g, Task* t, int fd, short events, Clock::time_point until = Clock::time_point::max()) {
  for (;;) {
    if (g->CheckFailed(t) || Clock::now() >= until) return false;
    pollfd p[2] = {{fd, events, 0}, {g->wake_fd, POLLIN, 0}};
    const int r = poll(p, 2, 100);
    if (r < 0 && errno != EINTR) return g->Fail(Result{false, "PEER_LOST", Errno("poll during connection setup"), -1});
    if (r > 0 && p[0].revents != 0) return true;
  }
}

// Reads or writes exactly n bytes on a non-blocking setup socket; false on failure or after `until` (*why set), or at
// the task's deadline or a failure of the group (*why empty; dead says why).
bool SetupIo(Group* g, Task* t, int fd, void* data, size_t n, bool writing, std::string* why,
             Clock::time_point until = Clock::time_point::max()) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = writing ? send(fd, static_cast<uint8_t*>(data) + done, n - done, MSG_NOSIGNAL)
                              : recv(fd, static_cast<uint8_t*>(data) + done, n - done, 0);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      *why = "the connection closed during the handshake";
      return false;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      *why = Errno(writing ? "send" : "recv");
      return false;
    }
    if (!WaitFd(g, t, fd, writing ? POLLOUT : POLLIN, until)) {
      *why = g->dead.ok ? "no handshake within " + std::to_string(kHelloMs) + " ms" : "";
      return false;
    }
  }
  return true;
}

bool Group::Connect(Task* t) {
  // Dial every lower rank.
  for (int q = 0; q < rank; q++) {
    const PeerAddr& a = t->peers[q];
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int gai = getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res);
    if (gai != 0 || res == nullptr)
      return Fail(Lost(q, rank, "cannot resolve its data address " + a.host + ": " + gai_strerror(gai)));
    const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      freeaddrinfo(res);
      return Fail(Result{false, "PEER_LOST", Errno("socket"), q});
    }
    TuneSocket(fd);
    SetNonBlocking(fd, true);
    const int c = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    fds[q] = fd;
    if (c != 0 && errno != EINPROGRESS)
      return Fail(Lost(q, rank, Errno("connecting to its data address " + a.host + ":" + std::to_string(a.port))));
    if (c != 0) {
      if (!WaitFd(this, t, fd, POLLOUT)) return false;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        errno = err;
        return Fail(Lost(q, rank, Errno("connecting to its data address " + a.host + ":" + std::to_string(a.port))));
      }
    }
    Hello h{kHelloMagic, static_cast<uint32_t>(rank), a.token};
    Hello ack{};
    std::string why;
    if (!SetupIo(this, t, fd, &h, sizeof h, true, &why) || !SetupIo(this, t, fd, &ack, sizeof ack, false, &why)) {
      if (why.empty()) return false;
      return Fail(Lost(q, rank, "handshake on its data socket failed: " + why));
    }
    if (ack.magic != kHelloMagic || ack.rank != static_cast<uint32_t>(q) || ack.token != a.token)
      return Fail(Lost(q, rank, "answered the handshake with a wrong acknowledgement (not this group's listener?)"));
  }
  // Accept every higher rank; a connection that does not carry this group's hello is closed and ignored.
  int missing = world - 1 - rank;
  while (missing > 0) {
    if (!WaitFd(this, t, listen_fd, POLLIN)) {
      if (dead.code == "TIMEOUT") {
        std::string who;
        for (int q = rank + 1; q < world; q++)
          if (fds[q] < 0) who += (who.empty() ? "" : ", ") + std::to_string(q);
        dead.message += "; ranks not connected: " + who;
      }
      return false;
    }
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    TuneSocket(fd);
    Hello h{};
    std::string why;
    // A peer sends its hello right after connecting; anything silent longer (a port scanner, a stray client) is
    // dropped, so it cannot hold the accept loop until the deadline.
    const auto hello_until = Clock::now() + std::chrono::milliseconds(kHelloMs);
    if (!SetupIo(this, t, fd, &h, sizeof h, false, &why, hello_until)) {
      close(fd);
      if (why.empty()) return false;
      continue;
    }
    const int q = static_cast<int>(h.rank);
    if (h.magic != kHelloMagic || h.token != token || q <= rank || q >= world || fds[q] >= 0) {
      close(fd);
      continue;
    }
    Hello ack{kHelloMagic, static_cast<uint32_t>(rank), token};
    if (!SetupIo(this, t, fd, &ack, sizeof ack, true, &why)) {
      close(fd);
      if (why.empty()) return false;
      continue;
    }
    fds[q] = fd;
    missing--;
  }
  close(listen_fd);
  listen_fd = -1;
  for (int q = 0; q < world; q++)
    if (q != rank) SetNonBlocking(fds[q], true);
  return true;
}

bool Group::Inject(Task* t) {
  const int q = t->root;
  size_t done = 0;
  while (done < t->raw.size()) {
    const ssize_t w = send(fds[q], t->raw.data() + done, t->raw.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      done += static_cast<size_t>(w);
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      return Fail(Lost(q, rank, Errno("writing raw bytes failed")));
    } else if (!WaitFd(this, t, fds[q], POLLOUT)) {
      return false;
    }
  }
  return true;
}

void Group::Execute(Task* t) {
  if (CheckFailed(t)) {
    t->result = dead;
    return;
  }
  bool ok = false;
  if (t->kind == kConnect) {
    ok = Connect(t);
  } else if (t->kind == kInject) {
    ok = Inject(t);
  } else {
    seq++;
    switch (t->kind) {
      case kAllReduce: ok = AllReduce(t, t->recv, -1); break;
      case kReduce: {
        // Non-roots reduce into scratch memory: their buffer must stay as it was.
        uint8_t* buf = t->recv;
        if (rank != t->root) {
          if (scratch.size() < t->count * DtypeSize(t->dtype)) scratch.resize(t->count * DtypeSize(t->dtype));
          buf = scratch.data();
        }
        ok = AllReduce(t, buf, t->root);
        break;
      }
      case kBroadcast: ok = Broadcast(t); break;
      case kAllGather: ok = AllGather(t); break;
      case kReduceScatter: ok = ReduceScatter(t); break;
      case kBarrier: ok = RecursiveDoubling(t, nullptr); break;
      default: Fail(Result{false, "INVALID_ARGUMENT", "unknown operation " + std::to_string(t->kind), -1}); break;
    }
  }
  if (!ok) t->result = dead;
}

void Group::CloseAll() {
  for (int& fd : fds) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  if (listen_fd >= 0) close(listen_fd);
  listen_fd = -1;
}

void Group::Run() {
  for (;;) {
    Task* t = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [this] { return stop || !queue.empty(); });
      if (stop) {
        exited = true;
        break;
      }
      t = queue.front();
      queue.pop_front();
      if (t->kind == kDestroy) exited = true;
    }
    if (t->kind == kDestroy) {
      CloseAll();
      t->result = Result{};
      tsfn.NonBlockingCall(t);
      break;
    }
    Execute(t);
    tsfn.NonBlockingCall(t);
  }
  FailQueued();
  CloseAll();
  FinishThread();
}

// After a requested failure (WorkerGroup::RequestFail, JS thread): wakes the worker's poll on the data sockets.
void Group::WakeWorker() {
  const uint64_t one = 1;
  if (write(wake_fd, &one, sizeof one) < 0) {
    // The eventfd counter cannot overflow with one write per group; the poll timeout (100 ms) is the fallback.
  }
}

// The tsfn is finalized (JS thread): the worker has ended, so nobody polls the eventfd any more.
void Group::OnReleased() {
  if (wake_fd >= 0) close(wake_fd);
  wake_fd = -1;
}


std::string Hex(uint64_t v) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(v));
  return hex;
}

uint64_t ParseToken(Napi::Env env, Napi::Value v, const std::string& what) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s.size() != 16 || s.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw Napi::TypeError::New(env, what + " token " + s + ": expected 16 lowercase hex digits");
  return std::stoull(s, nullptr, 16);
}

// netOpen(world, rank, host, smallBytes, segmentBytes) → { group, port, token }: binds the listening socket (port 0 on
// `host`) and starts the group's worker thread. Synchronous (a few system calls); throws Error naming the failed call.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = std::make_shared<Group>();
  g->world = IntArg(info, 0, "world", 2, 1024);
  g->rank = IntArg(info, 1, "rank", 0, g->world - 1);
  if (!info[2].IsString()) throw Napi::TypeError::New(env, "host must be a string");
  const std::string host = info[2].As<Napi::String>().Utf8Value();
  g->small_bytes = static_cast<size_t>(IntArg(info, 3, "smallBytes", 0, 1 << 30));
  const int seg = IntArg(info, 4, "segmentBytes", 4096, 1 << 30);
  g->seg_bytes = static_cast<size_t>(seg) / 64 * 64;  // a whole number of elements of every dtype
  g->fds.assign(g->world, -1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int gai = getaddrinfo(host.c_str(), "0", &hints, &res);
  if (gai != 0 || res == nullptr)
    throw Napi::Error::New(env, "socket plane: cannot resolve listen address " + host + ": " + gai_strerror(gai));
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    throw Napi::Error::New(env, Errno("socket plane: socket"));
  }
  TuneSocket(fd);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 256) != 0) {
    const std::string e = Errno("socket plane: bind/listen on " + host);
    freeaddrinfo(res);
    close(fd);
    throw Napi::Error::New(env, e);
  }
  freeaddrinfo(res);
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  g->listen_fd = fd;
  g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g->wake_fd < 0) {
    close(fd);
    throw Napi::Error::New(env, Errno("socket plane: eventfd"));
  }
  std::random_device rd;
  g->token = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  Napi::Object out = Napi::Object::New(env);
  out.Set("group", StartWorker(env, g, "tensile-net"));
  out.Set("port", port);
  out.Set("token", Hex(g->token));
  return out;
}

// netConnect(group, peers: ({host, port, token} | null)[], timeoutMs) → Promise<result>: builds the mesh (see top).
Napi::Value ConnectJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Destroyed());
  if (!info[1].IsArray() || info[1].As<Napi::Array>().Length() != static_cast<uint32_t>(g->world))
    throw Napi::TypeError::New(env, "peers must be an array of " + std::to_string(g->world) + " addresses");
  auto t = std::make_unique<Task>(env);
  t->kind = kConnect;
  Napi::Array peers = info[1].As<Napi::Array>();
  t->peers.resize(g->world);
  for (int q = 0; q < g->world; q++) {
    if (q == g->rank) continue;
    Napi::Value v = peers.Get(static_cast<uint32_t>(q));
    if (!v.IsObject()) throw Napi::TypeError::New(env, "peer " + std::to_string(q) + ": expected {host, port, token}");
    Napi::Object o = v.As<Napi::Object>();
    t->peers[q].host = o.Get("host").ToString().Utf8Value();
    const double port = o.Get("port").ToNumber().DoubleValue();
    if (!(port >= 1 && port <= 65535))
      throw Napi::RangeError::New(env, "peer " + std::to_string(q) + ": port " + std::to_string(port) +
                                           ": expected an integer in [1, 65535]");
    t->peers[q].port = static_cast<int>(port);
    t->peers[q].token = ParseToken(env, o.Get("token"), "peer " + std::to_string(q));
  }
  t->timeout_ms = TimeoutArg(info, 2);
  t->deadline = Clock::now() + std::chrono::milliseconds(t->timeout_ms);
  return g->Enqueue(env, std::move(t));
}

// netSubmit(group, kind, dtype, op, root, count, send, recv, timeoutMs, divisor) → Promise<result>. divisor: what avg
// divides by (0: the group's world size; the hierarchical path passes the whole world's).
Napi::Value Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Destroyed());
  auto t = std::make_unique<Task>(env);
  CollectiveArgs(info, g->world, t.get());
  const int divisor = info.Length() > 9 && !info[9].IsUndefined() ? IntArg(info, 9, "divisor", 0, 1 << 30) : 0;
  t->divisor = divisor > 0 ? divisor : g->world;
  CollectiveBuffers(info, g->world, t.get());
  if (t->kind == kBarrier) t->count = 0;
  t->keep.push_back(Napi::Persistent(info[0]));
  return g->Enqueue(env, std::move(t));
}

// netInject(group, peer, bytes) → Promise: writes raw bytes on the data socket to `peer`, in queue order (fault tests:
// the peer must reject them as a corrupt frame).
Napi::Value InjectJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Destroyed());
  auto t = std::make_unique<Task>(env);
  t->kind = kInject;
  t->root = IntArg(info, 1, "peer", 0, g->world - 1);
  if (t->root == g->rank) throw Napi::RangeError::New(env, "peer must not be this rank");
  if (!info[2].IsTypedArray()) throw Napi::TypeError::New(env, "bytes must be a typed array");
  Napi::TypedArray a = info[2].As<Napi::TypedArray>();
  const uint8_t* p = TypedArrayBytes(a);
  t->raw.assign(p, p + a.ByteLength());
  t->timeout_ms = 10000;
  t->deadline = Clock::now() + std::chrono::milliseconds(t->timeout_ms);
  return g->Enqueue(env, std::move(t));
}

// netDestroy(group) → Promise: runs after every queued op, closes the sockets, ends the thread.
Napi::Value DestroyJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Group> g = AsGroup<Group>(env, info[0]);
  if (g->closed_js) return Resolved(env, Result{});
  g->closed_js = true;
  auto t = std::make_unique<Task>(env);
  t->kind = kDestroy;
  t->keep.push_back(Napi::Persistent(info[0]));
  Napi::Value p = g->Enqueue(env, std::move(t));
  return p;
}

}  // namespace

void InitNet(Napi::Env env, Napi::Object exports) {
  exports.Set("netOpen", Napi::Function::New(env, Open));
  exports.Set("netConnect", Napi::Function::New(env, ConnectJs));
  exports.Set("netSubmit", Napi::Function::New(env, Submit));
  exports.Set("netInject", Napi::Function::New(env, InjectJs));
  exports.Set("netFail", Napi::Function::New(env, FailJs<Group>));  // netFail(group, code, message, peer)
  exports.Set("netDestroy", Napi::Function::New(env, DestroyJs));
}

}  // namespace tensile
