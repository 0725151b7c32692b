"""Shared pieces of the data sources: result types, held-out reference, subset
selection, fingerprints.

See ``orchestrator.data.sources`` for the registry and the user-facing description.

Every source splits its images into two roles: ``"train"`` (everything the pipeline
trains, scores and selects on) and ``"reference"`` (the held-out images the metrics
compare against, never seen by training, the proxy, scoring or selection). A source
with a ``reference_split`` (Fashion-MNIST ``test``, ImageNet ``val``) takes the whole
other split as its reference and its training images are unchanged by the holdout; any
other source removes a seeded ``holdout`` share first, before ``skew`` and ``limit``.
The reference is then capped at ``cap`` images (``eval.num_real``), a seeded subsample.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from orchestrator.data import DatasetConfig
from orchestrator.data.images import gray_to_rgb, resize_batch
from orchestrator.errors import ConfigError, SourceError

FINGERPRINT_SAMPLES = 32
ROLES = ("train", "reference")
# SeedSequence([dataset seed, stream]) streams of the draws over a source's images
SKEW_STREAM, LIMIT_STREAM, HOLDOUT_STREAM, CAP_STREAM = 1, 2, 3, 4


def key_id(key: str) -> int:
    """The int63 id of a sample key (streaming sources): the first 8 bytes of the key's
    sha256 (UTF-8), big-endian, shifted right by one bit so it fits a non-negative int64."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def _no_strings() -> np.ndarray:
    return np.zeros(0, dtype=object)


@dataclass(frozen=True)
class SkippedFile:
    """A sample that could not be decoded: ``path`` is its key (for a folder, the path
    relative to the dataset root), ``reason`` why (``zero-byte file``, ``corrupt image: ..``)."""

    path: str
    reason: str


@dataclass(frozen=True)
class SourceArrays:
    ids: np.ndarray            # (N,) int64, sorted
    images: np.ndarray         # (N, R, R, 3) uint8
    labels: np.ndarray         # (N,) int64, -1 = unlabelled
    fingerprint: str           # sha256 hex; names every downstream artifact
    num_classes: int           # 0 when unlabelled
    skipped: tuple[SkippedFile, ...] = ()
    keys: np.ndarray = field(default_factory=_no_strings)   # (N,) object str: the sample's key
    uris: np.ndarray = field(default_factory=_no_strings)   # (N,) object str: where its bytes are

    def keys_and_uris(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, uris), each (N,) object str: the arrays' own, else ``str(id)`` keys and
        empty uris (a source that names its samples only by id)."""
        n = len(self.ids)
        keys = self.keys if len(self.keys) == n else np.array([str(i) for i in self.ids], object)
        uris = self.uris if len(self.uris) == n else np.full(n, "", object)
        return keys, uris


@dataclass(frozen=True)
class SourceData:
    """A source's Ray Data view: rows ``{id: int64, key: str, uri: str, image: uint8
    (R, R, 3), label: int64 (-1 = unlabelled), error: str ("" = good; else the reason, and
    the image is zeros)}``. Bad rows stay in the stream; the consuming stage lists them.

    ``count``: rows (good + bad) when known without reading them, else None;
    ``num_classes``: None when only known after reading (max(label) + 1 of good rows).
    """

    name: str
    dataset: Any               # ray.data.Dataset of {id, key, uri, image, label, error}
    fingerprint: str
    count: int | None
    num_classes: int | None
    skipped: tuple[SkippedFile, ...] = ()


def select_subset(labels: np.ndarray, ds: DatasetConfig) -> np.ndarray:
    """Positions kept by ``skew`` (per label) then ``limit`` (uniform), sorted int64.

    ``skew`` maps a label (or ``"*"`` for every other label) to the fraction of that
    label's images kept, ``round(n_label * fraction)`` of them.
    """
    n = len(labels)
    keep = np.arange(n, dtype=np.int64)
    if ds.skew:
        rng = np.random.default_rng(np.random.SeedSequence([ds.seed, SKEW_STREAM]))
        default = ds.skew.get("*", 1.0)
        parts = []
        for label in np.unique(labels):
            members = keep[labels == label]
            frac = ds.skew.get(str(int(label)), default)
            m = int(round(len(members) * frac))
            parts.append(np.sort(rng.choice(members, size=m, replace=False)))
        keep = np.sort(np.concatenate(parts)) if parts else keep
    if ds.limit is not None and ds.limit < len(keep):
        rng = np.random.default_rng(np.random.SeedSequence([ds.seed, LIMIT_STREAM]))
        keep = np.sort(rng.choice(keep, size=ds.limit, replace=False))
    return keep


def held_out(n: int, ds: DatasetConfig) -> np.ndarray:
    """The ``round(n * ds.holdout)`` positions of ``range(n)`` held out as the reference,
    sorted int64, drawn with the dataset seed (independent of ``limit`` and ``skew``)."""
    m = int(round(n * ds.holdout))
    rng = np.random.default_rng(np.random.SeedSequence([ds.seed, HOLDOUT_STREAM]))
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def cap_positions(positions: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most ``cap`` of ``positions`` (a seeded uniform subsample), sorted int64."""
    positions = np.asarray(positions, dtype=np.int64)
    if cap is None or cap >= len(positions):
        return positions
    rng = np.random.default_rng(np.random.SeedSequence([seed, CAP_STREAM]))
    return np.sort(rng.choice(positions, size=cap, replace=False))


def fingerprint(ds: DatasetConfig, ids: np.ndarray, labels: np.ndarray,
                blobs: list[bytes], extra: str = "", holdout: float | None = None) -> str:
    """sha256 of the subset (ids, labels, count), a bytes sample and the settings.

    ``holdout`` is hashed only when the source holds out a share (so the training
    fingerprints of sources with a reference split are what they were before).
    """
    h = hashlib.sha256()
    settings = {"source": ds.source, "split": ds.split, "resolution": ds.resolution,
                "limit": ds.limit, "skew": ds.skew, "seed": ds.seed, "count": int(len(ids)),
                "class_subfolders": ds.class_subfolders}
    if holdout is not None:
        settings["holdout"] = holdout
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    h.update(extra.encode())
    return h.hexdigest()


def sample_positions(n: int, k: int = FINGERPRINT_SAMPLES) -> np.ndarray:
    """Up to ``k`` evenly spaced positions in ``range(n)`` (the fingerprint sample)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).astype(np.int64)) if n else np.zeros(0, np.int64)


class Source:
    """Base class; subclasses fill ``arrays`` (the rows in memory). The Ray executor's view
    is ``orchestrator.runtime.ray_sources.ray_view`` (folders and streaming sources give it
    their files to read instead).

    ``reference_split`` names the split that is the held-out reference (its images are
    never trained on); None means a seeded ``holdout`` share of the entry's own images.
    """

    name: ClassVar[str]
    splits: ClassVar[tuple[str | None, ...] | None] = None   # None = any string
    reference_split: ClassVar[str | None] = None
    label_hint: ClassVar[str] = "set class_subfolders: true"   # how an entry gets labels

    def labelled(self, ds: DatasetConfig) -> bool:
        return True

    @property
    def holds_out(self) -> bool:
        """Whether the reference is a held-out share of the entry's own images."""
        return self.reference_split is None

    def role_config(self, ds: DatasetConfig, role: str) -> DatasetConfig:
        """The entry whose images ``role`` draws from (the reference split's, or ``ds``)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if role == "reference" and self.reference_split is not None:
            return replace(ds, split=self.reference_split, limit=None, skew=None)
        return ds

    def positions(self, labels: np.ndarray, ds: DatasetConfig, role: str,
                  cap: int | None = None) -> np.ndarray:
        """Sorted int64 positions (= ids) of ``role``'s images among the ``labels`` of
        ``role_config(ds, role)``: the held-out share comes off first, then skew/limit
        (training) or the cap (reference)."""
        n = len(labels)
        if role == "train":
            if not self.holds_out:
                return select_subset(labels, ds)
            rest = np.setdiff1d(np.arange(n, dtype=np.int64), held_out(n, ds))
            return rest[select_subset(labels[rest], ds)]
        pos = held_out(n, ds) if self.holds_out else np.arange(n, dtype=np.int64)
        return cap_positions(pos, cap, ds.seed)

    def fingerprint_of(self, ds: DatasetConfig, role: str, cap: int | None, ids: np.ndarray,
                       labels: np.ndarray, blobs: list[bytes], extra: str = "") -> str:
        """The fingerprint of ``role``'s selection (the reference's names role and cap)."""
        if role == "reference":
            extra = f"{extra}\nreference of {self.name} split {ds.split!r}, cap {cap}"
        return fingerprint(self.role_config(ds, role), ids, labels, blobs, extra,
                           holdout=ds.holdout if self.holds_out else None)

    def reference_origin(self, ds: DatasetConfig) -> str:
        """Where the reference comes from, in words (dry-run, MLflow, report header)."""
        if self.holds_out:
            return f"held-out share {ds.holdout:g} of {self.name} (data seed {ds.seed})"
        return f"{self.name} split '{self.reference_split}'"

    def reference_count(self, ds: DatasetConfig, cap: int | None = None) -> int | None:
        """Images of the reference after the cap, if cheap to know (else None)."""
        return None

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        """Raise ConfigError (key-prefixed) for a bad entry; the image count if cheap."""
        if self.splits is not None and ds.split not in self.splits:
            raise ConfigError(f"{key}.split: {ds.split!r} is not one of "
                              f"{', '.join(str(s) for s in self.splits)} for {self.name}")
        if self.reference_split is not None and ds.split == self.reference_split:
            raise ConfigError(f"{key}.split: {ds.split!r} is the held-out reference of "
                              f"{self.name}; training on it would score against training images")
        if not self.labelled(ds):
            if ds.conditional:
                raise ConfigError(f"{key}.conditional: {self.name} here has no labels "
                                  f"({self.label_hint} or conditional: false)")
            if ds.skew:
                raise ConfigError(f"{key}.skew: needs labels, which {self.name} here lacks")
        return ds.limit

    def count_note(self, ds: DatasetConfig) -> str:
        """What the dry-run says when ``check`` returns no image count."""
        return "unknown (set data.datasets[].limit)"

    def arrays(self, ds: DatasetConfig, role: str = "train", cap: int | None = None) -> SourceArrays:
        raise NotImplementedError


def check_split_sizes(key: str, name: str, ds: DatasetConfig, n: int, n_train: int,
                      n_ref: int, holds_out: bool) -> None:
    """ConfigError when the reference or the training images would be empty."""
    if n_ref == 0:
        if holds_out:
            raise ConfigError(f"{key}.holdout: {ds.holdout:g} of {n} images holds out none; "
                              "the held-out reference would be empty")
        raise ConfigError(f"{key}.path: the reference split '{name}' has no images")
    if n_train == 0:
        what = "holdout" if holds_out and round(n * ds.holdout) >= n else (
            "skew" if ds.skew else "limit")
        raise ConfigError(f"{key}.{what}: leaves no training image of {n}")


class LabelledArraySource(Source):
    """Sources held as small numpy arrays: ``raw`` gives native images and labels."""

    def raw_labels(self, ds: DatasetConfig) -> np.ndarray:
        return self.raw(ds)[1]

    def raw(self, ds: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
        """(N, h, w) or (N, h, w, 3) uint8 images and (N,) int64 labels."""
        raise NotImplementedError

    def names(self, ds: DatasetConfig, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, uris) of the images at ``positions`` of ``ds``'s split, (N,) object str."""
        keys = np.array([f"{self.name}/{i}" for i in positions], dtype=object)
        return keys, np.array([f"{self.name}#{i}" for i in positions], dtype=object)

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        super().check(ds, key)
        try:
            labels = self.raw_labels(ds)
            ref_cfg = self.role_config(ds, "reference")
            ref_labels = labels if ref_cfg is ds else self.raw_labels(ref_cfg)
        except SourceError as e:
            raise ConfigError(f"{key}.path: {e}") from None
        n_train = len(self.positions(labels, ds, "train"))
        n_ref = len(self.positions(ref_labels, ds, "reference"))
        check_split_sizes(key, str(ref_cfg.split), ds, len(labels), n_train, n_ref, self.holds_out)
        return n_train

    def reference_count(self, ds: DatasetConfig, cap: int | None = None) -> int | None:
        try:
            return len(self.positions(self.raw_labels(self.role_config(ds, "reference")), ds,
                                      "reference", cap))
        except SourceError:
            return None

    def arrays(self, ds: DatasetConfig, role: str = "train", cap: int | None = None) -> SourceArrays:
        role_cfg = self.role_config(ds, role)
        images, labels = self.raw(role_cfg)
        keep = self.positions(labels, ds, role, cap)
        small = resize_batch(images[keep], ds.resolution)
        rgb = small if small.ndim == 4 else gray_to_rgb(small)
        labels = labels[keep].astype(np.int64)
        blobs = [rgb[i].tobytes() for i in sample_positions(len(keep))]
        keys, uris = self.names(role_cfg, keep)
        return SourceArrays(keep, rgb, labels,
                            self.fingerprint_of(ds, role, cap, keep, labels, blobs),
                            num_classes=int(labels.max(initial=-1)) + 1, keys=keys, uris=uris)
