// Anonymous shared memory passed between processes of one host without a Unix socket (shm.cc, xfer.cc): a memfd is
// never visible in /dev/shm, so nothing outlives its last descriptor or mapping, and a peer re-opens it through
// /proc/<pid>/fd/<fd> (as if the descriptor had been passed over a socket; same user, same PID namespace).
#pragma once

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace tensile {

// A new memfd (close-on-exec); -1 with errno on failure.
inline int MemfdCreate(const char* name) {
#ifdef SYS_memfd_create
  return static_cast<int>(syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */));
#else
  errno = ENOSYS;
  return -1;
#endif
}

inline std::string PeerFdPath(long pid, long fd) {
  return "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
}

// Opens a peer's descriptor through /proc (close-on-exec); -1 with errno on failure.
inline int OpenPeerFd(long pid, long fd, int flags) { return open(PeerFdPath(pid, fd).c_str(), flags | O_CLOEXEC); }

}  // namespace tensile
