"""A DDP training script in the style of PyTorch's elastic tutorial: it saves a snapshot every epoch, resumes from
the snapshot after a restart, and (with --fail-once) exits with an error once to show the agent restarting it.
It sends a heartbeat per step (tensile_heartbeat.py), so tensile's hang watchdog covers it: with --hang-once, rank 1
hangs once and the agent dumps its traceback into the log dir and restarts the group.

Run: PYTHON_EXEC=/usr/bin/python3 tensile run --standalone --nproc-per-node 2 --max-restarts 1 \
       examples/pytorch/ddp_snapshot.py --epochs 6 --fail-once 3 --snapshot /tmp/snap.pt
     tensile run --standalone --nproc-per-node 2 --max-restarts 1 --hang-timeout 3 --log-dir /tmp/logs \
       examples/pytorch/ddp_snapshot.py --epochs 6 --hang-once 3 --snapshot /tmp/snap.pt
"""
import argparse
import os
import time

from tensile_heartbeat import Heartbeat

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed.elastic.multiprocessing.errors import record


def build_data(n: int = 512):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    w = torch.arange(1.0, 9.0)
    y = (x @ w).unsqueeze(1) + 0.01 * torch.randn(n, 1, generator=g)
    return x, y


@record
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--fail-once", type=int, default=-1, help="rank 1 fails at this epoch on the first attempt")
    p.add_argument("--hang-once", type=int, default=-1, help="rank 1 hangs at this epoch on the first attempt")
    p.add_argument("--snapshot", required=True)
    a = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = 0
    if os.path.exists(a.snapshot):
        snap = torch.load(a.snapshot)
        model.load_state_dict(snap["model"])
        opt.load_state_dict(snap["opt"])
        start = snap["epoch"] + 1
        print(f"rank {rank}: resumed from snapshot at epoch {start}", flush=True)
    ddp = DDP(model)
    x, y = build_data()
    shard = slice(rank, None, world)
    restart = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    hb = Heartbeat()
    step = start * 20
    for epoch in range(start, a.epochs):
        if rank == 1 and restart == 0 and epoch == a.fail_once:
            raise RuntimeError(f"injected failure at epoch {epoch}")
        if rank == 1 and restart == 0 and epoch == a.hang_once:
            print(f"rank 1 hangs at epoch {epoch}", flush=True)
            time.sleep(3600)
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(ddp(x[shard]), y[shard])
            loss.backward()
            opt.step()
            step += 1
            hb.step(step)
        if rank == 0:
            tmp = a.snapshot + ".tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, tmp)
            os.replace(tmp, a.snapshot)
            print(f"epoch {epoch} loss {loss.item():.4f} restart {restart}", flush=True)
        dist.barrier()
    if rank == 0:
        print(f"done: final loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
