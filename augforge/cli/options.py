"""Options that several commands share, declared once: the same name, type and help everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from augforge.config import DEFAULT_PRESET

__all__ = ["AllowPickleOption", "DataOption", "PresetOption", "SetOption"]

PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        metavar="PRESET",
        help=f"tiny (tests), quick (CPU default), fast (CPU studies: one thread a trial) or paper (GPU). Default {DEFAULT_PRESET}.",
    ),
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", metavar="PATH|NAME", help="Dataset name or path (default: the preset's, lidc-phantom)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a preset field (train.epochs=5, gen.epochs=300) or a strategy parameter (dcgan.width=32, "
        "affine.p=0.8); repeatable.",
    ),
]
AllowPickleOption = Annotated[
    bool, typer.Option("--allow-pickle", help="Allow reading pickled datasets (Mendeley .pkl); they can run code.")
]
