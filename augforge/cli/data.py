"""``augforge data build | info | preview``: the embedded dataset and any dataset a user brings."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from augforge.config import DEFAULT_PRESET, DataConfig, get_preset
from augforge.data.records import LUNG_RADS_CLASSES
from augforge.errors import UsageError

data_app = typer.Typer(
    name="data",
    help="Build, inspect and preview datasets (the embedded lidc-phantom, or a path).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_PRESET = typer.Option(DEFAULT_PRESET, "--preset", help="Preset whose data section gives the defaults.")
_SIZE = typer.Option(None, "--size", min=32, help="Slice side in pixels (lidc-phantom).")
_N_TRAIN = typer.Option(None, "--n-train", min=0, help="Training slices with a nodule (lidc-phantom).")
_N_TEST = typer.Option(None, "--n-test", min=1, help="Test slices (lidc-phantom).")
_N_HEALTHY = typer.Option(None, "--n-healthy", min=0, help="Healthy canvases (lidc-phantom).")
_SEED = typer.Option(None, "--seed", help="Dataset seed (lidc-phantom).")
_WINDOW = typer.Option(
    None, "--window", help='HU window "LEVEL,WIDTH", "lung", "mediastinum"; empty = per-slice min-max.'
)
_CLAHE = typer.Option(None, "--clahe/--no-clahe", help="CLAHE after normalisation.")
_SOURCE = typer.Argument(..., help="lidc-phantom, or a dataset path.")
_PHYSICS = typer.Option(
    None, "--physics", help="lidc-phantom's imaging model: v4 (default) or ct (CT physics at two scanner sites)."
)
_JSON = typer.Option(False, "--json", help="Machine-readable output.")
_SLICES = typer.Option(False, "--slices", help="Also list every slice with its provenance (JSON).")
_OUT = typer.Option(..., "--out", help="PNG file to write.")
_PER_CLASS = typer.Option(4, "--per-class", min=1, max=12, help="Slices per class row.")
_ALLOW_PICKLE = typer.Option(False, "--allow-pickle", help="Allow unpickling the Mendeley files (they can run code).")


def data_config(
    source: str,
    preset: str,
    size: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    n_healthy: int | None = None,
    seed: int | None = None,
    window: str | None = None,
    clahe: bool | None = None,
    physics: str | None = None,
) -> DataConfig:
    """The preset's DataConfig with ``source`` and every option that was given."""
    if physics is not None and physics not in ("v4", "ct"):
        raise UsageError(f"--physics {physics}: choose v4 or ct")
    given = {
        "physics": physics,
        "size": size,
        "n_train": n_train,
        "n_test": n_test,
        "n_healthy": n_healthy,
        "seed": seed,
        "window": window,
        "clahe": clahe,
    }
    return dataclasses.replace(
        get_preset(preset).data, source=source, **{k: v for k, v in given.items() if v is not None}
    )


def _load(cfg: DataConfig, allow_pickle: bool):
    from augforge.data.sources import load_dataset

    return load_dataset(cfg, allow_pickle=allow_pickle, progress=True)


def build_cmd(
    preset: str = _PRESET,
    size: int | None = _SIZE,
    n_train: int | None = _N_TRAIN,
    n_test: int | None = _N_TEST,
    n_healthy: int | None = _N_HEALTHY,
    seed: int | None = _SEED,
    window: str | None = _WINDOW,
    clahe: bool | None = _CLAHE,
    physics: str | None = _PHYSICS,
) -> None:
    """Build the embedded lidc-phantom dataset into the cache (a no-op when already built)."""
    cfg = data_config("lidc-phantom", preset, size, n_train, n_test, n_healthy, seed, window, clahe, physics)
    t0 = time.perf_counter()
    ds = _load(cfg, allow_pickle=False)
    typer.echo(
        f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test / {len(ds.healthy)} healthy, "
        f"{cfg.size}x{cfg.size}, seed {cfg.seed}, fingerprint {ds.fingerprint}, "
        f"{time.perf_counter() - t0:.1f} s -> {ds.meta['cache']}"
    )


def info_cmd(
    source: str = _SOURCE,
    as_json: bool = _JSON,
    with_slices: bool = _SLICES,
    allow_pickle: bool = _ALLOW_PICKLE,
    preset: str = _PRESET,
    size: int | None = _SIZE,
    n_train: int | None = _N_TRAIN,
    n_test: int | None = _N_TEST,
    n_healthy: int | None = _N_HEALTHY,
    seed: int | None = _SEED,
    physics: str | None = _PHYSICS,
) -> None:
    """Counts per split and class, shapes, spacing, HU ranges and provenance of a dataset."""
    from augforge.data.display.summary import slice_records, summarize

    cfg = data_config(source, preset, size, n_train, n_test, n_healthy, seed, physics=physics)
    ds = _load(cfg, allow_pickle)
    facts = summarize(ds)
    if with_slices:
        facts["slice_records"] = slice_records(ds)
        as_json = True  # a list of 1,000 slices is for scripts
    if as_json:
        typer.echo(json.dumps(facts, indent=2, default=str))
        return
    con = Console(highlight=False)
    con.print(
        f"{facts['name']}  fingerprint {facts['fingerprint']}  shape "
        f"{' '.join('x'.join(map(str, s)) for s in facts['shape'])}  spacing "
        f"{', '.join(f'{v:g}' for v in facts['spacing_mm'])} mm",
        markup=False,
    )
    table = Table(title="slices per split and Lung-RADS class")
    for col in ("split", *LUNG_RADS_CLASSES, "total", "patients"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, n in facts["slices"].items():
        row = facts["classes"][split]
        table.add_row(split, *(str(row.get(c, "")) for c in LUNG_RADS_CLASSES), str(n), str(facts["patients"][split]))
    con.print(table)
    hu = facts["hu"]
    if facts["intensity"] == "HU":
        con.print(
            f"HU range {hu['min']} .. {hu['max']} (1/50/99 %: {hu['p1_p50_p99']}); lung field "
            f"1/50/99 %: {facts['lung_hu_in_field']['p1_p50_p99']}; tumour pixels "
            f"{facts['tumour_pixels']['min']} .. {facts['tumour_pixels']['max']} "
            f"(median {facts['tumour_pixels']['median']:g})",
            markup=False,
        )
    else:
        con.print(
            f"intensities: {facts['intensity']} (no Hounsfield units), {hu['min']} .. {hu['max']} "
            f"(1/50/99 %: {hu['p1_p50_p99']}); tumour pixels {facts['tumour_pixels']['min']} .. "
            f"{facts['tumour_pixels']['max']} (median {facts['tumour_pixels']['median']:g})",
            markup=False,
        )
    if "readers" in facts:
        meta = facts["meta"]
        con.print(
            f"readers: {facts['readers']}; label: {facts['consensus']}; nodules per split "
            f"{facts['nodules']}; {meta.get('slices_read')} slices read, "
            f"{meta.get('dropped_no_consensus')} without a consensus left out",
            markup=False,
        )
    if "reader_split" in facts:
        rs = facts["reader_split"]
        con.print(
            f"labels: the other readers' consensus on {rs['labelled_by_other_readers']} of "
            f"{rs['tumour_slices']} tumour slices (the image shows one reader's outline); drawn outline "
            f"against label on the test slices: mean Dice {rs['test_drawn_vs_label_dice']}",
            markup=False,
        )
    if "lidc" in facts:
        lidc = facts["lidc"]
        con.print(
            f"LIDC provenance: {lidc['annotations']} annotations from {lidc['scans']} scans of "
            f"{lidc['patients']} patients; textures {lidc['textures']}",
            markup=False,
        )
        for c, d in lidc["diameter_mm_by_class"].items():
            con.print(f"  {c}: diameter {d['min']} .. {d['max']} mm (median {d['median']})", markup=False)


def preview_cmd(
    source: str = _SOURCE,
    out: Path = _OUT,
    per_class: int = _PER_CLASS,
    allow_pickle: bool = _ALLOW_PICKLE,
    preset: str = _PRESET,
    size: int | None = _SIZE,
    seed: int | None = _SEED,
    physics: str | None = _PHYSICS,
    site: str = typer.Option(
        "train", "--site", help="On two-site data (--physics ct): the training site, or the held-out site's view."
    ),
) -> None:
    """A PNG grid: a row per Lung-RADS class, lung window, tumour outlines and a zoom on each."""
    from augforge.data.display.preview import check_output, save_preview
    from augforge.data.records import Dataset

    if site not in ("train", "held-out"):
        raise UsageError(f"--site {site}: choose train or held-out")
    check_output(out)
    cfg = data_config(source, preset, size=size, seed=seed, physics=physics)
    ds = _load(cfg, allow_pickle)
    title = None
    if site == "held-out":
        if not ds.shifted:
            raise UsageError(f"--site held-out: {ds.name} was acquired at one site; give --physics ct")
        # The same nodules as the training-site preview picks, as the held-out scanner acquired them.
        ds = Dataset(ds.name, ds.train_shifted, ds.shifted, [], ds.meta, ds.fingerprint)
        title = f"{ds.name}, held-out scanner site: the same nodules; lung window L-600 W1500; red = tumour mask"
    path = save_preview(ds, out, per_class=per_class, title=title)
    typer.echo(str(path))


data_app.command("build")(build_cmd)
data_app.command("info")(info_cmd)
data_app.command("preview")(preview_cmd)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
