"""`augforge generate`: not built yet in this version."""

from __future__ import annotations

import typer

from augforge.errors import NotBuiltYet


def register(app: typer.Typer) -> None:
    @app.command("generate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _not_built(ctx: typer.Context) -> None:
        """Not built yet in this version."""
        raise NotBuiltYet("`augforge generate` is not built yet in this version")
