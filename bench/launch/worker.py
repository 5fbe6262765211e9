"""Trivial worker for bench/launch: records when it started (and when it failed), then exits or sleeps."""
import os
import sys
import time

out = os.environ["BENCH_OUT"]
rank = os.environ["RANK"]
restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
with open(f"{out}/start-{restart}-{rank}", "w") as f:
    f.write(repr(time.time()))
mode = os.environ.get("BENCH_MODE", "exit")
if mode == "fail" and rank == "1" and restart == "0":
    time.sleep(0.5)
    with open(f"{out}/fail", "w") as f:
        f.write(repr(time.time()))
    sys.exit(1)
if mode in ("sleep", "fail") and not (mode == "fail" and restart != "0"):
    time.sleep(float(os.environ.get("BENCH_SLEEP", "2")))
