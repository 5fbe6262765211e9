"""PyTorch side of bench/matmul: GFLOP/s of torch.mm on the given shapes, one thread. Prints one JSON line."""
import json
import sys
import time

import torch

torch.set_num_threads(1)
budget = float(sys.argv[1])
out = {}
for spec in sys.argv[2:]:
    m, k, n = (int(v) for v in spec.split("x"))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g)
    b = torch.randn(k, n, generator=g)
    for _ in range(3):
        torch.mm(a, b)
    iters = 0
    t0 = time.perf_counter()
    while True:
        torch.mm(a, b)
        iters += 1
        dt = time.perf_counter() - t0
        if dt >= budget:
            break
    out[spec] = 2 * m * n * k * iters / dt / 1e9
print(json.dumps({"gflops": out, "blas": torch.__config__.show().count("OpenBLAS") > 0}))
