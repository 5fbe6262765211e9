# The gloo side of the allreduce benchmark, launched by bench/allreduce/run.ts through torchrun.
# Env: BENCH_SIZES (bytes, comma separated). Rank 0 prints one JSON line per size, like tensile-worker.ts.
import json
import os
import time

import torch
import torch.distributed as dist


def iters_for(size_bytes):
    return max(8, min(60, (32 << 20) // size_bytes))


def main():
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for size_bytes in [int(s) for s in os.environ["BENCH_SIZES"].split(",")]:
        t = torch.ones(size_bytes // 4, dtype=torch.float32)
        iters = iters_for(size_bytes)
        for _ in range(2):
            dist.all_reduce(t)
        dist.barrier()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        if rank == 0:
            print(json.dumps({"sizeBytes": size_bytes, "iters": iters, "medianMs": times[len(times) // 2],
                              "meanMs": sum(times) / len(times)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
