"""An example third-party augforge plugin: one strategy, ``random-gamma``.

Install it with ``pip install plugins/examples/augforge-gamma`` and it appears in
``augforge strategies``; ``augforge bench --strategy random-gamma`` ranks it against the baseline.
"""

from __future__ import annotations

import numpy as np

from augforge import Param, Strategy, hookimpl


class GammaTransform:
    """image -> image ** gamma with gamma drawn log-uniformly; the mask is untouched."""

    def __init__(self, low: float, high: float, p: float, seed: int):
        self.low, self.high, self.p = low, high, p
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() >= self.p:
            return image, mask
        gamma = float(np.exp(self.rng.uniform(np.log(self.low), np.log(self.high))))
        # the image is the preprocessed input in [0, 1]: a power keeps it there
        return np.power(np.clip(image, 0.0, 1.0), gamma, dtype=np.float32), mask

    def to_dict(self) -> dict:
        return {"random_gamma": {"low": self.low, "high": self.high, "p": self.p}}


class RandomGamma(Strategy):
    name = "random-gamma"
    description = "Random gamma curve on the [0, 1] image (example third-party plugin)."
    params = (
        Param("low", float, 0.7, "smallest gamma", low=0.1, high=1.0),
        Param("high", float, 1.5, "largest gamma", low=1.0, high=5.0),
        Param("p", float, 0.5, "probability per sample", low=0.0, high=1.0),
    )

    def build_transform(self, seed: int) -> GammaTransform:
        return GammaTransform(self.p.low, self.p.high, self.p.p, seed)


@hookimpl
def register_strategies(register):
    register(RandomGamma)
