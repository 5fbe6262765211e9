"""bench/node-loss worker: gloo allreduce in a loop. Records its start (with group rank and agent pid) and the
first completed allreduce of each world size, so the bench can time node loss → survivors training again."""
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist

out = os.environ["BENCH_OUT"]
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank, world = dist.get_rank(), dist.get_world_size()
with open(f"{out}/start-{os.getpid()}", "w") as f:
    f.write(f"{os.environ['GROUP_RANK']} {os.getppid()} {world}")
first = True
while not os.path.exists(f"{out}/stop"):
    t = torch.ones(1024)
    dist.all_reduce(t)
    if first:
        with open(f"{out}/trained-{world}-{rank}", "w") as f:
            f.write(repr(time.time()))
        first = False
    time.sleep(0.01)
dist.destroy_process_group()
