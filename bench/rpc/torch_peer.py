# torch.distributed.rpc side of bench/rpc: 2 workers (TensorPipe). Rank 0 reads commands on stdin, one per line,
# runs that measurement and prints one JSON line; rank 1 only serves. Commands: "lat N", "thr N WINDOW",
# "bw N MB [WARMUP]", "rem N", "quit".  Usage: /usr/bin/python3 torch_peer.py RANK   (env MASTER_ADDR, MASTER_PORT)
import json
import os
import sys
import time

import torch
import torch.distributed.rpc as rpc


def noop():
    return None


def echo(t):
    return t


def lat(n):
    t0 = time.perf_counter()
    for _ in range(n):
        rpc.rpc_sync("worker1", noop)
    return (time.perf_counter() - t0) / n * 1e6


def thr(n, window):
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(window, n - done)
        torch.futures.wait_all([rpc.rpc_async("worker1", noop) for _ in range(k)])
        done += k
    return n / (time.perf_counter() - t0)


def bw(n, mb, warmup=1):
    t = torch.ones(mb * 1024 * 1024 // 4)
    for _ in range(warmup):
        rpc.rpc_sync("worker1", echo, args=(t,))
    t0 = time.perf_counter()
    for _ in range(n):
        r = rpc.rpc_sync("worker1", echo, args=(t,))
    dt = time.perf_counter() - t0
    assert r.numel() == t.numel()
    return 2 * t.numel() * 4 * n / dt / 1e9


def rem(n):
    t0 = time.perf_counter()
    for _ in range(n):
        rpc.remote("worker1", noop).to_here()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    rank = int(sys.argv[1])
    torch.set_num_threads(1)
    opts = rpc.TensorPipeRpcBackendOptions(num_worker_threads=8, rpc_timeout=120)
    rpc.init_rpc(f"worker{rank}", rank=rank, world_size=2, rpc_backend_options=opts)
    if rank == 0:
        # Warm-up, the same amount as the tensile side gets.
        lat(int(os.environ.get("BENCH_WARMUP", "1000")))
        rem(int(os.environ.get("BENCH_REM_WARMUP", "3000")))
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            args = [int(x) for x in cmd[1:]]
            value = {"lat": lat, "thr": thr, "bw": bw, "rem": rem}[cmd[0]](*args)
            print(json.dumps({"value": value}), flush=True)
    rpc.shutdown()


if __name__ == "__main__":
    main()
