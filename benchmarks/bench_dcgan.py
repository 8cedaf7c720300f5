"""DCGAN benchmark: fit throughput, sampling throughput and paste-in throughput.

On the training tumours of the dataset (quick preset by default), for the strategy's fit
configuration under the preset:

- fit: real patches per second through a full DCGAN step (D on real and fake, then G), over
  ``--epochs`` epochs, and the projected time of the preset's whole fit;
- sampling: generated patches per second (inference, batch 256);
- synthesis: synthetic slices per second (sample, resize, place, paste, measure), the part of
  ``prepare()`` after the fit.

Prints one JSON object. Wall and CPU times are both given: on a shared machine the wall time
includes waiting for a core (CPU time / wall time > 1 means several threads were busy).

    python benchmarks/bench_dcgan.py                          # dcgan, quick preset
    python benchmarks/bench_dcgan.py --strategy dcgan-paper --epochs 1
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
    ap.add_argument("--strategy", default="dcgan", choices=("dcgan", "dcgan-paper"))
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--epochs", type=int, default=3, help="epochs to time (the preset's fit is projected)")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--slices", type=int, default=200, help="synthetic slices to paste")
    args = ap.parse_args()

    import dataclasses

    import torch

    from augforge import PrepareContext
    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.models.dcgan import sample, train_dcgan
    from augforge.plugins import get_registry
    from augforge.synthesis import HU_SCALE

    preset = get_preset(args.preset)
    dataset = load_dataset(preset.data, progress=False)
    strategy = get_registry().create(args.strategy)
    cfg = strategy.fit_config(preset, trial_seed=0)
    rois = strategy.tumour_patches(dataset.train, cfg.size)
    data = torch.from_numpy(strategy.encode(rois))
    timed_cfg = dataclasses.replace(cfg, epochs=args.epochs)

    fit, fit_wall, fit_cpu = _timed(lambda: train_dcgan(data, timed_cfg, progress=False, log=lambda m: None))
    batch = min(cfg.batch_size, len(data))
    seen = args.epochs * (len(data) // batch) * batch
    _, s_wall, s_cpu = _timed(lambda: sample(fit.generator, args.samples, seed=1))

    with tempfile.TemporaryDirectory() as tmp:
        ctx = PrepareContext(
            seed=0,
            healthy=dataset.healthy,
            preset=preset,
            cache_dir=Path(tmp),
            progress=False,
            log=lambda m: None,
            dataset_fingerprint=dataset.fingerprint,
        )
        fitted = strategy.source(
            dataset.train[:8],
            dataclasses.replace(ctx, preset=dataclasses.replace(preset, gen=dataclasses.replace(preset.gen, epochs=1))),
            HU_SCALE,
        )
        fitted.model = fit.generator  # paste the timed generator's samples
        out, p_wall, p_cpu = _timed(
            lambda: strategy.synthesize(fitted, dataset.healthy, args.slices, seed=0, log=lambda m: None)
        )

    print(
        json.dumps(
            {
                "strategy": args.strategy,
                "preset": args.preset,
                "fit_config": dataclasses.asdict(cfg),
                "patches": len(data),
                "torch_threads": torch.get_num_threads(),
                "fit_img_per_s": round(seen / fit_wall, 1),
                "fit_img_per_cpu_s": round(seen / fit_cpu, 1),
                "fit_projected_s": round(fit_wall / args.epochs * cfg.epochs, 1),
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
