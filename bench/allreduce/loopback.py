# Single-stream loopback TCP throughput from Python (the peer's ceiling): one 4 MiB write loop over a socket pair
# between two processes. Prints {"gbps": GB/s}.
import json
import os
import socket
import sys
import time

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 else 512 << 20
CHUNK = 4 << 20

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(CHUNK)
    sent = 0
    while sent < TOTAL:
        c.sendall(buf)
        sent += CHUNK
    c.close()
    os._exit(0)
conn, _ = srv.accept()
buf = bytearray(CHUNK)
view = memoryview(buf)
got = 0
t0 = time.perf_counter()
while got < TOTAL:
    n = conn.recv_into(view)
    if n == 0:
        break
    got += n
dt = time.perf_counter() - t0
os.waitpid(pid, 0)
print(json.dumps({"gbps": got / dt / 1e9}))
