# torch.distributed.rpc side of bench/rpc: 2 workers (TensorPipe), rank 0 measures, prints one JSON line.
# Usage: /usr/bin/python3 torch_peer.py RANK   (env MASTER_ADDR, MASTER_PORT, BENCH_* sizes)
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


def main():
    rank = int(sys.argv[1])
    torch.set_num_threads(1)
    opts = rpc.TensorPipeRpcBackendOptions(num_worker_threads=8, rpc_timeout=120)
    rpc.init_rpc(f"worker{rank}", rank=rank, world_size=2, rpc_backend_options=opts)
    if rank == 0:
        lat_iters = int(os.environ.get("BENCH_LAT_ITERS", "2000"))
        thr_calls = int(os.environ.get("BENCH_THR_CALLS", "20000"))
        window = int(os.environ.get("BENCH_WINDOW", "1000"))
        bw_iters = int(os.environ.get("BENCH_BW_ITERS", "10"))
        mb = int(os.environ.get("BENCH_MB", "16"))
        for _ in range(200):
            rpc.rpc_sync("worker1", noop)
        t0 = time.perf_counter()
        for _ in range(lat_iters):
            rpc.rpc_sync("worker1", noop)
        lat_us = (time.perf_counter() - t0) / lat_iters * 1e6

        t0 = time.perf_counter()
        done = 0
        while done < thr_calls:
            n = min(window, thr_calls - done)
            torch.futures.wait_all([rpc.rpc_async("worker1", noop) for _ in range(n)])
            done += n
        thr = thr_calls / (time.perf_counter() - t0)

        t = torch.ones(mb * 1024 * 1024 // 4)
        rpc.rpc_sync("worker1", echo, args=(t,))
        t0 = time.perf_counter()
        for _ in range(bw_iters):
            r = rpc.rpc_sync("worker1", echo, args=(t,))
        dt = time.perf_counter() - t0
        assert r.numel() == t.numel()
        bw = 2 * t.numel() * 4 * bw_iters / dt / 1e9

        for _ in range(50):
            rpc.remote("worker1", noop).to_here()
        t0 = time.perf_counter()
        for _ in range(lat_iters // 2):
            rpc.remote("worker1", noop).to_here()
        rem_us = (time.perf_counter() - t0) / (lat_iters // 2) * 1e6
        print(json.dumps({"latency_us": lat_us, "throughput": thr, "bandwidth_gbs": bw, "remote_us": rem_us}), flush=True)
    rpc.shutdown()


if __name__ == "__main__":
    main()
