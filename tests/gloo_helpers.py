"""Two (or more) gloo ranks in spawned processes, for DDP tests that need no Ray."""

from __future__ import annotations

import multiprocessing as mp
import socket
from typing import Callable


def run_gloo_ranks(target: Callable[[int, int, int, str], None], world: int, out: str,
                   timeout: float = 300) -> list[int | None]:
    """Run ``target(rank, world, port, out)`` in ``world`` spawned processes on a free
    local port; returns their exit codes (a process still alive after ``timeout`` is
    killed: its code is then not 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, world, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]
