"""On-disk dataset cache: stacked NumPy arrays plus a JSON manifest, written atomically.

Layout of one cached dataset (a folder named by a hash of everything that shapes its content)::

    <root>/datasets/<name>-<key>/
        manifest.json      format version, key parts, per-slice records (id, label, split, patient,
                           source, spacing, provenance), fingerprint
        hu.npy             (N, H, W) int16 when every HU is an integer in range (CT is), else float32
        field.npy          (N, H, W) bool, the lung field
        mask.npy           (N, H, W) uint8 {0, 1}
        lung_hu.npy        only when lung_hu is not simply ``hu`` inside the field (Mendeley data)
        readers.npy        (N, R, H, W) uint8, each reader's mask, only for multi-reader sources
        image-<key>.npy    (N, H, W) float32 [0, 1], preprocessed input, one file per window/CLAHE

Nothing is pickled (``np.load(..., allow_pickle=False)``). A folder appears under its final name
only when complete (written under a temporary name, then renamed), so a crash or two processes
building at once never leave a half-written dataset behind. What is read is verified: the manifest
holds the SHA-256 of every array file and of its own records, checked at load (about a second per
GB); a dataset that no longer matches is refused with the folder to delete, a preprocessed
``image-*.npy`` that no longer matches its ``.sha256`` is recomputed. After a load has checked a
file, ``verified.json`` records its digest, size, inode and change times; a later load re-hashes
only the files whose record differs, or that changed less than :data:`RACY_NS` before the check (a
change within the file system's timestamp tick could otherwise go unseen). Writing a file, even
with its old modification time put back, moves its change time (``st_ctime``), so edits are still
caught; what the record cannot see is a disk that flips bits under an unchanged inode.

The root is ``$AUGFORGE_CACHE``, else ``$XDG_CACHE_HOME/augforge``, else ``~/.cache/augforge``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augforge.data.processing import parallel
from augforge.data.processing.lungfield import lung_fields
from augforge.data.processing.preprocess import input_hu, preprocess
from augforge.data.records import NON_LUNG_HU, Dataset, Deferred, Slice, fingerprint_slices
from augforge.errors import DataError
from augforge.fileio import atomic_write_text, atomic_write_with, file_sha256, remove_stale_temporaries, temporary_dir

#: Bump when the cached layout or the content of any built dataset changes.
#: 2: the lung field is computed from the image alone (format 1 added the tumour mask to it).
#: 3: checksums of every file and of the records, verified at load.
FORMAT_VERSION = 3
#: "shifted" and "train-shifted": lidc-phantom with physics "ct", the held-out site (phantom.CT_SPLITS).
SPLITS = ("train", "test", "healthy", "shifted", "train-shifted")
#: A file's record in ``verified.json`` is trusted only if the file last changed at least this long
#: before the check that wrote it.
RACY_NS = 2_000_000_000
VERIFIED = "verified.json"


def cache_root() -> Path:
    """Folder of all augforge caches (see the module docstring for the order of precedence)."""
    if os.environ.get("AUGFORGE_CACHE"):
        return Path(os.environ["AUGFORGE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "augforge"
    return Path.home() / ".cache" / "augforge"


def content_key(parts: dict[str, Any]) -> str:
    """Short stable hash of the JSON of ``parts`` plus the format version."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class SliceStack:
    """A dataset as stacked arrays (what the cache stores), N slices of one shape.

    hu:      (N, H, W) float32 HU; a loaded stack keeps the cache's int16 (its slices convert on first read).
    mask:    (N, H, W) uint8 {0, 1}.
    field:   (N, H, W) bool lung field. Sources leave it None and it is computed here from ``hu``
             alone (:func:`augforge.data.processing.lungfield.lung_field`), so that no source can let the mask
             into it; a source whose data carry their own lung-only image (Mendeley's ``hu_array``)
             passes the field of that image.
    lung_hu: (N, H, W) float32 (int16 when loaded), or None = ``hu`` in ``field``.
    readers: (N, R, H, W) uint8 {0, 1}, each reader's mask where the source has several readers (the
             label ``mask`` is their consensus), else None.
    records: per slice: id, label, split ("train" | "test" | "healthy"), patient, source,
             spacing_mm, provenance (JSON values only).
    meta:    dataset facts (name, source, counts, build parameters).
    """

    hu: np.ndarray
    field: np.ndarray | None
    mask: np.ndarray
    records: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    lung_hu: np.ndarray | None = None
    fingerprint: str = ""
    readers: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.field is None:
            self.field = lung_fields(self.hu)

    def lung_stack(self) -> np.ndarray:
        """(N, H, W) float32 lung-only HU of every slice, in one vectorised pass."""
        if self.lung_hu is not None:
            return self.lung_hu.astype(np.float32, copy=False)
        return _lung_only(self.hu, self.field)

    def slices(self, images: np.ndarray | None = None) -> list[Slice]:
        """Slice records whose arrays are views into the stacks (no per-slice copies); HU stored
        compactly (int16) become float32 slice by slice, when a slice's ``hu`` or ``lung_hu`` is
        first read (:class:`~augforge.data.records.Deferred`)."""
        return [
            Slice(
                id=r["id"],
                hu=_float32_of(self.hu[i]),
                lung_hu=(
                    _float32_of(self.lung_hu[i])
                    if self.lung_hu is not None
                    else Deferred(_lung_only, self.hu[i], self.field[i])
                ),
                mask=self.mask[i],
                label=r["label"],
                spacing_mm=float(r["spacing_mm"]),
                patient=r["patient"],
                source=r["source"],
                provenance=r.get("provenance", {}),
                lung_field=self.field[i],
                image=None if images is None else images[i],
                readers=None if self.readers is None else self.readers[i],
            )
            for i, r in enumerate(self.records)
        ]


def _float32_of(a: np.ndarray) -> np.ndarray | Deferred:
    """``a`` itself when it is float32 (a view, no copy), else a deferred float32 copy."""
    return a if a.dtype == np.float32 else Deferred(np.asarray, a, np.float32)


def _lung_only(hu: np.ndarray, lung_field: np.ndarray) -> np.ndarray:
    """float32 HU inside ``lung_field``, ``NON_LUNG_HU`` outside (one slice or a stack)."""
    return np.where(lung_field, hu.astype(np.float32, copy=False), np.float32(NON_LUNG_HU)).astype(
        np.float32, copy=False
    )


def _compact_hu(hu: np.ndarray) -> np.ndarray:
    """int16 when lossless (integer HU within int16), else float32: halves the cache for real CT."""
    if np.all(np.isfinite(hu)) and hu.min() >= -32768 and hu.max() <= 32767 and np.all(hu == np.rint(hu)):
        return hu.astype(np.int16)
    return hu.astype(np.float32, copy=False)


def _write_npy(path: Path, array: np.ndarray) -> None:
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def _records_sha256(records: Any, meta: Any, fingerprint: str) -> str:
    text = json.dumps(
        {"records": records, "meta": meta, "fingerprint": fingerprint}, sort_keys=True, default=_json_default
    )
    return hashlib.sha256(text.encode()).hexdigest()


def save(folder: Path, stack: SliceStack, key_parts: dict[str, Any]) -> None:
    """Write ``stack`` as ``folder`` atomically (a temporary sibling folder, then a rename)."""
    tmp = temporary_dir(folder.parent, folder.name)
    try:
        _write_npy(tmp / "hu.npy", _compact_hu(stack.hu))
        _write_npy(tmp / "field.npy", stack.field.astype(bool))
        _write_npy(tmp / "mask.npy", stack.mask.astype(np.uint8))
        if stack.lung_hu is not None:
            _write_npy(tmp / "lung_hu.npy", _compact_hu(stack.lung_hu))
        if stack.readers is not None:
            _write_npy(tmp / "readers.npy", stack.readers.astype(np.uint8))
        files = {p.name: file_sha256(p) for p in sorted(tmp.glob("*.npy"))}
        manifest = {
            "format": FORMAT_VERSION,
            "key": key_parts,
            "meta": stack.meta,
            "fingerprint": stack.fingerprint,
            "records": stack.records,
            "sha256": files,
            "records_sha256": _records_sha256(stack.records, stack.meta, stack.fingerprint),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, default=_json_default))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same build first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _map(path: Path) -> np.ndarray:
    """A cached array, memory-mapped copy-on-write: reading it costs nothing until it is used,
    processes loading the same dataset share the page cache, and writes stay private (the arrays
    are writable, the files never change)."""
    return np.asarray(np.load(path, mmap_mode="c", allow_pickle=False))


def _file_state(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _mismatches(folder: Path, digests: dict[str, str]) -> list[str]:
    """The files of ``folder`` named in ``digests`` whose bytes no longer hash to their SHA-256.

    A file that ``verified.json`` vouches for (same digest expected, same size, inode and times as
    when it last matched, and unchanged for :data:`RACY_NS` before that check) is not read again;
    those that are hashed and match are recorded there for the next load."""
    try:
        known = dict(json.loads((folder / VERIFIED).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        known = {}
    bad, fresh = [], {}
    for name, digest in digests.items():
        state = _file_state(folder / name)  # a missing file raises OSError: the caller's to report
        entry = known.get(name)
        entry = entry if isinstance(entry, dict) else {}  # a stamp of another form vouches for nothing
        checked_at = entry.get("checked_at_ns")
        vouched = entry.get("state") == state and entry.get("sha256") == digest and isinstance(checked_at, int)
        if vouched and state[3] <= checked_at - RACY_NS:
            continue
        now = time.time_ns()
        if file_sha256(folder / name) != digest:
            bad.append(name)
        else:
            fresh[name] = {"state": state, "sha256": digest, "checked_at_ns": now}
    if fresh:
        with contextlib.suppress(OSError):  # a read-only cache is hashed in full at every load
            atomic_write_text(folder / VERIFIED, json.dumps({"files": known | fresh}))
    return bad


def load(folder: Path) -> SliceStack:
    """Read a cached dataset written by :func:`save`, verifying every file against its checksum."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise DataError(
                f"{folder}: cache format {manifest.get('format')} is not "
                f"{FORMAT_VERSION}; delete the folder to rebuild it"
            )
        if (
            _records_sha256(manifest["records"], manifest["meta"], manifest["fingerprint"])
            != manifest["records_sha256"]
        ):
            raise DataError(
                f"{folder}: the records in manifest.json changed since the dataset was built; "
                f"delete the folder to rebuild it (rm -r {folder})"
            )
        for name in _mismatches(folder, manifest["sha256"]):
            raise DataError(
                f"{folder / name}: changed since the dataset was built (checksum mismatch); "
                f"delete the folder to rebuild it (rm -r {folder})"
            )

        def arr(name: str) -> np.ndarray:
            return _map(folder / f"{name}.npy")

        # Kept as stored (int16 for CT): slices convert to float32 on first use (SliceStack.slices).
        hu = arr("hu")
        lung_hu = arr("lung_hu") if (folder / "lung_hu.npy").is_file() else None
        readers = arr("readers") if (folder / "readers.npy").is_file() else None
        stack = SliceStack(
            hu=hu,
            field=arr("field"),
            mask=arr("mask"),
            records=manifest["records"],
            meta=manifest["meta"],
            lung_hu=lung_hu,
            fingerprint=manifest["fingerprint"],
            readers=readers,
        )
        if len(stack.records) != len(stack.hu):
            raise DataError(
                f"{folder}: {len(stack.records)} records for {len(stack.hu)} slices; delete the "
                f"folder to rebuild it (rm -r {folder})"
            )
        return stack
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{folder}: damaged dataset cache ({exc}); delete the folder to rebuild it") from None


def dataset_folder(name: str, key_parts: dict[str, Any]) -> Path:
    return cache_root() / "datasets" / f"{name}-{content_key(key_parts)}"


def load_or_build(name: str, key_parts: dict[str, Any], build: Callable[[], SliceStack]) -> tuple[SliceStack, Path]:
    """The cached stack for ``key_parts``, building and saving it on first use."""
    folder = dataset_folder(name, key_parts)
    remove_stale_temporaries(folder.parent)  # what builds killed an hour ago and more left behind
    if (folder / "manifest.json").is_file():
        return load(folder), folder
    stack = build()
    # Hold the values a reload will (int16 HU read back as the same float32 values): cold == warm.
    stack.hu = _compact_hu(stack.hu).astype(np.float32, copy=False)
    if stack.lung_hu is not None:
        stack.lung_hu = _compact_hu(stack.lung_hu).astype(np.float32, copy=False)
    if not stack.fingerprint:
        stack.fingerprint = fingerprint_slices(stack.slices())
    save(folder, stack, key_parts)
    return stack, folder


def images(
    folder: Path,
    stack: SliceStack,
    window: str,
    clahe: bool,
    progress: bool = False,
    *,
    input: str = "lung",
    field_margin_mm: float = 0.0,
) -> np.ndarray:
    """(N, H, W) float32 preprocessed network inputs for ``stack``, computed once per
    (window, CLAHE, input, field margin) and kept beside the dataset."""
    mode = input
    margin = field_margin_mm if mode == "lung" else 0.0
    key = {"window": window.strip().lower(), "clahe": clahe}
    if mode != "lung" or margin:  # the paper's input keeps the key (and file) it always had
        key |= {"input": mode, "field_margin_mm": margin}
    path = folder / f"image-{content_key(key)}.npy"
    digest_path = path.with_name(path.name + ".sha256")
    if path.is_file() and digest_path.is_file():
        try:
            if not _mismatches(folder, {path.name: digest_path.read_text().strip()}):
                out = _map(path)
                if out.shape == stack.hu.shape:
                    return out
        except (OSError, ValueError):
            pass  # a damaged or changed file is recomputed below
    lung = stack.lung_stack()
    hu = stack.hu.astype(np.float32, copy=False)
    if mode == "whole":
        seen = hu
    elif margin:
        seen = np.stack(
            [
                input_hu(hu[i], lung[i], stack.field[i], mode, margin, float(r["spacing_mm"]))
                for i, r in enumerate(stack.records)
            ]
        )
    else:
        seen = lung
    chunks = [(seen[i : i + 64], window, clahe) for i in range(0, len(seen), 64)]
    done = parallel.map_chunks(_preprocess_chunk, chunks, parallel.workers_for(len(seen)), "preprocessing", progress)
    out = np.concatenate(list(done)) if chunks else np.empty(stack.hu.shape, np.float32)
    atomic_write_with(path, lambda f: np.save(f, out, allow_pickle=False))
    atomic_write_text(digest_path, file_sha256(path) + "\n")
    return out


def _preprocess_chunk(args: tuple[np.ndarray, str, bool]) -> np.ndarray:
    lung, window, clahe = args
    return np.stack([preprocess(x, window, clahe) for x in lung]) if len(lung) else lung


def to_dataset(stack: SliceStack, images_: np.ndarray, name: str) -> Dataset:
    """Split the stack into a :class:`Dataset` whose slices are views into the arrays."""
    parts: dict[str, list[Slice]] = {k: [] for k in SPLITS}
    for s, r in zip(stack.slices(images_), stack.records):
        parts[r["split"]].append(s)
    return Dataset(
        name=name,
        train=parts["train"],
        test=parts["test"],
        healthy=parts["healthy"],
        shifted=parts["shifted"],
        train_shifted=parts["train-shifted"],
        meta=dict(stack.meta),
        fingerprint=stack.fingerprint,
    )
