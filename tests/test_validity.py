"""The ground truth never reaches the network's input, for any data source; and a network trained on
images that carry no information about the masks scores near chance.

Every source in ``augforge.data.sources.SOURCE_KINDS`` must have a builder here: a new source that
is not covered fails ``test_every_source_is_guarded``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from augforge.config import DataConfig
from augforge.data.processing.lungfield import lung_field
from augforge.data.sources import SOURCE_KINDS, anatomy, load_dataset

SIZE = 48
#: Ways to change a mask without touching its image: moved sideways, grown, moved and flipped.
MASK_EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "moved": lambda m: np.roll(m, 9, axis=1),
    "grown": lambda m: cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(m.dtype),
    "moved-flipped": lambda m: np.roll(m[::-1], -7, axis=0),
}
INPUTS = [("lung", 0.0), ("lung", 5.0), ("whole", 0.0)]


def chest(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small slice in HU and a tumour mask; the mask touches the edge of the lung, where the
    thresholded field and the tumour disagree (the case that used to leak)."""
    rng = np.random.default_rng(seed)
    c = anatomy.chest_slice(SIZE, rng)
    hu = anatomy.finish(c.hu, anatomy.FOV_MM / SIZE, rng)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    rows, cols = np.nonzero(c.lung)
    r, k = rows[len(rows) // 3], cols[len(cols) // 3]
    mask[r - 2 : r + 3, k - 2 : k + 3] = 1
    return hu.astype(np.float32), mask


# -- one builder per source: writes a dataset whose masks pass through ``edit`` -------------------
def _folder(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,label,split,patient"]
    for i in range(6):
        hu, mask = chest(300 + i)
        np.save(root / "images" / f"s{i}.npy", hu)
        np.save(root / "masks" / f"s{i}.npy", edit(mask))
        rows.append(f"s{i},LR4A,{'test' if i < 2 else 'train'},p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _mendeley(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> Path:
    pd = pytest.importorskip("pandas", reason="the Mendeley loader needs pandas")
    root.mkdir(parents=True)
    for name, offset in (("lung_cancer_train.pkl", 0), ("lung_cancer_test.pkl", 50)):
        frame = []
        for i in range(3):
            hu, mask = chest(400 + offset + i)
            frame.append(
                {
                    "label1": "LR4A",
                    "mask": edit(mask).astype(np.int8),
                    "hu_array_old": hu.astype(np.float64),
                    "hu_array": np.where(lung_field(hu), hu, -2000.0),
                }
            )
        pd.DataFrame(frame).to_pickle(root / name)
    return root


def _dicom(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> Path:
    pytest.importorskip("pydicom", reason="the DICOM loader needs pydicom")
    from conftest import solid_lidc_nodules, write_ct_dicom

    from augforge.data.sources import dicom

    rasterise = dicom._polygon_mask
    monkeypatch.setattr(dicom, "_polygon_mask", lambda outline, shape: edit(rasterise(outline, shape)))
    picks = solid_lidc_nodules(2)
    for k, n in enumerate(picks):
        folder = root / n.patient_id
        folder.mkdir(parents=True)
        c = anatomy.chest_slice(512, np.random.default_rng(k))
        # A fixed SOP instance uid: both builds write identical files.
        write_ct_dicom(
            folder / "0.dcm",
            c.hu,
            patient=n.patient_id,
            series_uid=n.series_uid,
            z_mm=n.outline.z_mm,
            spacing_mm=n.spacing_mm,
            sop_uid=f"1.2.3.{k}",
        )
    return root


def _phantom(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> str:
    from augforge.data.sources import phantom

    render = phantom._tumour_slice

    def edited(size, cand, rng):
        hu, mask, facts = render(size, cand, rng)
        return hu, edit(mask), facts

    monkeypatch.setattr(phantom, "_tumour_slice", edited)
    return phantom.NAME


def _phantom_ct(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> str:
    """lidc-phantom with CT physics (the quick preset's default): the label is edited, the image is
    drawn from one reader's outline at both sites."""
    from augforge.data.sources import phantom

    render = phantom._ct_tumour_slice

    def edited(size, cand, srng, key, sites):
        images, label, drawn, facts = render(size, cand, srng, key, sites)
        return images, edit(label), drawn, facts

    monkeypatch.setattr(phantom, "_ct_tumour_slice", edited)
    return phantom.NAME


def _lidc_slices(root: Path, edit: Callable[[np.ndarray], np.ndarray], monkeypatch) -> Path:
    from conftest import write_lidc_export

    write_lidc_export(root, n_patients=6, size=48)
    for f in root.glob("*/nodule-*/mask-*/slice-*.png"):
        m = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(f), (edit((m > 0).astype(np.uint8)) * 255).astype(np.uint8))
    return root


BUILDERS: dict[str, Callable[..., Path | str]] = {
    "lidc-slices": _lidc_slices,
    "lidc-phantom": _phantom,
    "lidc-phantom-ct": _phantom_ct,
    "folder": _folder,
    "mendeley": _mendeley,
    "lidc-dicom": _dicom,
}


def test_every_source_is_guarded():
    assert {k.removesuffix("-ct") for k in BUILDERS} == set(SOURCE_KINDS), (
        "a data source without a mask-independence test"
    )


def _load(kind: str, tmp: Path, name: str, edit, monkeypatch, mode: str, margin: float):
    """Build the dataset of ``kind`` with edited masks, in a cache of its own."""
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp / f"cache-{name}"))
    monkeypatch.setenv("AUGFORGE_DATA_WORKERS", "1")  # the phantom's edit must run in this process
    with monkeypatch.context() as mp:
        source = BUILDERS[kind](tmp / name, edit, mp)
        cfg = DataConfig(
            source=str(source),
            size=48,
            n_train=6,
            n_test=4,
            n_healthy=2,
            input=mode,
            field_margin_mm=margin,
            offset_px=6,
            physics="ct" if kind == "lidc-phantom-ct" else "v4",
        )
        return load_dataset(cfg, allow_pickle=True, progress=False)


@pytest.mark.parametrize(("mode", "margin"), INPUTS)
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_changing_the_mask_leaves_the_network_input_unchanged(kind, mode, margin, tmp_path, monkeypatch):
    if kind == "lidc-slices" and mode == "lung":
        pytest.skip("8-bit crops have no Hounsfield units: the lung input is refused (test_lidc_slices.py)")
    base = _load(kind, tmp_path, "base", lambda m: m, monkeypatch, mode, margin)
    slices = {s.id: s for s in base.train + base.test + base.shifted}
    assert slices and any(s.has_tumour for s in slices.values())
    for name, edit in MASK_EDITS.items():
        other = _load(kind, tmp_path, name, edit, monkeypatch, mode, margin)
        changed = 0
        for s in other.train + other.test + other.shifted:
            if s.id not in slices:  # a multi-reader source may keep other slices once the masks move
                continue
            ref = slices[s.id]
            changed += not np.array_equal(s.mask, ref.mask)
            assert np.array_equal(s.hu, ref.hu), f"{kind}/{name}: {s.id} image differs"
            assert np.array_equal(s.lung_field, ref.lung_field), f"{kind}/{name}: {s.id} lung field follows the mask"
            assert np.array_equal(s.image, ref.image), f"{kind}/{name}: {s.id} network input follows the mask"
        assert changed, f"{kind}/{name}: the edit changed no mask, so the test proves nothing"


def test_the_field_is_the_image_s_own(tmp_path, monkeypatch):
    """A tumour the thresholded field misses stays outside it: the input does not trace the label."""
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "cache"))
    hu, mask = chest(1)
    mask[:] = 0
    mask[:6, :6] = 1  # in the corner, outside any lung
    root = tmp_path / "corner"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(4):
        np.save(root / "images" / f"s{i}.npy", hu)
        np.save(root / "masks" / f"s{i}.npy", mask)
    (root / "labels.csv").write_text(
        "id,split,patient\n" + "".join(f"s{i},{'test' if i == 0 else 'train'},p{i}\n" for i in range(4))
    )
    ds = load_dataset(DataConfig(source=str(root)), progress=False)
    s = ds.test[0]
    assert not s.lung_field[mask.astype(bool)].any()
    assert np.array_equal(s.lung_field, lung_field(hu))


def write_noise_folder(root: Path, n_train: int = 40, n_test: int = 20, size: int = 64, seed: int = 0) -> Path:
    """Images of uniform noise in -1000..400 HU, masks of random disks of radius 4-9 px: the image
    says nothing about the mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,split,patient"]
    for i in range(n_train + n_test):
        np.save(root / "images" / f"n{i:03d}.npy", rng.uniform(-1000, 400, (size, size)).astype(np.float32))
        mask = np.zeros((size, size), np.uint8)
        r = int(rng.integers(4, 10))
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        cv2.circle(mask, (cx, cy), r, 1, -1)
        np.save(root / "masks" / f"n{i:03d}.npy", mask)
        rows.append(f"n{i:03d},{'train' if i < n_train else 'test'},p{i:03d}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lung", "whole"])
def test_information_free_images_score_near_chance(mode, tmp_path):
    """A baseline trained on noise with random disk masks must not beat chance (it scored 0.64 when
    the lung field carried the mask)."""
    from typer.testing import CliRunner

    from augforge.cli import app

    data = write_noise_folder(tmp_path / "noise")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--data",
            str(data),
            "--strategy",
            "none",
            "--no-baseline",
            "--preset",
            "tiny",
            "--set",
            "train.epochs=30",
            "--set",
            f"data.input={mode}",
            "--out",
            str(out),
            "--no-samples",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    rec = json.loads((out / "trials.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok"
    assert rec["metrics"]["dice"] <= 0.15, rec["metrics"]
