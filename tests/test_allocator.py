"""The allocator setting (augforge/train/allocator.py) changes where a step's buffers live, never what
the step computes: a seeded training gives the same weights with glibc's malloc as it comes and with
freed memory kept. Each side runs in its own process, since the setting is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from augforge.train import allocator

_TRAIN = textwrap.dedent(
    """
    import hashlib, json
    import numpy as np, torch
    from augforge.config import get_preset
    from augforge.models import build_model
    from augforge.train import allocator
    from augforge.train.loop import train_model

    kept = allocator.keep_freed_memory()  # as run_trial does
    preset = get_preset("tiny")
    rng = np.random.default_rng(0)
    images = [rng.random((64, 64), dtype=np.float32) for _ in range(8)]
    masks = [(im > 0.8).astype(np.uint8) for im in images]
    torch.manual_seed(0)
    model = build_model(preset.model)
    result = train_model(model, images, masks, preset.train, seed=3, progress=False)
    digest = hashlib.sha256()
    for t in model.state_dict().values():
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    print(json.dumps({"kept": kept, "weights": digest.hexdigest(),
                      "loss": result.final_loss}))
    """
)


def _train(malloc: str) -> dict:
    env = {**os.environ, "AUGFORGE_MALLOC": malloc}
    out = subprocess.run([sys.executable, "-c", _TRAIN], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting applies to glibc only")
def test_keeping_freed_memory_trains_the_same_weights():
    system, kept = _train("system"), _train("")
    assert system["kept"] is False  # AUGFORGE_MALLOC=system leaves malloc alone
    assert kept["kept"] is True  # on glibc, unless turned off
    assert kept["weights"] == system["weights"]
    assert kept["loss"] == system["loss"]


def test_the_setting_is_made_once_and_reported_the_same_each_time():
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first
    if sys.platform.startswith("linux") and os.environ.get("AUGFORGE_MALLOC", "") != "system":
        assert first is True
