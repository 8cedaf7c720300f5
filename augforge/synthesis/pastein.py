"""Paste-in strategies: one base for every strategy that pastes tumours into slices.

A paste-in strategy says where its tumours come from; :class:`PasteInStrategy` does the rest, the
same way for all of them: how many slices are added (``ratio`` per real training slice), which
slices receive a tumour (the canvases), where it goes (lung parenchyma clear of vessels and of the
lung wall, and of a tumour the canvas has), the soft-edged blend, the new slice's label (measured
from the pasted nodule), its id and provenance, and what ``augforge generate`` shows and summarises
(:class:`~augforge.synthesis.GeneratedSet`).

Two levels:

- :class:`GeneratorStrategy` is the one a new generator is written on. It supplies
  ``fit_generator`` (learn from the training tumours, given as square patches with their masks) and
  ``sample_patches`` (``n`` new patches with their masks), and ``save_generator``/``load_generator``;
  the base extracts the patches, keys the fitted generator by what changes the fit and caches it
  between trials (one fit per training set, shared by parallel trials), and pastes each sample at
  the size of a real training tumour. ``dcgan`` and ``dcgan-paper`` are written on it;
  docs/plugins.md shows a complete third-party one.
- :class:`PasteInStrategy` is for tumours that are not sampled from a fitted model: a strategy
  supplies ``source`` (what it draws from) and ``tumour`` (the ``i``-th tumour, drawn with the
  placement's random stream). ``copy-paste`` (real training tumours, moved) is written on it.

Randomness: one stream per strategy and trial seed (``seeding.stream(seed, stream)``) draws, in this
order, what ``draw`` needs, the canvases' order, then per tumour what ``tumour`` needs and its
position; the same training split, canvases and seed give the same slices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from augforge import seeding
from augforge.data.records import Slice
from augforge.errors import DataError
from augforge.fileio import remove_stale_temporaries
from augforge.settings import Param
from augforge.strategy import PrepareContext, Strategy
from augforge.synthesis.generated import GeneratedSet
from augforge.synthesis.intensity import HU_SCALE, PasteScale, canvas_site, paste_canvases, paste_scale
from augforge.synthesis.paste import CANVAS_TRIES, paste_into_canvases
from augforge.synthesis.roi import TumourROIs, extract_rois

__all__ = [
    "MATCH_NOISE",
    "PASTE_PARAMS",
    "Fitted",
    "GeneratorStrategy",
    "PasteInStrategy",
    "Tumour",
    "fit_lock",
    "gen_seed_param",
    "ratio_param",
    "sizes_param",
]

#: Slice side of the seed paper's data: its "downscale by 1-4" refers to 512-pixel slices.
PAPER_SLICE_PX = 512


def ratio_param(help: str = "synthetic slices per real training slice (paper: 1)") -> Param:
    """The ``ratio`` parameter every paste-in strategy has."""
    return Param("ratio", float, 1.0, help, low=0.0, high=20.0)


def gen_seed_param() -> Param:
    """``gen_seed``: the seed of a generator's fit (0 by default, so the seeds of a study vary the
    samples and the training, not the generator; None refits per trial seed)."""
    return Param(
        "gen_seed", int, 0, "seed of the generator fit; None: the trial's seed (one fit per seed)", low=0, nullable=True
    )


def sizes_param(default: str = "train") -> Param:
    """``sizes``: the pasted tumours' sizes, read by :meth:`GeneratorStrategy.target_shape`."""
    return Param(
        "sizes",
        str,
        default,
        "tumour sizes: 'train' (the training tumours' sizes) or 'paper' (the patch shrunk by 1-4 at 512 px)",
        choices=("paper", "train"),
    )


#: ``match_noise``: give a smooth generated tumour the canvas's pixel noise (read by the base).
MATCH_NOISE = Param("match_noise", bool, True, "add the canvas's pixel noise to the smooth generated tumour")

#: The paste parameters every paste-in strategy has (the base reads them).
PASTE_PARAMS: tuple[Param, ...] = (
    Param("feather_px", float, 1.5, "width of the pasted tumour's soft edge, pixels", low=0.0, high=10.0),
    Param("clearance_px", float, 1.0, "distance kept from vessels and the lung wall, pixels", low=0.0, high=20.0),
)


@dataclass
class Tumour:
    """One tumour to paste.

    hu, mask: (S, S) patch on the data's scale and its bool mask.
    shape:    ``shape(canvas, factor)`` -> the patch's (rows, cols) in that canvas's pixels at size
              ``factor`` (1, then smaller when no canvas has room); it may draw from the stream.
    facts:    what the slice's provenance records about this tumour (besides strategy, seed, sample).
    """

    hu: np.ndarray
    mask: np.ndarray
    shape: Callable[[Slice, float], tuple[int, int]]
    facts: dict[str, Any] = field(default_factory=dict)


class PasteInStrategy(Strategy):
    """Base of the strategies that add slices by pasting tumours into canvases (module docstring).

    Subclasses set ``stream`` (a number no other strategy uses) and implement :meth:`source`,
    :meth:`real_tumours` and :meth:`tumour`; ``params`` must include ``ratio`` and
    :data:`PASTE_PARAMS` (``feather_px``, ``clearance_px``).
    """

    #: Separates this strategy's random stream from others seeded with the same trial seed.
    stream: ClassVar[int] = 0
    #: Give the pasted tumour the canvas's pixel noise (a generated tumour is smooth; a real one
    #: carries its own scanner noise, and adding the canvas's would double it).
    canvas_noise: ClassVar[bool] = True
    #: What ``generate`` says when there is no slice to paste into.
    no_canvas_hint: ClassVar[str] = "the training split is empty"

    # -- what a subclass supplies ---------------------------------------------------------------
    def source(self, train: list[Slice], ctx: PrepareContext, scale: PasteScale) -> Any:
        """What the tumours are drawn from (a fitted generator, the training tumours), from ``train``
        only. ``scale``: the data's intensity anchors (HU, or learnt from 8-bit slices)."""
        raise NotImplementedError

    def real_tumours(self, source: Any) -> TumourROIs:
        """The training tumours behind ``source`` (``augforge generate`` shows them beside the new ones)."""
        raise NotImplementedError

    def draw(self, source: Any, n: int, *, seed: int, rng: np.random.Generator) -> Any:
        """What is drawn for all ``n`` tumours at once, before the canvases' order (default: nothing)."""
        return None

    def tumour(self, source: Any, drawn: Any, i: int, rng: np.random.Generator) -> Tumour:
        """The ``i``-th tumour (``drawn``: what :meth:`draw` returned)."""
        raise NotImplementedError

    def slice_id(self, source: Any, seed: int, i: int) -> str:
        return f"{self.name}-s{seed}-{i:05d}"

    def site_options(self, canvas: Slice) -> dict[str, Any]:
        """Extra options of :func:`~augforge.synthesis.canvas_site` for ``canvas`` (``max_row``); by
        default the ``match_noise`` parameter where the strategy has one."""
        return {"match_noise": bool(self.config.get("match_noise"))}

    def facts(self, source: Any, n: int, made: int) -> dict[str, Any]:
        """What ``GeneratedSet.info`` records about this run."""
        return {"requested": n, "made": made}

    def canvas_choice(self) -> str:
        """Where tumours go: "healthy" slices (the real training slices where the data have none) or "train"."""
        return "healthy"

    def scale_of(self, source: Any) -> PasteScale:
        """The intensity anchors ``source`` was made with."""
        return getattr(source, "scale", HU_SCALE)

    # -- what the base does -------------------------------------------------------------------
    def prepare(self, train: list[Slice], ctx: PrepareContext) -> list[Slice]:
        """``train`` followed by ``ratio`` synthetic slices per real training slice."""
        real = sum(1 for s in train if not s.is_synthetic)
        n = round(self.config["ratio"] * real)
        if n == 0:
            return list(train)
        return list(train) + self.generate(train, ctx, n).slices

    def generate(self, train: list[Slice], ctx: PrepareContext, n: int) -> GeneratedSet:
        """Draw ``n`` tumours from what ``train`` offers and paste them into the canvases
        (``augforge generate`` calls this)."""
        scale = paste_scale(ctx.intensity, train)
        source = self.source(train, ctx, scale)
        canvases = paste_canvases(train, ctx.healthy, self.canvas_choice(), who=self.name, log=ctx.log)
        return self.synthesize(source, canvases, n, seed=ctx.seed, log=ctx.log)

    def synthesize(
        self, source: Any, canvases: list[Slice], n: int, *, seed: int, log: Callable[[str], None] = print
    ) -> GeneratedSet:
        """Paste ``n`` tumours from ``source`` into ``canvases`` (cycled in a seeded order), one per slice."""
        if n > 0 and not canvases:
            raise DataError(f"strategy {self.name!r} has no slices to paste tumours into: {self.no_canvas_hint}")
        c = self.config
        scale = self.scale_of(source)
        rng = seeding.stream(seed, self.stream)
        drawn = self.draw(source, n, seed=seed, rng=rng)
        order = rng.permutation(len(canvases)) if canvases else np.zeros(0, int)
        sites: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}  # canvas -> (lung, allowed, noise)

        def site(k: int) -> tuple[np.ndarray, np.ndarray, float]:
            if k not in sites:
                canvas = canvases[k]
                sites[k] = canvas_site(canvas, scale, clearance_px=c["clearance_px"], **self.site_options(canvas))
            return sites[k]

        patches_hu: list[np.ndarray] = []
        patches_mask: list[np.ndarray] = []
        out: list[Slice] = []
        for i in range(n):
            t = self.tumour(source, drawn, i, rng)
            patches_hu.append(np.asarray(t.hu, np.float32))
            patches_mask.append(np.asarray(t.mask, bool))
            # A tumour without pixels stays empty at any size: no canvas can take it.
            pasted = (
                paste_into_canvases(
                    canvases,
                    order,
                    i,
                    t.hu,
                    t.mask,
                    site=site,
                    shape=t.shape,
                    rng=rng,
                    slice_id=self.slice_id(source, seed, i),
                    source=Slice.synthetic_source(self.name),
                    feather_px=c["feather_px"],
                    paste_rng=rng if self.canvas_noise else None,
                    provenance={"strategy": self.name, **t.facts, "sample": i, "seed": seed},
                    solid_hu=scale.solid,
                )
                if np.any(t.mask)
                else None
            )
            if pasted is not None:
                out.append(pasted)
        if len(out) < n:
            log(
                f"{self.name}: {n - len(out)} of {n} tumours were empty or found no free lung parenchyma "
                f"in {CANVAS_TRIES} canvases even when shrunk; {len(out)} synthetic slices made"
            )
        real = self.real_tumours(source)
        side = real.size
        return GeneratedSet(
            slices=out,
            patches_hu=np.stack(patches_hu) if patches_hu else np.empty((0, side, side), np.float32),
            patches_mask=np.stack(patches_mask) if patches_mask else np.zeros((0, side, side), bool),
            real_hu=real.hu,
            real_mask=real.mask,
            info=self.facts(source, n, len(out)),
        )


@dataclass
class Fitted:
    """A fitted generator and what it was fitted on.

    model: what ``fit_generator`` returned (or ``load_generator`` read back).
    key:   the fit's cache key (what changes the fit: the strategy's fit facts, the patches, the dataset).
    rois:  the training tumours' patches it was fitted on.
    meta:  JSON-able facts about the fit (configuration, time, warnings).
    cache_hit: reused from an earlier trial.
    scale: the data's intensity anchors.
    state: the strategy's own facts about this fit (the DCGAN keeps its variant here).
    """

    model: Any
    key: str
    rois: TumourROIs
    meta: dict[str, Any]
    cache_hit: bool
    scale: PasteScale = HU_SCALE
    state: Any = None


class GeneratorStrategy(PasteInStrategy):
    """Base of the strategies that fit a generative model on the training tumours and paste samples.

    A subclass sets ``name``, ``stream``, ``params`` (with ``ratio``, ``sizes`` and :data:`PASTE_PARAMS`)
    and implements :meth:`fit_generator`, :meth:`sample_patches`, :meth:`save_generator` and
    :meth:`load_generator`; it may change how patches are cut (:meth:`patch_options`) and what keys
    the fit (:meth:`fit_facts`).
    """

    #: Bump when a change of the subclass changes what a cached generator is.
    fit_version: ClassVar[int] = 1
    #: The file a fitted generator is kept in, inside its cache folder.
    generator_file: ClassVar[str] = "generator.pt"
    #: Files of the cache folder the finished fit no longer needs (e.g. a checkpoint to resume from).
    fit_leftovers: ClassVar[tuple[str, ...]] = ()
    #: Where a fit is kept, if not by overriding save_generator/load_generator: (module, save, load)
    #: names, e.g. ("augforge.models.vqvae", "save_vqvae", "load_vqvae"), with ``save(model, path,
    #: meta)`` and ``load(path) -> (model, meta)``; the module is imported when first needed.
    model_io: ClassVar[tuple[str, str, str] | None] = None

    # -- what a subclass supplies ---------------------------------------------------------------
    def patch_size(self, ctx: PrepareContext) -> int:
        """Side of the square training patches (default: the preset's ``gen.roi_size``)."""
        return ctx.preset.gen.roi_size

    def patch_options(self, scale: PasteScale) -> dict[str, Any]:
        """How :func:`~augforge.synthesis.extract_rois` cuts the training tumours: square crops with a
        margin of a quarter of the tumour's size, parenchyma (on ``scale``) outside the tumour."""
        return {"margin_px": 1, "margin_frac": 0.25, "square": True, "background_hu": scale.parenchyma}

    def fit_facts(self, ctx: PrepareContext, scale: PasteScale) -> dict[str, Any]:
        """What, besides the patches and the dataset, changes the fitted generator (JSON-able)."""
        return {}

    def fit_state(self, ctx: PrepareContext, scale: PasteScale) -> Any:
        """The strategy's own facts about a fit, kept in ``Fitted.state`` (default: None)."""
        return None

    def fit_generator(
        self, rois: TumourROIs, ctx: PrepareContext, *, folder: Path, scale: PasteScale, state: Any
    ) -> tuple[Any, dict[str, Any]]:
        """Fit a generator on ``rois`` (``folder``: its cache folder, for samples or checkpoints;
        ``scale``: the data's intensity anchors; ``state``: what :meth:`fit_state` gave).
        Returns the model and JSON-able facts about the fit (``seconds``, ``config``, ``warnings``, and
        ``history``, one entry per epoch: the saved meta keeps its last entry, ``meta.json`` all)."""
        raise NotImplementedError

    def sample_patches(self, fitted: Fitted, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` new tumours: (n, S, S) float32 on the data's scale and (n, S, S) bool masks."""
        raise NotImplementedError

    def save_generator(self, model: Any, path: Path, meta: dict[str, Any]) -> None:
        """Keep a fitted model at ``path`` (default: the ``model_io`` save function)."""
        self._model_io(1)(model, path, meta)

    def load_generator(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """The model and meta that :meth:`save_generator` wrote; DataError when the file cannot be used."""
        return self._model_io(2)(path)

    @staticmethod
    def fit_record(fit: Any) -> dict[str, Any]:
        """What :meth:`fit_generator` returns about a fit object with ``config`` (a dataclass),
        ``seconds``, ``warnings`` and ``history``."""
        return {
            "config": dataclasses.asdict(fit.config),
            "seconds": round(fit.seconds, 1),
            "warnings": list(fit.warnings),
            "history": fit.history,
        }

    def _model_io(self, which: int) -> Callable[..., Any]:
        if self.model_io is None:
            raise NotImplementedError(f"{type(self).__name__}: set model_io or override save_generator/load_generator")
        return getattr(importlib.import_module(self.model_io[0]), self.model_io[which])

    # -- what the base does -------------------------------------------------------------------
    def tumour_patches(self, train: list[Slice], size: int, scale: PasteScale = HU_SCALE) -> TumourROIs:
        """The training tumours as ``size`` x ``size`` patches (real tumour slices only)."""
        real = [s for s in train if s.has_tumour and not s.is_synthetic]
        return extract_rois(real, size=size, **self.patch_options(scale))

    def cache_key(self, rois: TumourROIs, facts: dict[str, Any], fingerprint: str) -> str:
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {
                    "strategy": self.name,
                    "version": self.fit_version,
                    **facts,
                    "fingerprint": fingerprint,
                    "slices": sorted(set(rois.slice_ids)),
                },
                sort_keys=True,
                default=str,
            ).encode()
        )
        for array in (rois.hu, rois.mask, rois.coverage):
            h.update(array.tobytes())
        return h.hexdigest()[:16]

    def source(self, train: list[Slice], ctx: PrepareContext, scale: PasteScale) -> Fitted:
        """Fit the generator on ``train``'s tumours, or load the one fitted before on the same data."""
        state = self.fit_state(ctx, scale)
        rois = self.tumour_patches(train, self.patch_size(ctx), scale)
        key = self.cache_key(rois, self.fit_facts(ctx, scale), ctx.dataset_fingerprint)
        folder = Path(ctx.cache_dir) / f"{self.name}-{key}"
        path = folder / self.generator_file
        with fit_lock(folder):  # trials running in parallel wait for one fit instead of repeating it
            remove_stale_temporaries(folder, older_than_s=0)  # a killed fit's; the lock keeps others out
            if path.exists():
                try:
                    model, meta = self.load_generator(path)
                except DataError as exc:  # changed on disk, damaged, empty: fit again rather than trust it
                    ctx.log(f"{self.name}: the cached generator cannot be used ({exc}); fitting it again")
                    path.unlink()
                else:
                    ctx.log(f"{self.name}: reusing generator {key} ({folder})")
                    return Fitted(model, key, rois, meta, cache_hit=True, scale=scale, state=state)
            ctx.log(
                f"{self.name}: fitting generator {key} on {len(rois)} tumour patches of "
                f"{len(set(rois.slice_ids))} training slices"
            )
            # torch's deterministic algorithms: on a GPU, a fit without them gives another generator
            # each run (atomic adds in the convolutions' backward pass), and so other trial results.
            with seeding.deterministic():
                model, facts = self.fit_generator(rois, ctx, folder=folder, scale=scale, state=state)
            history = facts.get("history") or []
            meta = {
                "strategy": self.name,
                "key": key,
                **facts,
                "history": history[-1:],
                "trained_on": sorted(set(rois.slice_ids)),
                "n_patches": len(rois),
                "dataset_fingerprint": ctx.dataset_fingerprint,
            }
            self.save_generator(model, path, meta)
            (folder / "meta.json").write_text(json.dumps(meta | {"history": history}, indent=1))
            for name in self.fit_leftovers:
                (folder / name).unlink(missing_ok=True)
            if "seconds" in meta:
                ctx.log(f"{self.name}: fitted in {meta['seconds']:.1f} s")
            return Fitted(model, key, rois, meta, cache_hit=False, scale=scale, state=state)

    def real_tumours(self, source: Fitted) -> TumourROIs:
        return source.rois

    def draw(self, source: Fitted, n: int, *, seed: int, rng: np.random.Generator) -> Any:
        return self.sample_patches(source, n, seed)

    def target_shape(self, fitted: Fitted, canvas: Slice, rng: np.random.Generator) -> np.ndarray:
        """The pasted patch's (rows, cols) in ``canvas``'s pixels: ``sizes`` "train", the crop of a random
        training tumour in mm (sizes as in the data); "paper", the patch shrunk by 1-4 at 512 pixels."""
        if self.config["sizes"] == "train":
            px = fitted.rois.crop_mm[rng.integers(len(fitted.rois))] / canvas.spacing_mm
        else:
            side = fitted.rois.size / rng.uniform(1.0, 4.0) * canvas.shape[0] / PAPER_SLICE_PX
            px = np.array([side, side])
        return np.maximum(np.round(px), 3).astype(int)

    def tumour(self, source: Fitted, drawn: Any, i: int, rng: np.random.Generator) -> Tumour:
        hu, mask = drawn

        def shape(canvas: Slice, factor: float) -> tuple[int, int]:
            target = self.target_shape(source, canvas, rng)
            return tuple(int(v) for v in np.maximum(np.round(target * factor), 3))

        return Tumour(hu[i], mask[i], shape, {"generator": source.key})

    def slice_id(self, source: Fitted, seed: int, i: int) -> str:
        return f"{self.name}-{source.key[:8]}-s{seed}-{i:05d}"

    def facts(self, source: Fitted, n: int, made: int) -> dict[str, Any]:
        return {
            "generator": source.key,
            "cache_hit": source.cache_hit,
            "requested": n,
            "made": made,
            **{k: source.meta.get(k) for k in ("config", "seconds", "n_patches", "warnings")},
        }


@contextlib.contextmanager
def fit_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across processes (POSIX); no lock where fcntl is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: parallel trials may fit the same generator twice, harmlessly
        yield
        return
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
