"""Classical augmentation strategies for CT slices: affine, flip, rotate, elastic, intensity, classical.

Every strategy is an albumentations pipeline on the preprocessed image in [0, 1] (never raw HU) and
its uint8 {0, 1} tumour mask, wrapped by :class:`augforge.transforms.AlbumentationsStrategy`
(independent seeded streams per op, masks by nearest neighbour, ``to_dict`` recorded per trial).

Facts behind the defaults:

- ``flip`` and ``rotate`` are the seed paper's single-transform baselines ("mirror flip", "rotate the
  image"; reference/PAPER_PROTOCOL.md). The paper gives no axis or angle: left-right and +-15 deg here.
- ``classical`` follows nnU-Net v2's default training augmentation (Isensee et al., Nature Methods
  2021; ``nnUNetTrainer.get_training_transforms``), 2-D case: rotation p 0.2 over +-180 deg (square
  patches), isotropic scaling p 0.2 in [0.7, 1.4], no elastic deformation, Gaussian noise p 0.1,
  Gaussian blur p 0.2 with sigma in [0.5, 1], multiplicative brightness p 0.15 in [0.75, 1.25],
  contrast p 0.15 in [0.75, 1.25], low-resolution simulation p 0.25 with zoom in [0.5, 1] (here
  down by area averaging, see ``intensity_ops``), inverted gamma p 0.1 and gamma p 0.3 in
  [0.7, 1.5], mirroring p 0.5 per axis. Blur and low resolution also have a per-channel probability
  of 0.5, so on a one-channel CT slice they fire with p 0.1 and 0.125: those effective values are
  the defaults here.
- nnU-Net's noise variance (0 to 0.1) is in units of the z-scored foreground intensity. The
  preprocessed input's standard deviation inside the lung field is 0.11 on the quick-preset phantom
  and 0.17 on the tiny one (measured), so sqrt(0.1) times that is 0.034 to 0.054: the default
  largest noise standard deviation, 0.05, is the upper end.

Spatial ops fill new pixels with 0: the preprocessed input (lung-only HU, min-max normalised, CLAHE)
is 0 outside the lung field (every border pixel of the quick-preset phantom is below 0.0035), so 0
is the value already at the border. Reflecting would mirror lung tissue into the corners.
"""

from __future__ import annotations

from typing import Any, ClassVar

from augforge import Param, UsageError, hookimpl
from augforge.transforms import AlbumentationsStrategy, load_albumentations

#: What new pixels get in spatial ops: 0 = outside the lung field in the preprocessed input.
FILL_VALUE = 0.0


def _probability(name: str, default: float, what: str) -> Param:
    return Param(name, float, default, f"probability per sample of {what}", low=0.0, high=1.0)


_INTERPOLATION = Param(
    "interpolation", str, "linear", "image resampling (masks: always nearest)", choices=("linear", "cubic")
)


def _warp_args(interpolation: str) -> dict[str, Any]:
    """Arguments every spatial op shares: smooth image, nearest mask, constant-0 border."""
    import cv2

    return {
        "interpolation": {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}[interpolation],
        "mask_interpolation": cv2.INTER_NEAREST,
        "border_mode": cv2.BORDER_CONSTANT,
        "fill": FILL_VALUE,
        "fill_mask": 0,
    }


def _flips(A: Any, horizontal: float, vertical: float) -> list[Any]:
    ops = []
    if horizontal > 0:
        ops.append(A.HorizontalFlip(p=horizontal))
    if vertical > 0:
        ops.append(A.VerticalFlip(p=vertical))
    return ops


class _ClassicalStrategy(AlbumentationsStrategy):
    """Shared checks: ``ordered`` names (low, high) parameter pairs that must satisfy low <= high."""

    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, **values: Any):
        super().__init__(**values)
        for low, high in self.ordered:
            if self.config[low] > self.config[high]:
                raise UsageError(
                    f"{self.name}.{low}={self.config[low]} is above "
                    f"{self.name}.{high}={self.config[high]}; set {low} <= {high}"
                )


# -- intensity ops, shared by `intensity` and `classical` --------------------------------------------

INTENSITY_PARAMS: tuple[Param, ...] = (
    _probability("p_noise", 0.1, "additive Gaussian noise"),
    Param("noise_std", float, 0.05, "largest noise standard deviation, in [0, 1] image units", low=0.0, high=0.5),
    _probability("p_blur", 0.1, "Gaussian blur"),
    Param("blur_sigma_low", float, 0.5, "smallest blur sigma, pixels", low=0.1, high=10.0),
    Param("blur_sigma_high", float, 1.0, "largest blur sigma, pixels", low=0.1, high=10.0),
    _probability("p_brightness", 0.15, "multiplicative brightness"),
    Param("brightness", float, 0.25, "brightness factor drawn from 1 +- this", low=0.0, high=0.9),
    _probability("p_contrast", 0.15, "contrast around the image mean"),
    Param("contrast", float, 0.25, "contrast factor drawn from 1 +- this", low=0.0, high=0.9),
    _probability("p_lowres", 0.125, "simulated low resolution"),
    Param("lowres_scale", float, 0.5, "smallest down-sampling factor (1 = no change)", low=0.1, high=1.0),
    _probability("p_gamma", 0.3, "a gamma curve"),
    _probability("p_gamma_inverted", 0.1, "a gamma curve on the inverted image"),
    Param("gamma_low", float, 0.7, "smallest gamma", low=0.1, high=1.0),
    Param("gamma_high", float, 1.5, "largest gamma", low=1.0, high=5.0),
)

_INTENSITY_ORDERED = (("blur_sigma_low", "blur_sigma_high"),)


def intensity_ops(p: Any) -> list[Any]:
    """The intensity ops for parameter values ``p`` (names of ``INTENSITY_PARAMS``), nnU-Net's order.

    Every op works on the [0, 1] image and albumentations clips its result to [0, 1]; ops whose
    probability is 0 are left out of the pipeline (and of its record).
    """
    A = load_albumentations()
    import cv2

    ops: list[Any] = []
    if p.p_noise > 0:
        ops.append(A.GaussNoise(std_range=(0.0, p.noise_std), mean_range=(0.0, 0.0), p=p.p_noise))
    if p.p_blur > 0:
        # blur_limit 0: the kernel size follows sigma (OpenCV picks it), as a continuous Gaussian would
        ops.append(A.GaussianBlur(blur_limit=0, sigma_limit=(p.blur_sigma_low, p.blur_sigma_high), p=p.p_blur))
    if p.p_brightness > 0:
        ops.append(
            A.MultiplicativeNoise(
                multiplier=(1.0 - p.brightness, 1.0 + p.brightness),
                per_channel=False,
                elementwise=False,
                p=p.p_brightness,
            )
        )
    if p.p_contrast > 0:
        # ColorJitter's contrast scales around the image mean (RandomBrightnessContrast's scales around
        # 0 on float images, i.e. it is a second brightness); the other three factors are fixed at 1/0.
        ops.append(
            A.ColorJitter(
                brightness=(1.0, 1.0),
                contrast=(1.0 - p.contrast, 1.0 + p.contrast),
                saturation=(1.0, 1.0),
                hue=(0.0, 0.0),
                p=p.p_contrast,
            )
        )
    if p.p_lowres > 0 and p.lowres_scale < 1.0:
        # Down by area averaging (a coarser detector integrates over its pixel: partial volume), up
        # by cubic as nnU-Net. nnU-Net samples down by nearest neighbour; cv2's nearest shifts the
        # image off its mask (0.5 px at scale 0.5, 1.7 px at 0.3), area averaging does not.
        # albumentations does this on an 8-bit copy: a rounding error under 1/510, far below the blur.
        ops.append(
            A.Downscale(
                scale_range=(p.lowres_scale, 1.0),
                interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_CUBIC},
                p=p.p_lowres,
            )
        )
    gamma_limit = (100.0 * p.gamma_low, 100.0 * p.gamma_high)  # albumentations takes gamma x 100
    if p.p_gamma_inverted > 0:
        # the inverted curve brightens dark tissue where the plain one darkens it
        ops.append(
            A.Sequential(
                [A.InvertImg(p=1.0), A.RandomGamma(gamma_limit=gamma_limit, p=1.0), A.InvertImg(p=1.0)],
                p=p.p_gamma_inverted,
            )
        )
    if p.p_gamma > 0:
        ops.append(A.RandomGamma(gamma_limit=gamma_limit, p=p.p_gamma))
    return ops


# -- the strategies ------------------------------------------------------------------------------------


class Affine(_ClassicalStrategy):
    name = "affine"
    description = "Random rotation, isotropic scaling, translation and shear, plus flips."
    params = (
        _probability("p", 0.5, "the affine warp (its rotation, scale, shift and shear drawn together)"),
        Param("rotate_deg", float, 15.0, "rotation drawn from +- this, degrees", low=0.0, high=180.0),
        Param("scale_min", float, 0.85, "smallest zoom factor (isotropic)", low=0.25, high=1.0),
        Param("scale_max", float, 1.15, "largest zoom factor (isotropic)", low=1.0, high=4.0),
        Param("translate", float, 0.05, "shift per axis drawn from +- this fraction of the side", low=0.0, high=0.5),
        Param("shear_deg", float, 5.0, "shear per axis drawn from +- this, degrees", low=0.0, high=45.0),
        _probability("hflip", 0.5, "a left-right flip"),
        _probability("vflip", 0.0, "an up-down flip"),
        _INTERPOLATION,
    )

    def pipeline(self) -> list[Any]:
        A = load_albumentations()
        p = self.p
        ops = []
        if p.p > 0:
            ops.append(
                A.Affine(
                    rotate=(-p.rotate_deg, p.rotate_deg),
                    scale=(p.scale_min, p.scale_max),
                    keep_ratio=True,  # isotropic: nodules keep their shape
                    translate_percent={"x": (-p.translate, p.translate), "y": (-p.translate, p.translate)},
                    shear={"x": (-p.shear_deg, p.shear_deg), "y": (-p.shear_deg, p.shear_deg)},
                    p=p.p,
                    **_warp_args(p.interpolation),
                )
            )
        return ops + _flips(A, p.hflip, p.vflip)


class Flip(_ClassicalStrategy):
    name = "flip"
    description = "Mirror flip (the paper's 'mirror flip' baseline): left-right by default."
    params = (
        _probability("p", 0.5, "a flip (per axis when axis=both)"),
        Param(
            "axis",
            str,
            "horizontal",
            "horizontal (left-right), vertical (up-down) or both (each independently)",
            choices=("horizontal", "vertical", "both"),
        ),
    )

    def pipeline(self) -> list[Any]:
        A = load_albumentations()
        p = self.p
        horizontal = p.p if p.axis in ("horizontal", "both") else 0.0
        vertical = p.p if p.axis in ("vertical", "both") else 0.0
        return _flips(A, horizontal, vertical)


class Rotate(_ClassicalStrategy):
    name = "rotate"
    description = "Random in-plane rotation (the paper's 'rotate the image' baseline)."
    params = (
        _probability("p", 0.5, "a rotation"),
        Param("limit_deg", float, 15.0, "angle drawn from +- this, degrees", low=0.0, high=180.0),
        _INTERPOLATION,
    )

    def pipeline(self) -> list[Any]:
        A = load_albumentations()
        p = self.p
        if p.p == 0 or p.limit_deg == 0:
            return []
        return [A.Rotate(limit=(-p.limit_deg, p.limit_deg), p=p.p, **_warp_args(p.interpolation))]


class Elastic(_ClassicalStrategy):
    name = "elastic"
    description = "Smooth elastic deformation and grid distortion of image and mask together."
    params = (
        _probability("p_elastic", 0.5, "an elastic deformation"),
        Param(
            "alpha", float, 400.0, "elastic displacement scale (400 with sigma 10: ~2.5 px RMS)", low=0.0, high=5000.0
        ),
        Param("sigma", float, 10.0, "smoothness of the displacement field, pixels", low=1.0, high=100.0),
        _probability("p_grid", 0.25, "a grid distortion"),
        Param("grid_steps", int, 5, "grid cells per side", low=2, high=20),
        Param("grid_limit", float, 0.1, "largest cell distortion, fraction of a cell", low=0.0, high=0.5),
        _INTERPOLATION,
    )

    def pipeline(self) -> list[Any]:
        A = load_albumentations()
        p = self.p
        warp = _warp_args(p.interpolation)
        ops = []
        if p.p_elastic > 0 and p.alpha > 0:
            ops.append(A.ElasticTransform(alpha=p.alpha, sigma=p.sigma, p=p.p_elastic, **warp))
        if p.p_grid > 0 and p.grid_limit > 0:
            ops.append(
                A.GridDistortion(
                    num_steps=p.grid_steps, distort_limit=(-p.grid_limit, p.grid_limit), p=p.p_grid, **warp
                )
            )
        return ops


class Intensity(_ClassicalStrategy):
    name = "intensity"
    description = (
        "Noise, blur, brightness, contrast, low resolution and gamma on the [0, 1] image "
        "(nnU-Net's intensity ops and probabilities)."
    )
    params = INTENSITY_PARAMS
    ordered = _INTENSITY_ORDERED

    def pipeline(self) -> list[Any]:
        return intensity_ops(self.p)


class Classical(_ClassicalStrategy):
    name = "classical"
    description = "nnU-Net-like: rotation, scaling, mirroring and the intensity ops, with nnU-Net's probabilities."
    params = (
        _probability("p_rotation", 0.2, "a rotation"),
        Param("rotate_deg", float, 180.0, "rotation drawn from +- this, degrees", low=0.0, high=180.0),
        _probability("p_scaling", 0.2, "an isotropic scaling"),
        Param("scale_min", float, 0.7, "smallest zoom factor", low=0.25, high=1.0),
        Param("scale_max", float, 1.4, "largest zoom factor", low=1.0, high=4.0),
        _probability("p_mirror_h", 0.5, "a left-right flip"),
        _probability("p_mirror_v", 0.5, "an up-down flip"),
        _INTERPOLATION,
        *INTENSITY_PARAMS,
    )
    ordered = _INTENSITY_ORDERED

    def pipeline(self) -> list[Any]:
        A = load_albumentations()
        p = self.p
        warp = _warp_args(p.interpolation)
        ops: list[Any] = []
        # nnU-Net draws rotation and scaling independently and resamples once; two Affine ops with
        # their own probabilities give the same distribution (a second resampling in 4% of samples).
        if p.p_rotation > 0 and p.rotate_deg > 0:
            ops.append(A.Affine(rotate=(-p.rotate_deg, p.rotate_deg), p=p.p_rotation, **warp))
        if p.p_scaling > 0:
            ops.append(A.Affine(scale=(p.scale_min, p.scale_max), keep_ratio=True, p=p.p_scaling, **warp))
        return ops + intensity_ops(p) + _flips(A, p.p_mirror_h, p.p_mirror_v)


@hookimpl
def register_strategies(register):
    for cls in (Affine, Flip, Rotate, Elastic, Intensity, Classical):
        register(cls)
