# PyTorch side of bench/train-step: the same MLP (784-512-256-10), batch, optimizer and thread count as the
# tensile side. Modes: single (one process), ddp (under torchrun, gloo), local (under torchrun, no communication:
# the compute-only baseline for the overlap figure). Rank 0 prints one JSON line.
import argparse, json, os, time
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--mode", choices=["single", "ddp", "local"], default="single")
p.add_argument("--steps", type=int, default=200)
p.add_argument("--warmup", type=int, default=20)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
rank = int(os.environ.get("RANK", "0"))
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
if a.mode != "single":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    if a.mode == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(a.batch, 784)
y = torch.randint(0, 10, (a.batch,))
lossf = nn.CrossEntropyLoss()

def step():
    opt.zero_grad()
    loss = lossf(model(x), y)
    loss.backward()
    opt.step()

for _ in range(a.warmup):
    step()
if a.mode != "single":
    dist.barrier()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
dt = time.perf_counter() - t0
if a.mode != "single":
    dist.barrier()
if rank == 0:
    print(json.dumps({"side": "pytorch", "mode": a.mode, "msPerStep": dt * 1000 / a.steps, "stepsPerSec": a.steps / dt}),
          flush=True)
if a.mode != "single":
    dist.destroy_process_group()
