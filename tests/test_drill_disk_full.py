"""Drill: an artifact write fails with ENOSPC (a full disk, simulated).

The cache's filesystem is wrapped (in the driver process, where the latents,
embeddings, scores, subsets and trial specs are written) so that the N-th artifact's
data stream writes half its bytes and raises ``OSError(ENOSPC)``, as a full disk
does. The run must end with one line (exit 1, no traceback at default verbosity),
every artifact written before must verify its checksum, no temporary file may be
left, and the rerun must reuse those artifacts: its progress lines say "cached" and
its first write is the artifact that failed (checked by failing the rerun there too,
so the test stays short). The VQ-VAE, written by a Ray actor, is covered by its
file's unchanged checksum and mtime.

Two Ray start-ups, a 20-step VQ-VAE, 100 images: the ray tier (37 s on the quiet
2-core machine, 2026-12-06).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import pytest

from orchestrator import run
from orchestrator.storage import cache as cache_mod
from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table
from tests.pipeline_helpers import SMOKE, needs_fmnist


class _FailingStream:
    """A pyarrow output stream that takes half the bytes, then reports a full disk."""

    def __init__(self, stream, path: str):
        self._stream, self._path = stream, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()

    def write(self, data) -> int:
        self._stream.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)


class _FullDiskFS:
    """The cache's pyarrow filesystem; data write number ``fail_at`` (1-based) fails."""

    def __init__(self, fs, log: list[str], fail_at: int):
        self._fs, self._log, self._fail_at = fs, log, fail_at

    def open_output_stream(self, path: str, *args, **kwargs):
        stream = self._fs.open_output_stream(path, *args, **kwargs)
        if ".sha256" in path:
            return stream                       # sidecars follow their data
        self._log.append(re.sub(r"\.tmp-[0-9a-f]+$", "", path))
        if len(self._log) == self._fail_at:
            return _FailingStream(stream, path)
        return stream

    def __getattr__(self, name):
        return getattr(self._fs, name)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*") if p.is_file()}


def _run(tmp_path: Path, cache: Path, fail_at: int, monkeypatch, capsys) -> tuple[int, str, str, list[str]]:
    writes: list[str] = []
    real = fsutil.filesystem

    def filesystem(uri: str):
        fs, base = real(uri)
        if os.path.abspath(uri) == str(cache):
            return _FullDiskFS(fs, writes, fail_at), base
        return fs, base

    monkeypatch.setattr(cache_mod.fsutil, "filesystem", filesystem)
    rc = run.main([str(SMOKE), "--set", f"experiment.output_dir={tmp_path / 'out'}",
                   "--set", f"storage.cache_dir={cache}",
                   "--set", "data.datasets[0].limit=100", "--set", "autoencoder.train_steps=10"])
    monkeypatch.setattr(cache_mod.fsutil, "filesystem", real)
    out, err = capsys.readouterr()
    return rc, out, err, writes


@pytest.mark.ray
@pytest.mark.timeout(1500)
@needs_fmnist
def test_disk_full_mid_run_keeps_earlier_artifacts(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "local")       # our own Ray, not another session's head
    cache = tmp_path / "cache"
    rc, out, err, writes = _run(tmp_path, cache, 2, monkeypatch, capsys)
    # driver write 1 = the latents table's index, 2 = the classifier space's weights (the
    # VQ-VAE and the table's parts are written by Ray workers)
    assert rc == 1, out[-3000:] + err[-3000:]
    assert len(writes) == 2 and "/latents/" in writes[0] and "/classifier/" in writes[1], (
        writes, err[-2000:])
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: run failed: No space left on device: {writes[1]}.tmp-")
    assert "reused by the next run" in errors[0]
    # Ray forwards its workers' logs ("(TrainController pid=...) ..."); on an overloaded
    # machine they include tracebacks of transient retries. Ours must have none.
    own = [ln for ln in err.splitlines() if not re.match(r"^(\x1b\[\d+m)?\(.*?pid=\d+", ln)]
    assert not any("Traceback" in ln for ln in own), err
    assert not (tmp_path / "out" / ".prunediff.lock").exists()

    # every earlier artifact verifies; the failed one and its temporary file are gone
    ac = ArtifactCache(str(cache))
    latents = "latents/" + Path(writes[0]).stem
    assert writes[0].endswith(".json")
    table = Table(ac, latents)
    assert table.rows > 0 and table.read(["latent"])["latent"].shape[0] == table.rows
    vqvae = [f"vqvae/{p.stem}" for p in (cache / "vqvae").glob("*.bin")]
    assert len(vqvae) == 1 and ac.load_bytes(vqvae[0])
    assert not Path(writes[1]).exists() and not list(cache.rglob("*.tmp-*"))
    before = _snapshot(cache)

    rc2, out2, err2, writes2 = _run(tmp_path, cache, 1, monkeypatch, capsys)
    assert rc2 == 1 and "No space left on device" in err2, out2[-3000:] + err2[-3000:]
    assert "VQ-VAE cached" in out2 and "latents cached" in out2, out2
    assert writes2 == [writes[1]], (writes, writes2)   # nothing written twice
    after = _snapshot(cache)
    assert after == before, set(after.items()) ^ set(before.items())
