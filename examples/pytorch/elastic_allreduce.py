"""An elastic gloo job: allreduce in a loop, checkpointing the step, resuming after any world-size change.

Run on each node:
  PYTHON_EXEC=/usr/bin/python3 tensile run --nnodes 1:2 --nproc-per-node 1 --rdzv-backend etcd \
      --rdzv-endpoint 127.0.0.1:2379 --rdzv-id demo examples/pytorch/elastic_allreduce.py --steps 400
Kill one node: the survivors restart their workers with the smaller world and go on from the last step.
"""
import argparse
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--step-file", default=None, help="default: $TENSILE_CHECKPOINT_DIR/step (shared by the nodes)")
    p.add_argument("--sleep", type=float, default=0.02)
    a = p.parse_args()
    step_file = a.step_file or os.path.join(os.environ["TENSILE_CHECKPOINT_DIR"], "step")
    os.makedirs(os.path.dirname(step_file), exist_ok=True)

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    step = int(open(step_file).read()) if os.path.exists(step_file) else 0
    print(f"start rank {rank} world {world} from step {step}", flush=True)
    while step < a.steps:
        t = torch.ones(4)
        dist.all_reduce(t)
        assert t[0].item() == world, f"allreduce gave {t[0].item()}, expected {world}"
        step += 1
        if rank == 0 and step % 10 == 0:
            with open(step_file + ".tmp", "w") as f:
                f.write(str(step))
            os.replace(step_file + ".tmp", step_file)
            print(f"step {step} world {world}", flush=True)
        time.sleep(a.sleep)
    if rank == 0:
        with open(step_file + ".tmp", "w") as f:
            f.write(str(step))
        os.replace(step_file + ".tmp", step_file)
    print(f"done rank {rank} world {world} at step {step}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
