"""An unmodified torch.distributed script: gloo over env://, one allreduce, rank 0 prints the sum.

Run: PYTHON_EXEC=/usr/bin/python3 tensile run --standalone --nproc-per-node 4 examples/pytorch/allreduce.py
"""
import os

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")  # reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.tensor([float(rank + 1)])
    dist.allreduce(t) if hasattr(dist, "allreduce") else dist.all_reduce(t)
    expected = world * (world + 1) / 2
    print(f"rank {rank}/{world} local_rank {os.environ['LOCAL_RANK']} allreduce sum {t.item():.0f} expected {expected:.0f}",
          flush=True)
    assert t.item() == expected
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
