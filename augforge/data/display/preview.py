"""A picture of a dataset: a row per Lung-RADS class, slices in the lung window, tumour outlines.

Each row shows up to ``per_class`` slices of one class (test split first, then train; LR1 from the
healthy pool), the whole slice in the lung window (level -600, width 1500 HU, the way a radiologist
reads the lungs) with the tumour mask outlined, plus a 4x zoom on the nodule so that a 5 mm nodule
is visible on a 256-pixel slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augforge.data.records import LUNG_RADS_CLASSES, Dataset, Slice
from augforge.errors import DataError, UsageError

LUNG_WINDOW = (-600.0, 1500.0)


def pick(ds: Dataset, per_class: int) -> dict[str, list[Slice]]:
    """Up to ``per_class`` slices per class, test first, a slice of every nodule type first:
    ``{class: [slices]}`` for the classes present."""
    rows: dict[str, list[Slice]] = {}
    for label in LUNG_RADS_CLASSES:
        pool = [s for s in (ds.healthy + ds.train if label == "LR1" else ds.test + ds.train) if s.label == label]
        # One of each nodule type (solid, part-solid, ground glass) first, when the class has them.
        firsts: dict[str, Slice] = {}
        for s in pool:
            firsts.setdefault(str(s.provenance.get("nodule_type", "")), s)
        chosen = list(firsts.values())[:per_class]
        chosen += [s for s in pool if all(s is not c for c in chosen)][: per_class - len(chosen)]
        if chosen:
            rows[label] = chosen
    return rows


def windowed(hu: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """(H, W) HU -> (H, W) float32 in [0, 1] for display."""
    level, width = window
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _minmax(x: np.ndarray) -> np.ndarray:
    """(H, W) intensities without a physical scale -> (H, W) float32 in [0, 1] for display."""
    x = np.asarray(x, np.float32)
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo)


def _zoom_box(s: Slice, zoom: int) -> tuple[int, int, int]:
    """(row0, col0, side) of a square around the tumour (or the slice centre) for the inset."""
    h, w = s.shape
    side = max(h // zoom, 8)
    if s.has_tumour:
        rows, cols = np.nonzero(s.mask)
        cr, cc = int(rows.mean()), int(cols.mean())
        side = max(side, int(max(np.ptp(rows), np.ptp(cols)) * 1.6) + 4)
    elif s.lung_field is not None and s.lung_field.any():
        # A healthy slice: zoom where the lung is deepest, on parenchyma and vessels.
        import cv2

        dist = cv2.distanceTransform(s.lung_field.astype(np.uint8), cv2.DIST_L2, 3)
        cr, cc = np.unravel_index(int(dist.argmax()), dist.shape)
    else:
        cr, cc = h // 2, w // 2
    side = min(side, h, w)
    r0 = int(np.clip(cr - side // 2, 0, h - side))
    c0 = int(np.clip(cc - side // 2, 0, w - side))
    return r0, c0, side


def check_output(out: Path) -> Path:
    """``out`` as a Path, or a UsageError when its folder does not exist (checked before any work)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    return out


def save_preview(ds: Dataset, out: Path, per_class: int = 4, title: str | None = None) -> Path:
    """Write the preview grid of ``ds`` as a PNG at ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = pick(ds, per_class)
    if not rows:
        raise DataError(f"dataset {ds.name!r} has no slices to preview")
    ncol = max(len(v) for v in rows.values())
    tile = 2.0  # inches per panel
    fig, axes = plt.subplots(len(rows), 2 * ncol, figsize=(tile * 2 * ncol, tile * len(rows) + 0.4), squeeze=False)
    fig.subplots_adjust(
        left=0.005, right=0.995, bottom=0.005, top=1 - 0.4 / (tile * len(rows) + 0.4), wspace=0.02, hspace=0.04
    )
    fig.patch.set_facecolor("black")
    for ax in axes.ravel():
        ax.set_axis_off()
    hu_data = str(ds.meta.get("intensity", "HU")) == "HU"
    reader_colours = ["#3fa7ff", "#ffd23f", "#3fff8f", "#ff8cf0", "#ffffff", "#ff9f3f"]
    split_roles = ds.meta.get("reader_roles") == ["drawn", "label"]
    for r, (label, slices) in enumerate(rows.items()):
        for c, s in enumerate(slices):
            full, zoom = axes[r, 2 * c], axes[r, 2 * c + 1]
            img = windowed(s.hu) if hu_data else _minmax(s.hu)
            r0, c0, side = _zoom_box(s, 4)
            crop = (slice(r0, r0 + side), slice(c0, c0 + side))
            full.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
            zoom.imshow(img[crop], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            for ax, m in ((full, s.mask), (zoom, s.mask[crop])):
                if m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors=["#ff3030"], linewidths=0.9)
            if s.readers is not None:  # every reader's own outline, thin, one colour each
                # (lidc-phantom's reader split keeps the drawn outline and the label: the first only)
                shown_readers = np.asarray(s.readers)[:1] if split_roles else np.asarray(s.readers)
                for k, rm in enumerate(shown_readers):
                    if rm[crop].any():
                        zoom.contour(
                            rm[crop].astype(float),
                            levels=[0.5],
                            linewidths=0.6,
                            colors=[reader_colours[k % len(reader_colours)]],
                        )
            full.add_patch(
                matplotlib.patches.Rectangle(
                    (c0 - 0.5, r0 - 0.5), side, side, fill=False, edgecolor="#ffd23f", linewidth=0.7
                )
            )
            prov = s.provenance
            note = label
            if "diameter_mm" in prov:
                note += f"  {prov['diameter_mm']:.1f} mm {prov.get('nodule_type', '')}"
            full.text(0.03, 0.97, note, transform=full.transAxes, color="white", fontsize=7, va="top", ha="left")
            zoom.text(
                0.03, 0.97, f"{s.shape[0] / side:.1f}x", transform=zoom.transAxes, color="#ffd23f", fontsize=6, va="top"
            )
    shown = "lung window L-600 W1500" if hu_data else f"{ds.meta.get('intensity')} intensities, min-max"
    names = ["blue", "yellow", "green", "pink", "white", "orange"]
    if ds.meta.get("reader_roles") == ["drawn", "label"]:
        readers = "; zoom: blue = the reader's outline the image was drawn from"
    elif any(s.readers is not None for v in rows.values() for s in v):
        readers = f"; zoom: each reader's outline ({', '.join(names[: int(ds.meta.get('readers', 0))])})"
    else:
        readers = ""
    fig.suptitle(
        title
        or f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test / "
        f"{len(ds.healthy)} healthy; {shown}; red = tumour mask (label){readers}",
        color="white",
        fontsize=9,
        y=1 - 0.08 / (tile * len(rows) + 0.4),
    )
    out = check_output(out)
    fig.savefig(out, dpi=110, facecolor=fig.get_facecolor())
    plt.close(fig)
    return out
