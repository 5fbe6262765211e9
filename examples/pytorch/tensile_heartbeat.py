"""Step heartbeats for tensile's hang watchdog, from any Python training script (standard library only).

    from tensile_heartbeat import Heartbeat
    hb = Heartbeat()        # connects to $TENSILE_CONTROL; does nothing when not run under `tensile run`
    for step in ...:
        train_step()
        hb.step(step)       # never blocks; at most one message per interval the agent asked for

The worker says hello with live=false: it is restarted the usual way (checkpoint reload), but a worker that stops
making progress for --hang-timeout gets its Python traceback dumped (the agent starts Python workers with
PYTHONFAULTHANDLER=1 and sends SIGABRT) and is restarted instead of hanging until a collective times out.
Protocol: common/control-protocol.ts (one JSON object per line over a Unix socket).
"""
import json
import os
import socket
import time


class Heartbeat:
    def __init__(self, connect_timeout_s: float = 5.0):
        self._sock = None
        self._interval_s = 0.5
        self._last = 0.0
        path = os.environ.get("TENSILE_CONTROL")
        if not path:
            return
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(connect_timeout_s)
            s.connect(path)
            hello = {"type": "hello", "version": 1, "localRank": int(os.environ.get("LOCAL_RANK", "0")),
                     "pid": os.getpid(), "live": False}
            s.sendall((json.dumps(hello) + "\n").encode())
            welcome = json.loads(s.makefile("r").readline())
            if welcome.get("type") != "welcome":
                raise ValueError(f"expected welcome, got {welcome.get('type')}")
            self._interval_s = welcome["heartbeatIntervalMs"] / 1000.0
            self._sock = s
        except (OSError, ValueError, KeyError) as e:
            print(f"tensile_heartbeat: no watchdog ({e})", flush=True)

    def step(self, step: int) -> None:
        """Reports progress (a finished step). Sends at most one heartbeat per interval."""
        if self._sock is None:
            return
        now = time.monotonic()
        if now - self._last < self._interval_s:
            return
        self._last = now
        try:
            self._sock.sendall((json.dumps({"type": "heartbeat", "step": int(step)}) + "\n").encode())
        except OSError:
            self._sock = None
