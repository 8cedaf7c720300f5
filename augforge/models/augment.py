"""Random flips and turns of training patches: tumours have no preferred orientation."""

from __future__ import annotations

import torch

__all__ = ["random_dihedral"]


def random_dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` (..., H, W) turned by a random multiple of 90 degrees and flipped at random, one draw
    for the whole batch (the DCGAN draws one per patch: augforge.models.dcgan)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if bool(torch.randint(0, 2, (1,), generator=gen)) else x
