"""PyTorch side of tensile's parity tests. Standard library + torch only (torch 1.13 has no safetensors package).

Usage (run with Debian's /usr/bin/python3, which has torch):
  torch_helper.py echo IN OUT      read a tensile-written file, write back every tensor doubled plus torch-made ones
  torch_helper.py parity IN OUT    MLP forward/backward, cross-entropy, SGD (momentum, wd) and Adam steps
  torch_helper.py conv IN OUT      conv2d forward and backward
  torch_helper.py sampler SPEC OUT DistributedSampler index lists for a JSON list of settings
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}
NAMES = {v: k for k, v in DTYPES.items()}


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        t = torch.frombuffer(bytearray(data[b:en]), dtype=dtype) if en > b else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


def save(path, tensors, meta=None):
    header = {}
    if meta:
        header["__metadata__"] = meta
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def echo(src, dst):
    tensors, meta = load(src)
    out = {f"{k}.x2": v * 2 for k, v in tensors.items()}
    out["torch.arange"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out["torch.int64"] = torch.tensor([-5, 7], dtype=torch.int64)
    out["torch.float64"] = torch.tensor([0.25, 1e10], dtype=torch.float64)
    lin = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(lin.weight, 0.5)
    torch.nn.init.constant_(lin.bias, -1.0)
    out.update({f"linear.{k}": v for k, v in lin.state_dict().items()})
    save(dst, out, {"seen": ",".join(sorted(tensors)), "meta.in": json.dumps(meta, sort_keys=True)})


def mlp(p):
    def f(x):
        return torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, p["w1"], p["b1"])), p["w2"], p["b2"])

    return f


def parity(src, dst):
    t, meta = load(src)
    cfg = json.loads(meta["config"])
    names = ["w1", "b1", "w2", "b2"]
    x, y = t["x"], t["y"].long()
    out = {}
    # Forward/backward once.
    p = {k: t[k].clone().requires_grad_(True) for k in names}
    logits = mlp(p)(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    out["logits"] = logits
    out["loss"] = loss.reshape(1)
    for k in names:
        out[f"grad.{k}"] = p[k].grad
    # Optimizers, a few steps each from the same start.
    for opt_name in ("sgd", "adam"):
        p = {k: t[k].clone().requires_grad_(True) for k in names}
        params = [p[k] for k in names]
        if opt_name == "sgd":
            opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weightDecay"])
        else:
            opt = torch.optim.Adam(params, lr=cfg["adamLr"], weight_decay=cfg["weightDecay"])
        losses = []
        for _ in range(cfg["steps"]):
            opt.zero_grad()
            l = torch.nn.functional.cross_entropy(mlp(p)(x), y)
            losses.append(l.item())
            l.backward()
            opt.step()
        for k in names:
            out[f"{opt_name}.{k}"] = p[k]
        out[f"{opt_name}.losses"] = torch.tensor(losses, dtype=torch.float32)
    save(dst, out)


def conv(src, dst):
    t, meta = load(src)
    cfg = json.loads(meta["config"])
    x, w, b = (t[k].clone().requires_grad_(True) for k in ("x", "w", "b"))
    y = torch.nn.functional.conv2d(x, w, b, stride=cfg["stride"], padding=cfg["padding"])
    y.backward(t["gy"])
    save(dst, {"y": y, "gx": x.grad, "gw": w.grad, "gb": b.grad})


def sampler(spec, dst):
    """spec: JSON list of DistributedSampler kwargs (plus "length"); writes the index lists as JSON."""
    from torch.utils.data import DistributedSampler

    out = []
    for kw in json.loads(spec):
        n = kw.pop("length")
        epoch = kw.pop("epoch", 0)
        s = DistributedSampler(range(n), **kw)
        s.set_epoch(epoch)
        out.append(list(iter(s)))
    with open(dst, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"echo": echo, "parity": parity, "sampler": sampler, "conv": conv}[sys.argv[1]](sys.argv[2], sys.argv[3])
