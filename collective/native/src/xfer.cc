// Shared-memory transfers for RPC frames between two processes of one host (TypeScript side: rpc/shm-transfer.ts).
//
// The sender keeps a pool of segments: anonymous memfds (never visible in /dev/shm), each mapped once with all its
// pages allocated. A large frame is copied into an idle segment, and the sender tells the receiver its pid, the
// descriptor number, the file's inode and size over the data socket. The receiver opens /proc/<pid>/fd/<fd> (the
// kernel re-opens the same memfd, as when a descriptor is passed over a Unix socket), checks inode and size, maps it
// (and keeps that mapping for the segment's later frames), and hands the frame to JavaScript in place: the tensors
// decoded from it are views on the shared pages. One copy per transfer (the socket path makes two, plus a fresh
// receive buffer whose pages, on these machines, cost more than the copies), and the segment goes back to the sender
// when the receiver's garbage collector drops the frame (see Seg).
//
// Whether a peer can open our descriptors at all (same host, same PID namespace, /proc mounted, permission) is
// probed once per connection with a small memfd holding a random token (xferProbe/xferCheck).
//
// Everything here is synchronous on the JS thread, except the release of a view (see SegView): the copy is the
// transfer (the socket path copies on this thread too, into the kernel), and opening/mapping are a few syscalls.
// Memfds go with the last descriptor or mapping, so nothing outlives the two processes on any exit path, SIGKILL
// included.
#include <fcntl.h>
#include <napi.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <v8.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "memfd.h"

namespace tensile {
namespace {

uint32_t U32Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<uint32_t>(IntArg(info, i, name, 0, 4294967295LL));
}

size_t BytesArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<size_t>(IntArg(info, i, name, 1, 4294967295LL));
}

// xferProbe(token: Buffer) -> fd. A memfd holding `token`, kept open by the caller for the life of its listener.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) throw Napi::TypeError::New(env, "token must be a Buffer");
  auto token = info[0].As<Napi::Buffer<uint8_t>>();
  const int fd = MemfdCreate("tensile-rpc-probe");
  if (fd < 0) throw Napi::Error::New(env, Errno("memfd_create"));
  if (pwrite(fd, token.Data(), token.Length(), 0) != static_cast<ssize_t>(token.Length())) {
    const std::string e = Errno("write probe");
    close(fd);
    throw Napi::Error::New(env, e);
  }
  return Napi::Number::New(env, fd);
}

// xferCheck(pid, fd, token: Buffer) -> boolean: the peer's probe is readable here and holds `token`.
Napi::Value Check(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t pid = U32Arg(info, 0, "pid");
  const uint32_t fd = U32Arg(info, 1, "fd");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "token must be a Buffer");
  auto token = info[2].As<Napi::Buffer<uint8_t>>();
  const int f = OpenPeerFd(pid, fd, O_RDONLY);
  if (f < 0) return Napi::Boolean::New(env, false);
  std::string got(token.Length() + 1, '\0');
  const ssize_t n = pread(f, &got[0], got.size(), 0);
  close(f);
  return Napi::Boolean::New(env, n == static_cast<ssize_t>(token.Length()) &&
                                     std::memcmp(got.data(), token.Data(), token.Length()) == 0);
}

// A segment: a memfd and this process's mapping of it, laid out as
//   header (64 bytes: u32 busy) | frame bytes
// `busy` is the only shared state: the sender claims an idle segment (0 -> 1) before it writes a frame into it; the
// receiver's view of that frame clears it (release) when the garbage collector finalizes the view, i.e. when the
// user holds no tensor of that frame any more. Until then the sender uses other segments, so a received tensor is
// never overwritten. A mapping lives while its handle or any view of it lives (refs: handles go on the JS thread,
// views wherever V8 frees their memory, which may be one of its background threads).
constexpr size_t kHeaderBytes = 64;

struct Seg {
  int fd = -1;  // -1 on the receiving side (the mapping keeps the file alive)
  uint8_t* addr = nullptr;
  size_t bytes = 0;
  std::atomic<int> refs{1};
  std::atomic<uint32_t>* busy() { return reinterpret_cast<std::atomic<uint32_t>*>(addr); }
  void Unref() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) > 1) return;
    if (addr) munmap(addr, bytes);
    if (fd >= 0) close(fd);
    delete this;
  }
};

struct SegHandle {
  Seg* seg;
};

Seg* AsSeg(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(env, "expected a shared-memory segment handle");
  Seg* s = v.As<Napi::External<SegHandle>>().Data()->seg;
  if (!s) throw Napi::Error::New(env, "the shared-memory segment was destroyed");
  return s;
}

// Handles do not report the mapping to the garbage collector: pool segments and cached peer mappings are long-lived
// and bounded by rpc/shm-transfer.ts. Views do (see View).
Napi::Value WrapSeg(Napi::Env env, Seg* s) {
  return Napi::External<SegHandle>::New(env, new SegHandle{s}, [](Napi::Env, SegHandle* h) {
    if (h->seg) h->seg->Unref();
    delete h;
  });
}

// xferSegCreate(frameBytes) -> { seg, fd, ino, bytes }: a fresh memfd for frames of up to `frameBytes`, mapped here
// with every page allocated, already claimed (busy) for the caller's first frame.
Napi::Value SegCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = kHeaderBytes + BytesArg(info, 0, "frameBytes");
  auto* s = new Seg();
  s->bytes = bytes;
  s->fd = MemfdCreate("tensile-rpc");
  auto fail = [&](const std::string& what) {
    const std::string e = Errno(what);
    s->Unref();
    return Napi::Error::New(env, e);
  };
  if (s->fd < 0) throw fail("memfd_create");
  if (ftruncate(s->fd, static_cast<off_t>(bytes)) != 0) throw fail("ftruncate");
  // MAP_POPULATE allocates every page in one call instead of one fault per page during the first copy.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, s->fd, 0);
  if (p == MAP_FAILED) throw fail("mmap");
  s->addr = static_cast<uint8_t*>(p);
  s->busy()->store(1, std::memory_order_relaxed);
  struct stat st;
  if (fstat(s->fd, &st) != 0) throw fail("fstat");
  Napi::Object out = Napi::Object::New(env);
  out.Set("seg", WrapSeg(env, s));
  out.Set("fd", Napi::Number::New(env, s->fd));
  out.Set("ino", Napi::Number::New(env, static_cast<double>(st.st_ino)));
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  return out;
}

// xferSegClaim(seg) -> boolean: takes an idle segment for the next frame (false while a receiver still holds it).
Napi::Value SegClaim(const Napi::CallbackInfo& info) {
  Seg* s = AsSeg(info.Env(), info[0]);
  uint32_t idle = 0;
  return Napi::Boolean::New(info.Env(),
                            s->busy()->compare_exchange_strong(idle, 1, std::memory_order_acquire));
}

// xferSegWrite(seg, parts: Buffer[]) -> bytes: copies the parts back to back into the frame area.
Napi::Value SegWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Seg* s = AsSeg(env, info[0]);
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "parts must be an array of Buffers");
  auto parts = info[1].As<Napi::Array>();
  const size_t room = s->bytes - kHeaderBytes;
  size_t off = 0;
  for (uint32_t i = 0; i < parts.Length(); i++) {
    Napi::Value v = parts.Get(i);
    if (!v.IsBuffer()) throw Napi::TypeError::New(env, "parts must be an array of Buffers");
    auto b = v.As<Napi::Buffer<uint8_t>>();
    if (off + b.Length() > room)
      throw Napi::RangeError::New(env, "parts (" + std::to_string(off + b.Length()) + "+ bytes) exceed the segment (" +
                                           std::to_string(room) + " bytes)");
    std::memcpy(s->addr + kHeaderBytes + off, b.Data(), b.Length());
    off += b.Length();
  }
  return Napi::Number::New(env, static_cast<double>(off));
}

// xferSegOpen(pid, fd, ino, bytes) -> seg: maps the peer's segment, checked by inode and size. Throws naming why.
Napi::Value SegOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t pid = U32Arg(info, 0, "pid");
  const uint32_t fd = U32Arg(info, 1, "fd");
  const double ino = NumArg(info, 2, "ino");
  const size_t bytes = BytesArg(info, 3, "bytes");
  const std::string where = PeerFdPath(pid, fd);
  if (bytes <= kHeaderBytes)
    throw Napi::Error::New(env, "segment " + where + " of " + std::to_string(bytes) + " bytes is too small");
  const int f = OpenPeerFd(pid, fd, O_RDWR);
  if (f < 0) throw Napi::Error::New(env, Errno("open " + where));
  struct stat st;
  if (fstat(f, &st) != 0) {
    const std::string e = Errno("fstat " + where);
    close(f);
    throw Napi::Error::New(env, e);
  }
  if (static_cast<double>(st.st_ino) != ino || static_cast<size_t>(st.st_size) != bytes) {
    close(f);
    throw Napi::Error::New(env, "segment " + where + " is inode " + std::to_string(st.st_ino) + " of " +
                                    std::to_string(st.st_size) + " bytes (expected inode " +
                                    std::to_string(static_cast<uint64_t>(ino)) + " of " + std::to_string(bytes) + ")");
  }
  // Read-write: received tensors are ordinary, writable arrays (the writes stay in the segment the receiver holds).
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, f, 0);
  const int mapErr = errno;
  close(f);
  if (p == MAP_FAILED) {
    errno = mapErr;
    throw Napi::Error::New(env, Errno("mmap " + where));
  }
  auto* s = new Seg();
  s->addr = static_cast<uint8_t*>(p);
  s->bytes = bytes;
  return WrapSeg(env, s);
}

// Bytes of frames handed out as views and not yet collected, in this process.
std::atomic<size_t> g_liveViewBytes{0};
// What this process has reported of them to V8 (JS thread only).
int64_t g_reportedViewBytes = 0;
// Views are SharedArrayBuffers, which V8 does not count toward its collection limits: an ArrayBuffer would be
// counted, and on the echo benchmark one 16 MB frame per call made V8 run a forced marking step or a full
// mark-compact on almost every call (3-5 ms of every 11 on the client, more than a copy). Up to this many live view
// bytes nothing is reported (ordinary allocation collects dropped frames soon enough, and the senders' pools hold
// several frames); beyond it the excess is reported, so that dropped frames are collected, and their segments handed
// back, before the senders' pools fill up. Reported on the JS thread at the next view; views may be freed elsewhere.
constexpr size_t kUnreportedViewBytes = 128u << 20;

void ReportLiveViews(Napi::Env env) {
  const size_t live = g_liveViewBytes.load(std::memory_order_relaxed);
  const int64_t want = live > kUnreportedViewBytes ? static_cast<int64_t>(live - kUnreportedViewBytes) : 0;
  if (want == g_reportedViewBytes) return;
  Napi::MemoryManagement::AdjustExternalMemory(env, want - g_reportedViewBytes);
  g_reportedViewBytes = want;
}

// `bytes` at `data` as a SharedArrayBuffer, counted as live (and reported as ReportLiveViews says); `release(arg)`
// runs when V8 frees it, on whatever thread, and must take the bytes off g_liveViewBytes.
Napi::Value LiveSharedBuffer(Napi::Env env, void* data, size_t bytes, v8::BackingStore::DeleterCallback release,
                             void* arg) {
  g_liveViewBytes.fetch_add(bytes, std::memory_order_relaxed);
  ReportLiveViews(env);
  std::unique_ptr<v8::BackingStore> store = v8::SharedArrayBuffer::NewBackingStore(data, bytes, release, arg);
  // Node-API cannot make a SharedArrayBuffer over external memory, so this one call uses V8's API (stacks.cc does
  // too; node-gyp builds against the running Node's headers). A napi_value is the address of a v8::Local's slot,
  // valid in the handle scope Node-API opened for this call.
  v8::Local<v8::SharedArrayBuffer> sab = v8::SharedArrayBuffer::New(v8::Isolate::GetCurrent(), std::move(store));
  return Napi::Value(env, reinterpret_cast<napi_value>(*sab));
}

struct View {
  Seg* seg;
  size_t bytes;
};

// xferSegView(seg, frameBytes) -> SharedArrayBuffer: the frame, in place (no copy). The segment stays mapped while
// it (or any view of its memory) lives; when V8 frees it, the segment goes back to the sender.
Napi::Value SegView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Seg* s = AsSeg(env, info[0]);
  const size_t bytes = BytesArg(info, 1, "frameBytes");
  if (bytes > s->bytes - kHeaderBytes)
    throw Napi::RangeError::New(env, "frame of " + std::to_string(bytes) + " bytes in a segment of " +
                                         std::to_string(s->bytes));
  s->refs.fetch_add(1, std::memory_order_relaxed);
  return LiveSharedBuffer(
      env, s->addr + kHeaderBytes, bytes,
      [](void*, size_t, void* arg) {
        auto* v = static_cast<View*>(arg);
        v->seg->busy()->store(0, std::memory_order_release);
        g_liveViewBytes.fetch_sub(v->bytes, std::memory_order_relaxed);
        v->seg->Unref();
        delete v;
      },
      new View{s, bytes});
}

// Receive buffers for large frames that come over a socket (rpc/data-channel.ts reads each one straight into its
// buffer): SharedArrayBuffers too, counted with the views above, over private anonymous memory. Freed buffers are kept
// for reuse up to kFreeBlockBytes, so that a frame's pages are not faulted in afresh each time (on these machines
// fresh pages cost more than the copy into them); a new block is mapped with all its pages at once. 16 MB echoes
// through the socket: 64 MiB kept gave 1.8-1.9 GB/s, 128 MiB 1.4-2.2, 256 MiB 3.1-3.6 (dropped frames come back all
// at once, after the collection that the 128 MiB report causes); marking kept blocks MADV_FREE, so that the kernel
// could take them back under pressure, cost a fifth of that (2.2-3.0). So a process that received large frames over
// a socket keeps up to 256 MiB of them mapped, until xferTrim lets go of those unused for a while.
struct Block {
  uint8_t* addr;
  size_t size;        // mapped, a multiple of kBlockStep
  size_t bytes;       // handed out
  int64_t freedAtMs;  // steady clock, when it went back to the cache
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
constexpr size_t kBlockStep = 1u << 20;
constexpr size_t kFreeBlockBytes = 256u << 20;
std::mutex g_blocksMu;
std::vector<Block> g_freeBlocks;  // oldest first; guarded by g_blocksMu
size_t g_freeBlockBytes = 0;      // guarded by g_blocksMu

void FreeBlock(void*, size_t, void* arg) {
  auto* b = static_cast<Block*>(arg);
  g_liveViewBytes.fetch_sub(b->bytes, std::memory_order_relaxed);
  b->freedAtMs = NowMs();
  std::vector<Block> drop;
  {
    std::lock_guard<std::mutex> lock(g_blocksMu);
    g_freeBlocks.push_back(*b);
    g_freeBlockBytes += b->size;
    while (g_freeBlockBytes > kFreeBlockBytes) {
      drop.push_back(g_freeBlocks.front());
      g_freeBlockBytes -= g_freeBlocks.front().size;
      g_freeBlocks.erase(g_freeBlocks.begin());
    }
  }
  for (const Block& d : drop) munmap(d.addr, d.size);
  delete b;
}

// xferAlloc(bytes) -> SharedArrayBuffer of `bytes` (contents undefined): a receive buffer for one large frame.
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = BytesArg(info, 0, "bytes");
  const size_t size = (bytes + kBlockStep - 1) / kBlockStep * kBlockStep;
  Block b{nullptr, size, bytes, 0};
  {
    std::lock_guard<std::mutex> lock(g_blocksMu);
    for (size_t i = g_freeBlocks.size(); i-- > 0;) {
      if (g_freeBlocks[i].size != size) continue;
      b.addr = g_freeBlocks[i].addr;
      g_freeBlockBytes -= size;
      g_freeBlocks.erase(g_freeBlocks.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (b.addr == nullptr) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
      throw Napi::Error::New(env, Errno("mmap a receive buffer of " + std::to_string(size) + " bytes"));
    b.addr = static_cast<uint8_t*>(p);
  }
  return LiveSharedBuffer(env, b.addr, bytes, FreeBlock, new Block(b));
}

// xferTrim(idleMs) -> bytes: unmaps the kept receive buffers freed more than idleMs ago (rpc/shm-transfer.ts calls it
// periodically, so that a burst of large frames does not hold its memory for the life of the process).
Napi::Value Trim(const Napi::CallbackInfo& info) {
  const int64_t idle = IntArg(info, 0, "idleMs", 0, int64_t{1} << 40);
  const int64_t before = NowMs() - idle;
  std::vector<Block> drop;
  {
    std::lock_guard<std::mutex> lock(g_blocksMu);
    for (size_t i = 0; i < g_freeBlocks.size();) {
      if (g_freeBlocks[i].freedAtMs <= before) {
        drop.push_back(g_freeBlocks[i]);
        g_freeBlockBytes -= g_freeBlocks[i].size;
        g_freeBlocks.erase(g_freeBlocks.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        i++;
      }
    }
  }
  size_t bytes = 0;
  for (const Block& d : drop) {
    munmap(d.addr, d.size);
    bytes += d.size;
  }
  return Napi::Number::New(info.Env(), static_cast<double>(bytes));
}

// xferViewBytes() -> { live, reported, cached }: bytes of frames handed out as views or receive buffers and not yet
// freed, what of them is reported to V8 (tests check the policy above; V8 does not show reported bytes in its heap
// statistics), and the bytes of freed receive buffers kept for reuse.
Napi::Value ViewBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("live", Napi::Number::New(env, static_cast<double>(g_liveViewBytes.load(std::memory_order_relaxed))));
  out.Set("reported", Napi::Number::New(env, static_cast<double>(g_reportedViewBytes)));
  {
    std::lock_guard<std::mutex> lock(g_blocksMu);
    out.Set("cached", Napi::Number::New(env, static_cast<double>(g_freeBlockBytes)));
  }
  return out;
}

// xferSegDestroy(seg): drops the handle's reference now (views keep the mapping); later use of the handle throws.
Napi::Value SegDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal()) throw Napi::TypeError::New(env, "expected a shared-memory segment handle");
  SegHandle* h = info[0].As<Napi::External<SegHandle>>().Data();
  if (h->seg) {
    h->seg->Unref();
    h->seg = nullptr;
  }
  return env.Undefined();
}

// xferClose(fd): closes the descriptor from xferProbe.
Napi::Value Close(const Napi::CallbackInfo& info) {
  close(static_cast<int>(U32Arg(info, 0, "fd")));
  return info.Env().Undefined();
}

}  // namespace

void InitXfer(Napi::Env env, Napi::Object exports) {
  exports.Set("xferProbe", Napi::Function::New(env, Probe));
  exports.Set("xferCheck", Napi::Function::New(env, Check));
  exports.Set("xferSegCreate", Napi::Function::New(env, SegCreate));
  exports.Set("xferSegClaim", Napi::Function::New(env, SegClaim));
  exports.Set("xferSegWrite", Napi::Function::New(env, SegWrite));
  exports.Set("xferSegOpen", Napi::Function::New(env, SegOpen));
  exports.Set("xferSegView", Napi::Function::New(env, SegView));
  exports.Set("xferViewBytes", Napi::Function::New(env, ViewBytes));
  exports.Set("xferAlloc", Napi::Function::New(env, Alloc));
  exports.Set("xferTrim", Napi::Function::New(env, Trim));
  exports.Set("xferSegDestroy", Napi::Function::New(env, SegDestroy));
  exports.Set("xferClose", Napi::Function::New(env, Close));
}

}  // namespace tensile
