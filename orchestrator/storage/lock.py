"""One run per output directory: ``<output_dir>/.prunediff.lock``.

``run_pipeline`` holds this lock from before its first stage until it returns (also on
an exception or Ctrl-C), so a second run on the same ``output_dir`` stops at once with
:class:`OutputLocked` (one line naming the holder: host, pid, start time; exit 1 in
the CLI) instead of deleting or rewriting the first run's files.

The lock file is JSON: ``{host, pid, pid_start, started, heartbeat, token, command}``.
A thread rewrites ``heartbeat`` every ``heartbeat_s`` seconds while the lock is held.
A lock is **stale**, and is taken over with a warning, when

- its holder ran on this host and that process is gone (``pid`` not alive, or alive
  with another start time: a reused pid), or
- its holder ran on another host and its heartbeat is older than ``stale_after_s``
  (the only evidence across hosts; a paused or partitioned holder older than that
  loses its lock, and its heartbeat thread then logs that it lost it).

Guarantees differ by storage:

- local paths: the lock file is written under a temporary name and hard-linked into
  place (``link(2)`` fails if the name exists, like ``O_CREAT | O_EXCL``, and no
  reader ever sees a half-written lock), so of two runs racing for a free lock exactly
  one wins; a stale lock is renamed away (atomic) and re-checked before the new one
  is created.
- ``s3://`` / ``gs://``: pyarrow.fs has no conditional ("create if absent") write,
  so acquiring is read, write, wait ``settle_s``, read back: a run that does not read
  back its own token lost the race and stops. Two runs starting within the same
  second on one bucket can still both believe they won (last writer wins the file;
  the other finds out at its first heartbeat and logs it). Start runs on a bucket
  from one place, or give each its own ``output_dir``.

SIGKILL, a machine crash or SIGTERM (Python's default handler) leave the file behind;
the next run detects it as stale by the rules above.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.errors import OutputLocked
from orchestrator.storage import fsutil

log = logging.getLogger(__name__)

LOCK_NAME = ".prunediff.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0    # ten missed heartbeats


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    pid_start: str          # the process's start time in clock ticks (/proc), "" if unknown
    started: float          # time.time() at acquire
    heartbeat: float        # time.time() at the last heartbeat
    token: str              # unique per acquire
    command: str = ""

    def describe(self) -> str:
        """``host pid N, started <UTC>, last heartbeat Ns ago``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        age = max(0.0, time.time() - self.heartbeat)
        return f"{self.host} pid {self.pid}, started {when}, last heartbeat {age:.0f}s ago"


def _pid_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot ("" if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int, pid_start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    now = _pid_start(pid)
    return not (pid_start and now and now != pid_start)  # a reused pid is another process


class RunLock:
    """The lock of ``output_dir`` (a local path or remote URI); use as a context manager."""

    def __init__(self, output_dir: str, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, settle_s: float = 1.0):
        self.output_dir = output_dir
        self.uri = fsutil.join(output_dir, LOCK_NAME)
        self.remote = fsutil.is_remote(output_dir)
        self.heartbeat_s, self.stale_after_s, self.settle_s = heartbeat_s, stale_after_s, settle_s
        self._fs: Any = None
        self._path = ""
        self.info: LockInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- file access ------------------------------------------------------------------
    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs, base = fsutil.filesystem(self.output_dir)
            self._path = fsutil.join(base, LOCK_NAME)
            self._fs.create_dir(base, recursive=True)
        return self._fs

    def read(self) -> LockInfo | None:
        """The current lock file, or None if there is none (an unreadable one is stale)."""
        fs = self._filesystem()
        try:
            with fs.open_input_stream(self._path) as f:
                raw = f.read()
        except (FileNotFoundError, OSError):
            return None
        try:
            return LockInfo(**json.loads(raw))
        except (ValueError, TypeError):
            # half-written by a killed run: stale by definition
            return LockInfo("?", -1, "", 0.0, 0.0, "corrupt")

    def _encode(self, info: LockInfo) -> bytes:
        return json.dumps(asdict(info), indent=1).encode()

    def _write(self, info: LockInfo, exclusive: bool) -> bool:
        """Write the lock file; with ``exclusive`` (local only) fail if it exists."""
        fs = self._filesystem()
        if self.remote:
            with fs.open_output_stream(self._path) as f:
                f.write(self._encode(info))
            return True
        tmp = f"{self._path}.{info.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._encode(info))
            f.flush()
            os.fsync(f.fileno())
        try:
            if exclusive:
                try:  # link(2) is create-if-absent and never shows a half-written file
                    os.link(tmp, self._path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, self._path)  # atomic: readers see the old or new heartbeat
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True


    def stale_reason(self, info: LockInfo) -> str | None:
        """Why ``info`` is stale, or None while its holder may still run."""
        if info.token == "corrupt":
            return "the lock file is unreadable"
        if info.host == socket.gethostname():
            if not _pid_alive(info.pid, info.pid_start):
                return f"pid {info.pid} is gone"
            return None
        age = time.time() - info.heartbeat
        if age > self.stale_after_s:
            return f"no heartbeat for {age:.0f}s (> {self.stale_after_s:.0f}s)"
        return None

    # -- acquire / release ------------------------------------------------------------
    def _new_info(self) -> LockInfo:
        now = time.time()
        return LockInfo(socket.gethostname(), os.getpid(), _pid_start(os.getpid()), now, now,
                        uuid.uuid4().hex, " ".join(sys.argv)[:300])

    def _remove_stale(self, old: LockInfo) -> None:
        """Move the stale lock away; restore it if it changed since it was judged."""
        fs = self._filesystem()
        if self.remote:
            fs.delete_file(self._path)
            return
        aside = f"{self._path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return  # another run removed it first; the exclusive create decides
        try:
            with open(aside, "rb") as f:
                moved = LockInfo(**json.loads(f.read()))
        except (ValueError, TypeError, OSError):
            moved = None
        if moved is not None and moved.token != old.token:
            try:  # a fresh lock taken between our read and rename: put it back
                os.link(aside, self._path)
            except FileExistsError:
                pass
            os.unlink(aside)
            raise OutputLocked(self._held_message(moved))
        os.unlink(aside)

    def _held_message(self, info: LockInfo) -> str:
        return (f"{self.output_dir} is in use by another run ({info.describe()}); wait for it "
                f"or use another experiment.output_dir (a killed run's lock is taken over "
                f"automatically; the lock file is {self.uri})")

    def acquire(self) -> LockInfo | None:
        """Take the lock; returns the stale lock it replaced, if any.

        Raises:
            OutputLocked: another live run holds it.
        """
        replaced = None
        for _ in range(5):
            old = self.read()
            if old is not None:
                reason = self.stale_reason(old)
                if reason is None:
                    raise OutputLocked(self._held_message(old))
                log.warning("%s: taking over a stale lock (%s; %s)", self.uri,
                            old.describe(), reason)
                self._remove_stale(old)
                replaced = old
            info = self._new_info()
            if not self._write(info, exclusive=True):
                continue  # created by another run since our read: judge it again
            if self.remote:
                time.sleep(self.settle_s)
                back = self.read()
                if back is None or back.token != info.token:
                    raise OutputLocked(self._held_message(back) if back else
                                       f"{self.output_dir}: lost the race for {self.uri}")
            self.info = info
            self._start_heartbeat()
            return replaced
        raise OutputLocked(f"{self.output_dir}: could not take {self.uri} (contended)")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="prunediff-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            assert self.info is not None
            try:
                now = self.read()
                if now is None or now.token != self.info.token:
                    log.warning("%s: this run no longer holds the lock (now: %s)", self.uri,
                                now.describe() if now else "none")
                    return
                self.info = LockInfo(**{**asdict(self.info), "heartbeat": time.time()})
                self._write(self.info, exclusive=False)
            except OSError as e:  # a flaky bucket must not kill the run
                log.warning("%s: heartbeat failed: %s", self.uri, e)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.info is None:
            return
        try:
            now = self.read()
            if now is not None and now.token == self.info.token:
                self._filesystem().delete_file(self._path)
        except OSError as e:
            log.warning("%s: could not remove the lock: %s", self.uri, e)
        self.info = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
