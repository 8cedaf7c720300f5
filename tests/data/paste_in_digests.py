"""The paste-in strategies' outputs as digests: tests/test_paste_in.py checks that the same seeds
still give the same synthetic slices, patches and facts, slice for slice.

Run ``python tests/data/paste_in_digests.py`` to print the digests of the current code; write them
into ``paste-in-digests.json``, under this machine's ``env()``, only when a change is meant to change
what the strategies make.

Trained generators' weights depend on the CPU's vector instructions (AVX2 or AVX512 kernels round
sums differently), so the digests are kept per torch build, machine type and CPU capability. On
the AVX512 machine where the second set was recorded, only ``dcgan-paper`` (the paper-sized DCGAN)
differed from the AVX2 set; capping torch, oneDNN, MKL and numpy at AVX2 did not bring it back, so
that set is not a rerun of the first one but this code's output on that machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: name -> (strategy, parameters, healthy canvases?, intensity scale, seed)
CASES: dict[str, tuple[str, dict[str, Any], bool, str, int]] = {
    "dcgan": ("dcgan", {}, True, "HU", 0),
    "dcgan-no-healthy-8bit": ("dcgan", {"ratio": 0.5}, False, "8-bit", 1),
    "dcgan-paper": ("dcgan-paper", {"ratio": 0.5}, True, "HU", 0),
    "copy-paste": ("copy-paste", {}, True, "HU", 0),
    "copy-paste-train-8bit": ("copy-paste", {"canvases": "train", "ratio": 0.5}, True, "8-bit", 2),
}


def _digest_slices(slices: list[Any]) -> str:
    h = hashlib.sha256()
    for s in slices:
        facts = {"id": s.id, "label": s.label, "source": s.source, "patient": s.patient, "spacing": s.spacing_mm}
        h.update(json.dumps(facts, sort_keys=True).encode())
        h.update(json.dumps(s.provenance, sort_keys=True, default=str).encode())
        for a in (s.hu, s.lung_hu, s.mask):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def env() -> str:
    import platform

    import torch

    return f"torch {torch.__version__} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}"


def digests() -> dict[str, dict[str, Any]]:
    from augforge import PrepareContext
    from augforge.config import get_preset
    from augforge.data.sources import load_dataset
    from augforge.plugins import get_registry

    preset = get_preset("tiny")
    data = load_dataset(preset.data, progress=False)
    registry = get_registry()
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for case, (name, params, healthy, intensity, seed) in CASES.items():
            strategy = registry.create(name, {name: params} if params else {})
            ctx = PrepareContext(
                seed=seed,
                healthy=data.healthy if healthy else [],
                preset=preset,
                cache_dir=Path(cache),
                log=lambda _m: None,
                progress=False,
                dataset_fingerprint=data.fingerprint,
                intensity=intensity,
            )
            expanded = strategy.prepare(list(data.train), ctx)
            added = expanded[len(data.train) :]
            made = strategy.generate(list(data.train), ctx, 5)
            info = {k: v for k, v in made.info.items() if k not in ("seconds", "cache_hit")}
            out[case] = {
                "added": len(added),
                "slices": _digest_slices(added),
                "generated": _digest_slices(made.slices),
                "patches": hashlib.sha256(
                    np.ascontiguousarray(made.patches_hu).tobytes() + np.ascontiguousarray(made.patches_mask).tobytes()
                ).hexdigest()[:16],
                "info": hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16],
            }
    return out


if __name__ == "__main__":
    json.dump({env(): digests()}, sys.stdout, indent=1, sort_keys=True)
    print()
