"""torch.distributed NCCL peer figures for scripts/gpu-check.sh (world size 1, same GPU, same sizes as
test/gpu/gpu-check-main.ts). Prints one JSON object on stdout; keys match the tensile figures."""
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist

LATENCY = [("4B", 4), ("64KiB", 64 * 1024), ("16MiB", 16 * 1024 * 1024)]
THROUGHPUT_BYTES = 256 * 1024 * 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pipelined(nbytes, iters):
    t = torch.ones(nbytes // 4, device="cuda")
    for _ in range(100):
        dist.all_reduce(t)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def awaited(nbytes, iters):
    t = torch.ones(nbytes // 4, device="cuda")
    for _ in range(50):
        dist.all_reduce(t)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t)
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def gbps(op, nbytes, iters):
    a = torch.ones(nbytes // 4, device="cuda")
    b = torch.empty_like(a)
    # At world size 1 both are one device-to-device copy of nbytes, like tensile's out-of-place allreduce/allgather.
    fn = lambda: dist.all_gather_into_tensor(b, a)  # noqa: E731
    if op == "allreduce":
        fn = lambda: dist.reduce_scatter_tensor(b, a)  # noqa: E731
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return nbytes * iters / (time.perf_counter() - t0) / 1e9


def main():
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    torch.cuda.set_device(0)
    try:
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    except TypeError:
        dist.init_process_group("nccl", rank=0, world_size=1)
    out = {}
    for label, nbytes in LATENCY:
        big = nbytes >= 1 << 20
        out[f"allreduce_{label}_pipelined_us"] = pipelined(nbytes, 200 if big else 3000)
        out[f"allreduce_{label}_awaited_us"] = awaited(nbytes, 200 if big else 1000)
    out["allreduce_oop_256MiB_GBps"] = gbps("allreduce", THROUGHPUT_BYTES, 20)
    out["allgather_oop_256MiB_GBps"] = gbps("allgather", THROUGHPUT_BYTES, 20)
    out["torch"] = torch.__version__
    out["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
    print(json.dumps(out))
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
