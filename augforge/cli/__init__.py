"""The ``augforge`` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from augforge import __version__
from augforge.errors import AugforgeError

app = typer.Typer(
    name="augforge",
    help="Augmentation strategies for lung-cancer CT segmentation, and a harness that ranks them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"augforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """augforge: does this augmentation actually help my segmentation model?"""


def _register_commands() -> None:
    from augforge.cli import bench, data, generate, listing, preview, report

    for module in (listing, bench, data, generate, preview, report):
        module.register(app)


_register_commands()


def _is_usage_exception(exc: BaseException) -> bool:
    """A click usage error (a bad option or value); typer may bundle its own copy of click."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: user errors become one line on stderr and an exit code."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except AugforgeError as exc:
        err_console.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted", markup=False)
        return 130
    except OSError as exc:  # the machine's side: a full disk, a read-only folder, a missing permission
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(
            f"error: {where}{exc.strerror or exc}; check the path, its permissions and the free "
            "space (finished trials are kept; rerun to resume)",
            markup=False,
        )
        return 1
    except MemoryError:
        err_console.print(
            "error: out of memory; use a smaller preset, fewer workers or a smaller dataset "
            "(finished trials are kept; rerun to resume)",
            markup=False,
        )
        return 1
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # click's Abort (Ctrl-C inside a prompt or command)
            err_console.print("interrupted", markup=False)
            return 130
        if _is_usage_exception(exc):
            exc.show()  # type: ignore[attr-defined]
            return exc.exit_code  # type: ignore[attr-defined]
        raise
    # Not standalone, click returns the code of a typer.Exit instead of raising it: typer turns a
    # Ctrl-C inside a command into Exit(130), which must not end as a silent exit 0.
    if isinstance(rc, int) and rc:
        if rc == 130:
            err_console.print("interrupted", markup=False)
        return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
