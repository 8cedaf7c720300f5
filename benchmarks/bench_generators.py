"""Generator benchmark for any strategy on the paste-in base (vqvae by default): fit time, sampling
and paste-in throughput, through the public API a third-party generator also goes through.

On the training tumours of the preset's dataset (quick preset by default), with an empty generator
cache:

- fit: the whole fit of the preset's budget (``strategy.source``: patches, fit, save), in seconds;
- sampling: new tumour patches per second (``sample_patches``);
- synthesis: synthetic slices per second after the fit (sample, resize, place, paste, measure).

Prints one JSON object; wall and CPU times are both given (CPU / wall > 1: several threads busy).

    python benchmarks/bench_generators.py                      # vqvae, quick preset
    python benchmarks/bench_generators.py --strategy dcgan --samples 512
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="vqvae")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--slices", type=int, default=200, help="synthetic slices to paste")
    args = ap.parse_args()

    import torch

    from augforge import PrepareContext
    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.plugins import get_registry
    from augforge.synthesis import GeneratorStrategy, paste_scale

    preset = get_preset(args.preset)
    dataset = load_dataset(preset.data, progress=False)
    strategy = get_registry().create(args.strategy)
    if not isinstance(strategy, GeneratorStrategy):
        raise SystemExit(f"{args.strategy} is not a generator (augforge.synthesis.GeneratorStrategy)")
    train = list(dataset.train)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = PrepareContext.for_dataset(
            dataset, seed=0, preset=preset, cache_dir=Path(tmp), progress=False, log=lambda m: None
        )
        scale = paste_scale(ctx.intensity, train)
        fitted, fit_wall, fit_cpu = _timed(lambda: strategy.source(train, ctx, scale))
        _, s_wall, s_cpu = _timed(lambda: strategy.sample_patches(fitted, args.samples, seed=1))
        canvases = list(dataset.healthy) or [s for s in train if not s.is_synthetic]
        out, p_wall, p_cpu = _timed(
            lambda: strategy.synthesize(fitted, canvases, args.slices, seed=0, log=lambda m: None)
        )
    print(
        json.dumps(
            {
                "strategy": args.strategy,
                "preset": args.preset,
                "fit_config": fitted.meta.get("config"),
                "patches": len(fitted.rois),
                "torch_threads": torch.get_num_threads(),
                "fit_s": round(fit_wall, 1),
                "fit_cpu_s": round(fit_cpu, 1),
                "sample_img_per_s": round(args.samples / s_wall, 1),
                "sample_img_per_cpu_s": round(args.samples / s_cpu, 1),
                "synth_slices_per_s": round(len(out.slices) / p_wall, 1),
                "synth_slices_per_cpu_s": round(len(out.slices) / p_cpu, 1),
                "synth_made": len(out.slices),
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
