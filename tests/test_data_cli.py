"""`augforge data build | info | preview` end to end on the tiny preset."""

from __future__ import annotations

import json

import pytest

from augforge.cli import main


def test_build_then_info_json(capsys):
    assert main(["data", "build", "--preset", "tiny"]) == 0
    assert "24 train / 12 test / 12 healthy" in capsys.readouterr().out
    assert main(["data", "info", "lidc-phantom", "--preset", "tiny", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["slices"] == {"train": 24, "test": 12, "healthy": 12}
    assert facts["classes"]["test"] == {"LR2": 2, "LR3": 2, "LR4A": 4, "LR4B": 4}
    assert facts["shape"] == [[64, 64]]
    assert facts["lidc"]["annotations"] == 36
    assert facts["hu"]["min"] >= -1024 and facts["hu"]["max"] > 300
    assert main(["data", "info", "lidc-phantom", "--preset", "tiny", "--slices"]) == 0
    rows = json.loads(capsys.readouterr().out)["slice_records"]
    assert len(rows) == 48
    tumour = [r for r in rows if r["split"] != "healthy"]
    assert len(tumour) == 36
    assert all(r["provenance"]["annotation_id"] and r["provenance"]["scan_id"] for r in tumour)


def test_info_options_override_the_preset(capsys):
    assert (
        main(
            [
                "data",
                "info",
                "lidc-phantom",
                "--preset",
                "tiny",
                "--n-test",
                "5",
                "--n-train",
                "6",
                "--n-healthy",
                "0",
                "--json",
            ]
        )
        == 0
    )
    facts = json.loads(capsys.readouterr().out)
    assert facts["slices"] == {"train": 6, "test": 5, "healthy": 0}


def test_info_table_for_people(capsys):
    assert main(["data", "info", "lidc-phantom", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "LR4B" in out and "LIDC provenance" in out


def test_preview_writes_a_png(tmp_path, capsys):
    import cv2

    out = tmp_path / "preview.png"
    assert main(["data", "preview", "lidc-phantom", "--preset", "tiny", "--out", str(out), "--per-class", "2"]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300
    assert img.std() > 20  # a picture, not a blank


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "info", "/no/such/dataset"], "no such file or folder"),
        (["data", "preview", "lidc-phantom", "--preset", "tiny", "--out", "/no/such/dir/p.png"], "does not exist"),
        (["data", "build", "--preset", "nope"], "unknown preset"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(argv, message, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
