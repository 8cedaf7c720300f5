"""Training batches: seeded slice order, online augmentation, patches with foreground oversampling,
built in a background thread so the network never waits for them.

Patch training follows nnU-Net: a fixed share of every batch is centred on a tumour pixel (small
nodules are a tiny fraction of a slice, so random patches would almost never show one); the rest
are placed uniformly. Inference runs on whole slices (the U-Net is fully convolutional).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from augforge import seeding
from augforge.strategy import Transform

__all__ = ["BatchSampler", "Prefetcher", "crop_patch"]

Batch = tuple[np.ndarray, np.ndarray]


def crop_patch(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, foreground: bool) -> Batch:
    """A ``size`` x ``size`` patch of (H, W) ``image`` and ``mask``.

    foreground: centre the patch on a random tumour pixel (jittered by up to a quarter patch so the
    tumour is not always in the middle); falls back to a uniform position when the mask is empty.
    Slices smaller than the patch are zero-padded on the bottom/right first.
    """
    h, w = image.shape
    if h < size or w < size:
        pad = ((0, max(size - h, 0)), (0, max(size - w, 0)))
        image, mask = np.pad(image, pad), np.pad(mask, pad)
        h, w = image.shape
    ys, xs = np.nonzero(mask) if foreground else ((), ())
    if len(ys):
        k = rng.integers(len(ys))
        jitter = rng.integers(-(size // 4), size // 4 + 1, size=2)
        y0 = int(np.clip(ys[k] + jitter[0] - size // 2, 0, h - size))
        x0 = int(np.clip(xs[k] + jitter[1] - size // 2, 0, w - size))
    else:
        y0 = int(rng.integers(0, h - size + 1))
        x0 = int(rng.integers(0, w - size + 1))
    return image[y0 : y0 + size, x0 : x0 + size], mask[y0 : y0 + size, x0 : x0 + size]


class BatchSampler:
    """A deterministic stream of training batches.

    images: (H, W) float32 in [0, 1]; masks: (H, W) uint8 {0, 1}; same length and order.
    Each epoch visits the slices in a fresh seeded permutation; batches run across epoch ends so
    every batch is full. With ``patch_size`` > 0 each sample is cropped after augmentation (so an
    affine transform sees the whole slice, not a patch with empty corners) and the last
    ``round(batch_size * fg_fraction)`` samples of a batch are centred on tumour.

    Iterating yields ``(x, y)``: (B, 1, P, P) float32 inputs and targets (P = patch size, or the
    largest slice side in the batch for whole-slice training, smaller slices zero-padded).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        *,
        batch_size: int,
        steps: int,
        seed: int,
        patch_size: int = 0,
        fg_fraction: float = 0.0,
        transform: Transform | None = None,
    ):
        if len(images) != len(masks) or not images:
            raise ValueError(f"need as many masks as images, and at least one: {len(images)} vs {len(masks)}")
        self.images, self.masks = images, masks
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.patch_size, self.transform = patch_size, transform
        self.n_foreground = round(batch_size * fg_fraction) if patch_size > 0 else 0

    def _order(self) -> Iterator[int]:
        epoch = 0
        while True:
            yield from seeding.stream(self.seed, epoch).permutation(len(self.images)).tolist()
            epoch += 1

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        rng = seeding.stream(self.seed, seeding.PATCH_POSITIONS)
        for _ in range(self.steps):
            xs, ys = [], []
            for b in range(self.batch_size):
                i = next(order)
                # Copies: a transform that writes in place must not alter the cached training set.
                image = np.array(self.images[i], dtype=np.float32)
                mask = np.array(self.masks[i], dtype=np.uint8)
                if self.transform is not None:
                    image, mask = self.transform(image, mask)
                if self.patch_size > 0:
                    fg = b >= self.batch_size - self.n_foreground
                    image, mask = crop_patch(image, mask, self.patch_size, rng, fg)
                xs.append(image)
                ys.append(mask)
            yield _stack(xs), _stack(ys)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """(H_i, W_i) arrays -> (B, 1, H, W) float32, zero-padding each to the largest shape."""
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), 1, h, w), dtype=np.float32)
    for k, a in enumerate(arrays):
        out[k, 0, : a.shape[0], : a.shape[1]] = a
    return out


_END = object()


class Prefetcher:
    """Runs an iterator in a background thread, up to ``depth`` items ahead.

    The producer is a single thread, so the items (and the draws of the random generators inside
    them) come in exactly the order a plain loop would give. An exception in the producer is raised
    again in the consumer. ``wait_seconds`` accumulates the time the consumer spent blocked.
    """

    def __init__(self, iterable: Iterator[Batch] | BatchSampler, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_seconds = 0.0
        self._thread = threading.Thread(
            target=self._produce, args=(iter(iterable),), daemon=True, name="augforge-batches"
        )
        self._thread.start()

    def _produce(self, it: Iterator[Batch]) -> None:
        try:
            for item in it:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 -- forwarded to the consumer, which re-raises it
            self._queue.put(exc)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            t0 = time.perf_counter()
            item = self._queue.get()
            self.wait_seconds += time.perf_counter() - t0
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the producer (used when training ends early or fails)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
