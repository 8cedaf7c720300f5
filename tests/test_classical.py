"""The classical strategies (plugins/classical.py) and the albumentations adapter (augforge/transforms.py).

Spatial ops keep the mask binary and aligned with the image; intensity ops never return NaN, a
constant image or a collapsed range on a real phantom slice; parameters are validated; the same
seed gives the same samples.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from augforge.config import get_preset
from augforge.errors import DataError, UsageError
from augforge.plugins import get_registry
from augforge.strategy import ComposedTransform
from augforge.transforms import AlbumentationsStrategy, AlbumentationsTransform, load_albumentations

CLASSICAL = ("affine", "flip", "rotate", "elastic", "intensity", "classical")
SPATIAL = ("affine", "flip", "rotate", "elastic", "classical")

#: Every intensity op of `intensity`/`classical`, switched off; a test turns one on at a time.
INTENSITY_OFF = {
    k: 0.0 for k in ("p_noise", "p_blur", "p_brightness", "p_contrast", "p_lowres", "p_gamma", "p_gamma_inverted")
}
SPATIAL_OFF = {"p_rotation": 0.0, "p_scaling": 0.0, "p_mirror_h": 0.0, "p_mirror_v": 0.0}

#: Parameters that make each spatial strategy warp every sample (intensity ops off).
ALWAYS_WARP = {
    "affine": {"p": 1.0, "rotate_deg": 30.0, "hflip": 0.5, "vflip": 0.5},
    "flip": {"p": 1.0, "axis": "both"},
    "rotate": {"p": 1.0, "limit_deg": 90.0},
    "elastic": {"p_elastic": 1.0, "p_grid": 1.0},
    "classical": {**INTENSITY_OFF, "p_rotation": 1.0, "p_scaling": 1.0},
}


@pytest.fixture(scope="module")
def registry():
    reg = get_registry()
    assert not reg.errors, reg.errors
    return reg


@pytest.fixture(scope="module")
def phantom():
    """Training slices of the embedded phantom (tiny preset): preprocessed images in [0, 1]."""
    from augforge.data.sources import load_dataset

    ds = load_dataset(get_preset("tiny").data, progress=False)
    slices = [s for s in ds.train if s.has_tumour]
    assert slices and all(s.image is not None for s in slices)
    return slices


@pytest.fixture(scope="module")
def slice_(phantom):
    """One phantom slice with a tumour: image (64, 64) float32 in [0, 1], mask uint8."""
    s = max(phantom, key=lambda s: int(s.mask.sum()))  # the largest nodule: alignment is measurable
    return s.image, s.mask


def _blob(size: int = 64, radius: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """A disc mask off-centre, and an image that *is* the mask (0.1 outside, 0.9 inside)."""
    yy, xx = np.mgrid[:size, :size]
    mask = (((yy - 24.0) ** 2 + (xx - 38.0) ** 2) <= radius**2).astype(np.uint8)
    return (0.1 + 0.8 * mask).astype(np.float32), mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _run(transform, image, mask, n):
    return [transform(image, mask) for _ in range(n)]


# -- registration ------------------------------------------------------------------------------------


def test_all_classical_strategies_are_registered_by_the_plugin(registry):
    for name in CLASSICAL:
        assert registry.entries[name].plugin == "classical"
        assert registry.get(name).description


def test_an_all_zero_pipeline_is_no_transform(registry):
    assert registry.create("affine", {"affine": {"p": 0, "hflip": 0}}).build_transform(0) is None
    assert registry.create("rotate", {"rotate": {"limit_deg": 0}}).build_transform(0) is None


# -- spatial ops: binary, aligned, constant-air border -----------------------------------------------


@pytest.mark.parametrize("name", SPATIAL)
def test_spatial_ops_keep_the_mask_binary_and_aligned(registry, name):
    image, mask = _blob()
    transform = registry.create(name, {name: ALWAYS_WARP[name]}).build_transform(seed=3)
    changed = 0
    for out_image, out_mask in _run(transform, image, mask, 12):
        assert out_image.shape == mask.shape and out_image.dtype == np.float32
        assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= {0, 1}
        # the image carries the mask: where it moved, the mask must have moved with it
        assert _iou(out_image > 0.5, out_mask == 1) > 0.85
        changed += not np.array_equal(out_mask, mask)
    assert changed >= 6, "the ops were set to fire on (almost) every sample"


def test_flip_is_exact(registry):
    image, mask = _blob()
    transform = registry.create("flip", {"flip": {"p": 1.0}}).build_transform(0)
    out_image, out_mask = transform(image, mask)
    assert np.array_equal(out_image, image[:, ::-1]) and np.array_equal(out_mask, mask[:, ::-1])


def test_rotation_fills_new_pixels_with_air_not_reflected_tissue(registry):
    # tissue up to the border, as in a crop: only a constant-0 fill leaves the corners at 0 (air)
    image = np.full((64, 64), 0.5, np.float32)
    mask = np.zeros((64, 64), np.uint8)
    transform = registry.create("rotate", {"rotate": {"p": 1.0, "limit_deg": 45.0}}).build_transform(1)
    for out, _ in _run(transform, image, mask, 8):
        corners = out[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.max() < 0.25, corners  # 0, or a blend with 0 at the smallest angles
        assert out[32, 32] == pytest.approx(0.5)


def test_the_real_tumour_stays_under_its_mask(registry, slice_):
    """On a phantom slice the nodule is brighter than the lung around it, before and after a warp."""
    image, mask = slice_
    base = image[mask == 1].mean()
    transform = registry.create("affine", {"affine": {"p": 1.0}}).build_transform(5)
    for out_image, out_mask in _run(transform, image, mask, 8):
        if out_mask.any():
            # within 20% of the unwarped nodule's mean: interpolation blurs only its rim
            assert abs(out_image[out_mask == 1].mean() - base) < 0.2 * base + 0.05


def test_cubic_resampling_stays_in_the_unit_range(registry):
    image, mask = _blob()
    image[image > 0.5] = 1.0  # a hard step: cubic kernels overshoot on both sides of it
    image[image < 0.5] = 0.0
    transform = registry.create(
        "rotate", {"rotate": {"p": 1.0, "limit_deg": 30.0, "interpolation": "cubic"}}
    ).build_transform(2)
    for out_image, _ in _run(transform, image, mask, 6):
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0


# -- intensity ops: on a real slice, no NaN, not constant, range kept --------------------------------

INTENSITY_OPS = tuple(INTENSITY_OFF)


@pytest.mark.parametrize("strategy", ["intensity", "classical"])
@pytest.mark.parametrize("op", INTENSITY_OPS)
def test_each_intensity_op_keeps_a_usable_image(registry, slice_, strategy, op):
    image, mask = slice_
    values = {**INTENSITY_OFF, op: 1.0}
    if strategy == "classical":
        values.update(SPATIAL_OFF)
    transform = registry.create(strategy, {strategy: values}).build_transform(seed=11)
    lo, hi = float(image.min()), float(image.max())
    changed = 0
    for out_image, out_mask in _run(transform, image, mask, 10):
        assert out_image.dtype == np.float32 and out_image.shape == image.shape
        assert np.isfinite(out_image).all()
        assert out_image.min() >= 0.0 and out_image.max() <= 1.0
        assert out_image.std() > 0.2 * image.std(), "image (nearly) constant"
        assert out_image.max() - out_image.min() > 0.5 * (hi - lo), "range collapsed"
        assert np.array_equal(out_mask, mask), "an intensity op moved the mask"
        changed += not np.allclose(out_image, image)
    assert changed >= 8, f"{op}=1 left the image unchanged in {10 - changed} of 10 samples"


@pytest.mark.parametrize("op", ["p_blur", "p_lowres"])
def test_resampling_intensity_ops_keep_the_content_under_the_mask(registry, op):
    image, mask = _blob()
    values = {**INTENSITY_OFF, op: 1.0, "lowres_scale": 0.3, "blur_sigma_high": 2.0}
    transform = registry.create("intensity", {"intensity": values}).build_transform(seed=2)
    for out_image, _ in _run(transform, image, mask, 10):
        assert _iou(out_image > 0.5, mask == 1) > 0.85


def test_intensity_ops_run_on_the_whole_default_pipeline(registry, phantom):
    transform = registry.create("classical").build_transform(seed=0)
    for s in phantom:
        out_image, out_mask = transform(s.image, s.mask)
        assert np.isfinite(out_image).all() and 0.0 <= out_image.min() and out_image.max() <= 1.0
        assert out_image.std() > 0 and set(np.unique(out_mask)) <= {0, 1}


def test_raw_hounsfield_units_are_refused_with_a_message(registry):
    hu = np.full((32, 32), -1024.0, np.float32)
    hu[10:20, 10:20] = 40.0
    transform = registry.create("intensity").build_transform(0)
    with pytest.raises(DataError, match=r"not Hounsfield units"):
        transform(hu, np.zeros((32, 32), np.uint8))


@pytest.mark.parametrize(
    ("image", "mask", "fragment"),
    [
        (np.zeros((8, 8), np.float64), np.zeros((8, 8), np.uint8), "float32 (H, W)"),
        (np.zeros((8, 8, 1), np.float32), np.zeros((8, 8), np.uint8), "float32 (H, W)"),
        (np.zeros((8, 8), np.float32), np.zeros((8, 9), np.uint8), "uint8 array of shape (8, 8)"),
        (np.full((8, 8), np.nan, np.float32), np.zeros((8, 8), np.uint8), "NaN"),
        (np.zeros((8, 8), np.float32), np.full((8, 8), 255, np.uint8), "expected 0 and 1"),
    ],
)
def test_bad_inputs_are_named(registry, image, mask, fragment):
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        registry.create("flip").build_transform(0)(image, mask)


def test_inputs_are_not_modified(registry, slice_):
    image, mask = slice_
    before = image.copy(), mask.copy()
    transform = registry.create("classical", {"classical": {"interpolation": "cubic"}}).build_transform(0)
    _run(transform, image, mask, 10)
    assert np.array_equal(image, before[0]) and np.array_equal(mask, before[1])


# -- parameters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "fragment"),
    [
        ("affine", {"rotate": 10}, "strategy 'affine' has no parameter 'rotate'"),
        ("affine", {"p": 1.5}, "affine.p: 1.5 is outside [0, 1]"),
        ("affine", {"scale_min": 1.2}, "affine.scale_min: 1.2 is outside"),
        ("rotate", {"limit_deg": "wide"}, "rotate.limit_deg: expected a number, got 'wide'"),
        ("flip", {"axis": "diagonal"}, "flip.axis: 'diagonal' is not one of horizontal, vertical, both"),
        ("elastic", {"grid_steps": 1}, "elastic.grid_steps: 1 is outside [2, 20] (grid cells per side)"),
        ("intensity", {"blur_sigma_low": 2.0}, "intensity.blur_sigma_low=2.0 is above intensity.blur_sigma_high=1.0"),
        ("classical", {"interpolation": "lanczos"}, "classical.interpolation: 'lanczos' is not one of linear, cubic"),
    ],
)
def test_parameters_are_validated(registry, name, values, fragment):
    with pytest.raises(UsageError) as exc:
        registry.create(name, {name: values})
    assert fragment in str(exc.value)


def test_command_line_strings_are_parsed(registry):
    s = registry.create("affine", {"affine": {"p": "0.8", "rotate_deg": "30", "interpolation": "cubic"}})
    assert s.config["p"] == 0.8 and s.config["rotate_deg"] == 30.0 and s.config["interpolation"] == "cubic"


# -- seeds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSICAL)
def test_same_seed_same_samples_other_seed_other_samples(registry, slice_, name):
    image, mask = slice_
    # ops that fire often, with random outcomes (flip: p 0.5 per axis, not the always-on setting)
    values = {"flip": {"axis": "both"}, "intensity": {"p_noise": 1.0, "p_gamma": 1.0}}.get(name, ALWAYS_WARP.get(name))
    strategy = registry.create(name, {name: values})
    first = _run(strategy.build_transform(7), image, mask, 10)
    again = _run(strategy.build_transform(7), image, mask, 10)
    other = _run(strategy.build_transform(8), image, mask, 10)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_ops_draw_from_independent_streams():
    """albumentations' own Compose(seed=...) gives every op the same stream: two flips with p=0.5
    would always fire together. The adapter must give each its own."""
    A = load_albumentations()
    image = np.random.default_rng(0).random((16, 16), dtype=np.float32)  # no symmetry
    mask = np.zeros((16, 16), np.uint8)
    transform = AlbumentationsTransform([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    outcomes = {"none": 0, "h": 0, "v": 0, "both": 0}
    for _ in range(400):
        out, _ = transform(image, mask)
        for key, expected in (("none", image), ("h", image[:, ::-1]), ("v", image[::-1]), ("both", image[::-1, ::-1])):
            outcomes[key] += np.array_equal(out, expected)
    assert all(60 <= count <= 140 for count in outcomes.values()), outcomes


def test_composite_parts_compose(registry, slice_):
    image, mask = slice_
    transform = registry.create("affine+intensity").build_transform(0)
    assert isinstance(transform, ComposedTransform)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == image.shape and set(np.unique(out_mask)) <= {0, 1}


# -- the record of what ran --------------------------------------------------------------------------


def test_pipeline_is_recorded_and_rebuilds_to_the_same_samples(registry, slice_):
    image, mask = slice_
    strategy = registry.create("classical")
    record = json.loads(json.dumps(strategy.describe()))  # JSON-able, as stored in a trial
    pipeline = record["transform"]["albumentations"]
    assert pipeline["__version__"] and pipeline["transform"]["__class_fullname__"] == "Compose"
    names = [t["__class_fullname__"] for t in pipeline["transform"]["transforms"]]
    assert names[:2] == ["Affine", "Affine"] and names[-2:] == ["HorizontalFlip", "VerticalFlip"]
    assert {"GaussNoise", "GaussianBlur", "Downscale", "RandomGamma"} <= set(names)
    rebuilt = AlbumentationsTransform.from_dict(record["transform"], seed=4)
    original = strategy.build_transform(4)
    for (a, am), (b, bm) in zip(_run(original, image, mask, 10), _run(rebuilt, image, mask, 10)):
        assert np.array_equal(a, b) and np.array_equal(am, bm)


def test_a_parameter_change_changes_the_strategy_key(registry):
    assert registry.create("affine").key() != registry.create("affine", {"affine": {"shear_deg": 0}}).key()
    assert registry.create("affine").key() == registry.create("affine").key()


def test_a_strategy_without_a_pipeline_says_so():
    class Empty(AlbumentationsStrategy):
        name = "test-empty"
        description = "No pipeline defined."

    with pytest.raises(TypeError, match="does not define pipeline"):
        Empty().build_transform(0)


def test_a_third_party_pipeline_in_a_few_lines(register_plugin, slice_):
    from augforge import Param, hookimpl

    class Blur(AlbumentationsStrategy):
        name = "test-blur"
        description = "Gaussian blur (test strategy)."
        params = (Param("p", float, 1.0, "probability", low=0.0, high=1.0),)

        def pipeline(self):
            A = load_albumentations()
            return [A.GaussianBlur(sigma_limit=(1.0, 1.0), p=self.p.p)]

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register(Blur)

    image, mask = slice_
    with register_plugin(Plugin(), "test-blur-plugin"):
        transform = get_registry().create("test-blur").build_transform(0)
    out, _ = transform(image, mask)
    assert out.std() < image.std()  # blurred


def test_every_parameter_is_documented(registry):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "strategies.md").read_text()
    start = text.index("## Classical strategies")
    end = text.find("\n## ", start)  # the next section (DCGAN, ...) if any
    section = text[start:] if end == -1 else text[start:end]
    for name in CLASSICAL:
        assert f"#### `{name}`" in section, f"docs/strategies.md lacks a parameter table for {name}"
        for param in registry.get(name).params:
            assert f"| `{param.name}` | " in section, f"docs/strategies.md lacks {name}.{param.name}"
