"""``augforge plugins`` and ``augforge strategies``: what is installed and where it came from."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from augforge.plugins import get_registry, plugin_infos


def _report_errors(errors: list) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for e in errors:
        err.print(f"warning: {e}", markup=False)


def plugins_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the loaded plugins: distribution, version and the hooks each implements."""
    infos = plugin_infos()
    registry = get_registry()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "distribution": i.distribution,
                        "version": i.version,
                        "builtin": i.builtin,
                        "hooks": i.hooks,
                        "status": "failed" if i.name in registry.failed_plugins else "ok",
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
    else:
        table = Table(title="augforge plugins")
        for col in ("plugin", "distribution", "version", "hooks", "status"):
            table.add_column(col)
        for i in infos:
            table.add_row(
                i.name,
                i.distribution + (" (built-in)" if i.builtin else ""),
                i.version,
                ", ".join(i.hooks),
                "FAILED (see below)" if i.name in registry.failed_plugins else "ok",
            )
        Console().print(table)
    _report_errors(registry.errors)


def strategies_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered strategies: name, plugin, description and parameters with defaults."""
    registry = get_registry()
    rows = []
    for name in registry.names():
        entry = registry.entries[name]
        rows.append(
            {
                "name": name,
                "plugin": entry.plugin,
                "description": entry.cls.description,
                "needs_gpu": entry.cls.needs_gpu,
                "params": [p.as_dict() for p in entry.cls.params],
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        table = Table(title="augforge strategies")
        for col in ("strategy", "plugin", "description", "parameters (defaults)"):
            table.add_column(col, overflow="fold")
        for r in rows:
            params = ", ".join(f"{p['name']}={p['default']}" for p in r["params"]) or "-"
            table.add_row(r["name"], r["plugin"], r["description"], params)
        Console().print(table)
    _report_errors(registry.errors)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins_cmd)
    app.command("strategies")(strategies_cmd)
