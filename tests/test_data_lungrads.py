"""Lung-RADS v2022 classes from size and texture, and the LIDC annotation reader."""

from __future__ import annotations

import numpy as np
import pytest

from augforge.data.processing import lungrads
from augforge.data.sources import lidc
from augforge.errors import DataError


@pytest.mark.parametrize(
    ("diameter", "texture", "solid", "expected"),
    [
        (5.9, 5, None, "LR2"),
        (5.96, 5, None, "LR3"),  # 5.96 mm rounds to 6.0 mm
        (6.0, 4, None, "LR3"),
        (7.9, 5, None, "LR3"),
        (8.0, 5, None, "LR4A"),
        (14.9, 5, None, "LR4A"),
        (15.0, 5, None, "LR4B"),
        (40.0, 4, None, "LR4B"),
        (29.9, 1, None, "LR2"),
        (30.0, 1, None, "LR3"),
        (45.0, 2, None, "LR3"),
        (5.0, 3, 4.0, "LR2"),
        (10.0, 3, 5.9, "LR3"),
        (10.0, 3, 6.0, "LR4A"),
        (10.0, 3, 8.0, "LR4B"),
        (10.0, 3, 0.0, "LR3"),
        (14.0, 3, None, "LR4A"),  # solid part taken as half of the diameter: 7 mm
    ],
)
def test_classify_follows_the_lung_rads_table(diameter, texture, solid, expected):
    assert lungrads.classify(diameter, texture, solid) == expected


def test_part_solid_core_cannot_exceed_the_nodule():
    assert lungrads.classify(7.0, 3, 20.0) == lungrads.classify(7.0, 3, 7.0) == "LR4A"


@pytest.mark.parametrize(("diameter", "texture"), [(0.0, 5), (-1.0, 5), (float("nan"), 5), (5.0, 0), (5.0, 6)])
def test_classify_rejects_impossible_input(diameter, texture):
    with pytest.raises(DataError):
        lungrads.classify(diameter, texture)


def test_texture_types():
    assert [lungrads.nodule_type(t) for t in range(1, 6)] == [
        "ground-glass",
        "ground-glass",
        "part-solid",
        "solid",
        "solid",
    ]


def test_polygon_area_and_axes():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    assert lidc.polygon_area(square) == pytest.approx(100.0)
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    ellipse = np.stack([10 * np.cos(t), 4 * np.sin(t)], axis=1)
    long_axis, short_axis = lidc.axes_px(ellipse)
    assert long_axis == pytest.approx(20.0, abs=0.05)
    assert short_axis == pytest.approx(8.0, abs=0.05)


def test_reads_the_real_lidc_annotations():
    nodules = lidc.read_nodules()
    assert 6500 < len(nodules) <= 6859
    first = next(n for n in nodules if n.annotation_id == 1)
    assert (first.patient_id, first.texture, first.spacing_mm) == ("LIDC-IDRI-0078", 5, 0.65)
    assert first.long_axis_mm >= first.short_axis_mm > 0
    assert first.outline.area_px == pytest.approx(
        sum(map(lidc.polygon_area, first.outline.inclusions)) - sum(map(lidc.polygon_area, first.outline.exclusions))
    )
    # Up to four radiologists read each nodule: first readings are a minority of all annotations.
    ranks = [n.reader_rank for n in nodules]
    assert 0.3 < ranks.count(0) / len(ranks) < 0.7 and max(ranks) >= 3
    # The disk index reproduces the parse exactly.
    lidc.read_nodules.cache_clear()
    again = lidc.read_nodules()
    assert len(again) == len(nodules) and all(
        a.annotation_id == b.annotation_id
        and a.long_axis_mm == b.long_axis_mm
        and a.patient_id == b.patient_id
        and a.reader_rank == b.reader_rank
        and all(np.array_equal(p, q) for p, q in zip(a.outline.inclusions, b.outline.inclusions))
        for a, b in zip(again, nodules)
    )


def test_holes_are_read_as_exclusions():
    holes = [n.outline for n in lidc.read_nodules() if n.outline.exclusions]
    assert holes, "the LIDC file has 992 exclusion contours"
    assert all(o.area_px < sum(map(lidc.polygon_area, o.inclusions)) for o in holes)


def test_outlines_of_one_series():
    n = lidc.read_nodules()[0]
    outlines = lidc.read_outlines(series_uid=n.series_uid)
    assert n.annotation_id in outlines
    assert n.outline.z_mm in outlines[n.annotation_id]
    assert lidc.read_outlines(series_uid="no.such.series") == {}
