"""``lidc-phantom``: the embedded default dataset. Synthetic chest anatomy, real LIDC nodule outlines.

Each tumour slice takes one LIDC-IDRI annotation (one radiologist's outline of one nodule, on the
slice where it is largest), draws a fresh procedural chest (:mod:`augforge.data.sources.anatomy`), places
the outline in a lung near where it was in the real scan (:mod:`augforge.data.sources.nodule`), and
labels the slice with the Lung-RADS class of the measured nodule (:mod:`augforge.data.processing.lungrads`).

- Class mix: the seed paper's test set (LR2 35, LR3 37, LR4A 97, LR4B 95 of 264), scaled to
  ``n_test`` and to ``n_train`` by largest remainders.
- Split by LIDC patient: a patient's annotations are all in train or all in test.
- Within a class, annotations of different nodules come before second readings of the same
  nodule, so that a small dataset is not four readings of a few nodules.
- Calcified nodules are left out: Lung-RADS calls benign calcification category 1.
- Healthy slices (LR1) are the same anatomy without a nodule: canvases for paste-in synthesis.
- Every slice has its own random stream ``default_rng([seed, split, index])``: the same seed gives
  the same arrays, and a slice does not change when the dataset grows around it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from augforge import seeding
from augforge.data.processing import lungrads, parallel
from augforge.data.processing.cache import SliceStack
from augforge.data.processing.lungfield import lung_field
from augforge.data.sources import anatomy, lidc, nodule, scanner
from augforge.errors import DataError

NAME = "lidc-phantom"
#: Bump whenever a change here or in anatomy.py / nodule.py changes the generated arrays, so that
#: caches built by an older version are not reused.
GENERATOR_VERSION = 4
#: The seed paper's test-set class counts (Mendeley dataset, 264 slices).
PAPER_TEST_MIX: dict[str, int] = {"LR2": 35, "LR3": 37, "LR4A": 97, "LR4B": 95}


def class_counts(n: int, mix: dict[str, int] = PAPER_TEST_MIX) -> dict[str, int]:
    """``n`` slices shared out in the proportions of ``mix`` (largest remainders; ties by class order)."""
    total = sum(mix.values())
    exact = {k: n * v / total for k, v in mix.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    order = sorted(mix, key=lambda k: (-(exact[k] - counts[k]), list(mix).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class Candidate:
    """An LIDC annotation usable as a tumour slice, with its Lung-RADS class.

    solid_fraction: the solid core's share of the diameter (textures 3 and 4), else None.
    others:         the other readers' annotations of the same nodule (physics "ct" labels the
                    image drawn from this reading with their consensus).
    """

    nodule: lidc.LidcNodule
    label: str
    solid_fraction: float | None
    others: tuple[lidc.LidcNodule, ...] = ()

    @property
    def solid_diameter_mm(self) -> float | None:
        if self.solid_fraction is None:
            return None
        return self.solid_fraction * self.nodule.mean_diameter_mm


def candidates(seed: int) -> list[Candidate]:
    """Every non-calcified LIDC annotation, classified. The core fractions of part-solid nodules are
    drawn per annotation from ``seed`` (they decide LR3 / LR4A / LR4B)."""
    out = []
    others = lidc.other_readings()
    for n in lidc.read_nodules():
        if n.calcification != lidc.CALCIFICATION_ABSENT or n.texture not in (1, 2, 3, 4, 5):
            continue
        frac = None
        if n.texture in (3, 4):
            rng = seeding.stream(seed, seeding.PHANTOM_FRACTIONS, n.annotation_id)
            frac = float(rng.uniform(0.3, 0.85) if n.texture == 3 else rng.uniform(0.7, 0.95))
        solid = None if frac is None else frac * n.mean_diameter_mm
        label = lungrads.classify(n.mean_diameter_mm, n.texture, solid)
        out.append(Candidate(n, label, frac, others[n.annotation_id]))
    return out


def split_by_patient(
    cands: list[Candidate], train_counts: dict[str, int], test_counts: dict[str, int], rng: np.random.Generator
) -> dict[str, list[tuple[Candidate, int]]]:
    """Pick the annotations of each split, patients never shared: test takes patients in random
    order until every class has 1.2x its quota of distinct nodules, train takes the others. Within a
    class, first readings of distinct nodules come first; a quota larger than the supply repeats
    annotations (on new anatomy). Returns ``{split: [(candidate, repeat), ...]}`` in random order."""
    by_patient: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_patient[c.nodule.patient_id].append(c)
    patients = sorted(by_patient)
    test_pool: dict[str, list[Candidate]] = defaultdict(list)
    train_pool: dict[str, list[Candidate]] = defaultdict(list)
    distinct: Counter[str] = Counter()  # first readings (distinct nodules) in test, per class
    for p in (patients[i] for i in rng.permutation(len(patients))):
        if any(distinct[k] < 1.2 * q for k, q in test_counts.items() if q):
            distinct.update(c.label for c in by_patient[p] if c.nodule.reader_rank == 0)
            for c in by_patient[p]:
                test_pool[c.label].append(c)
        else:
            for c in by_patient[p]:
                train_pool[c.label].append(c)
    out: dict[str, list[tuple[Candidate, int]]] = {}
    for split, pool, counts in (("train", train_pool, train_counts), ("test", test_pool, test_counts)):
        picks: list[tuple[Candidate, int]] = []
        for label, quota in counts.items():
            supply = pool[label]
            if quota and not supply:
                raise DataError(
                    f"{NAME}: no LIDC nodule of class {label} left for the {split} split; lower --n-test or --n-train"
                )
            tiebreak = rng.random(len(supply))
            order = sorted(range(len(supply)), key=lambda i: (supply[i].nodule.reader_rank, tiebreak[i]))
            picks += [(supply[order[j % len(supply)]], j // len(supply)) for j in range(quota)]
        out[split] = [picks[i] for i in rng.permutation(len(picks))]
    return out


#: physics "ct": share of nodules placed against the pleura (about 40% of nodules touch it in
#: screening CT, docs/data.md).
PLEURAL_SHARE = 0.4
PHYSICS = ("v4", "ct")
#: Bump whenever a change to the "ct" path (here, scanner.py, anatomy.vessel_sections, the
#: nodule's partial volume) changes its arrays; v4's arrays are GENERATOR_VERSION's.
CT_VERSION = 12


def _place(
    size: int, cand: Candidate, rng: np.random.Generator, ct: bool = False
) -> tuple[anatomy.ChestSlice, tuple[float, float], bool, float, dict[str, Any], list[anatomy.VesselSection]]:
    """Draw a chest and a place in its lung for ``cand``: (chest, centre, fits, render scale, facts,
    vessel sections). With ``ct`` (physics "ct") the chest also gets vessel cross-sections (to be
    painted per slice thickness), and PLEURAL_SHARE of the nodules are placed against the pleura;
    facts then say which and how many vessels."""
    spacing = anatomy.FOV_MM / size
    nod = cand.nodule
    scale = nodule.visible_scale(nod.outline, nod.spacing_mm, spacing)
    radius = nodule.radius_px(nod.outline, nod.spacing_mm, spacing, scale)
    # Near where it was in the real scan (mm from the image centre), jittered by ~1 cm.
    cx, cy = nod.centroid_px
    pref = [((v - 255.5) * nod.spacing_mm + rng.normal(0, 10.0)) / spacing + size / 2 - 0.5 for v in (cx, cy)]
    pleural = ct and bool(rng.random() < PLEURAL_SHARE)
    choose = nodule.choose_touching_centre if pleural else nodule.choose_centre
    sections: list[anatomy.VesselSection] = []
    for _ in range(4):  # a large nodule may not fit a small (apical) lung: draw another chest
        chest = anatomy.chest_slice(size, rng)
        if ct:
            sections = anatomy.vessel_sections(chest, spacing, rng)
        centre, fits = choose(chest.lung, radius, (pref[0], pref[1]), rng)
        if fits:
            break
    # The sub-pixel position can still cost a tiny nodule a pixel: grow it until the mask is large
    # enough where it actually lands.
    while (
        nodule.rasterise(nod.outline, nod.spacing_mm, spacing, centre, chest.hu.shape, scale).mask.sum()
        < nodule.MIN_MASK_PIXELS
    ):
        scale *= 1.1
    facts = {"pleural": pleural, "vessel_sections": len(sections)} if ct else {}
    return chest, centre, fits, scale, facts, sections


def _tumour_slice(
    size: int, cand: Candidate, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(hu (H, W) float32, mask (H, W) uint8, facts) of one slice showing ``cand``."""
    spacing = anatomy.FOV_MM / size
    chest, centre, fits, scale, _, _ = _place(size, cand, rng)
    mask = nodule.render(chest.hu, cand.nodule, spacing, centre, scale, rng, cand.solid_fraction)
    hu = anatomy.finish(chest.hu, spacing, rng)
    facts = {
        "centre_px": [round(centre[0], 2), round(centre[1], 2)],
        "render_scale": round(scale, 3),
        "fits_in_lung": fits,
        "anatomy": chest.params,
    }
    return hu, mask, facts


def _ct_tumour_slice(
    size: int, cand: Candidate, srng: np.random.Generator, key: tuple[int, ...], sites: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """Physics "ct": one nodule in one anatomy, acquired at each of ``sites``. Returns
    ({site: hu (H, W) float32}, label (H, W) uint8, drawn (H, W) uint8, facts). The anatomy and the
    nodule's appearance are the same at every site; each site has its own slice position and
    thickness (partial volume of the nodule, fading of oblique vessels), kernel, noise and HU offset.
    The image shows one reader's outline (``drawn``); the label is the other readers' consensus
    where the nodule has other readers (:func:`nodule.consensus_label`), else the drawn outline.
    ``key`` seeds the per-site streams: stream(*key, part)."""
    spacing = anatomy.FOV_MM / size
    chest, centre, fits, scale, placed, sections = _place(size, cand, srng, ct=True)
    width = float(chest.params["body_mm"][0])
    images: dict[str, np.ndarray] = {}
    drawn = np.zeros((size, size), np.uint8)
    for k, name in enumerate(sites):
        site = scanner.SITES[name]
        place = seeding.stream(*key, 2 * k + 1)  # this site's slice position relative to the nodule
        offset = float(place.uniform(-0.5, 0.5) * site.slice_mm)
        hu = chest.hu.copy()
        anatomy.paint_vessel_sections(hu, chest, sections, spacing, site.slice_mm)
        # The same draws for the nodule's own texture at every site: one object, several scanners.
        drawn = nodule.render(
            hu,
            cand.nodule,
            spacing,
            centre,
            scale,
            seeding.stream(*key, 0),
            cand.solid_fraction,
            slab=(site.slice_mm, offset),
        )
        images[name] = scanner.acquire(hu, spacing, site, seeding.stream(*key, 2 * k + 2), width)
    consensus = nodule.consensus_label(cand.nodule, cand.others, spacing, centre, scale, (size, size))
    label = drawn if consensus is None else consensus
    both = int(np.logical_and(label, drawn).sum())
    facts = {
        "centre_px": [round(centre[0], 2), round(centre[1], 2)],
        "render_scale": round(scale, 3),
        "fits_in_lung": fits,
        **placed,
        "label_readers": 0 if consensus is None else len(cand.others),
        "drawn_label_dice": round(2 * both / max(int(label.sum()) + int(drawn.sum()), 1), 4),
        "anatomy": chest.params,
    }
    return images, label, drawn, facts


def _provenance(cand: Candidate, repeat: int) -> dict[str, Any]:
    n = cand.nodule
    return {
        "scan_id": n.scan_id,
        "patient_id": n.patient_id,
        "series_uid": n.series_uid,
        "annotation_id": n.annotation_id,
        "texture": n.texture,
        "malignancy": n.malignancy,
        "nodule_type": lungrads.nodule_type(n.texture),
        # Mean of long and short axis (Lung-RADS), unrounded: classify() on these gives the label.
        "diameter_mm": n.mean_diameter_mm,
        "solid_diameter_mm": cand.solid_diameter_mm,
        "long_axis_mm": round(n.long_axis_mm, 2),
        "short_axis_mm": round(n.short_axis_mm, 2),
        "area_mm2": round(n.area_mm2, 1),
        "z_mm": n.outline.z_mm,
        "native_spacing_mm": n.spacing_mm,
        "reader_rank": n.reader_rank,
        "repeat": repeat,
    }


_CHUNK = 32  # slices per unit of work (and per progress step)
_Job = tuple[str, int, "tuple[Candidate, int] | None"]


def _render_jobs(
    args: tuple[int, int, list[_Job]] | tuple[int, int, list[_Job], str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], np.ndarray | None]:
    """Generate the slices of ``jobs``: (hu, field, mask) stacks, records, and for physics "ct" the
    (N, 2, H, W) readers stack (the outline the image was drawn from, the label). Module-level, so
    that worker processes can run it."""
    size, seed, jobs, physics = args if len(args) == 4 else (*args, "v4")
    if physics == "ct":
        return _render_ct_jobs(size, seed, jobs)
    spacing = anatomy.FOV_MM / size
    n = len(jobs)
    hu = np.empty((n, size, size), np.float32)
    field = np.empty((n, size, size), bool)
    mask = np.zeros((n, size, size), np.uint8)
    records = []
    for k, (split, i, pick) in enumerate(jobs):
        srng = seeding.stream(seed, seeding.PHANTOM_SPLITS[split], i)
        if pick is None:
            chest = anatomy.chest_slice(size, srng)
            hu[k] = anatomy.finish(chest.hu, spacing, srng)
            prov: dict[str, Any] = {"anatomy": chest.params}
            label, patient, sid = "LR1", f"phantom-healthy-{i:04d}", f"healthy-{i:04d}"
        else:
            cand, repeat = pick
            hu[k], mask[k], facts = _tumour_slice(size, cand, srng)
            prov = {**_provenance(cand, repeat), **facts}
            label, patient = cand.label, cand.nodule.patient_id
            sid = f"{split}-{i:04d}-a{cand.nodule.annotation_id}"
        field[k] = lung_field(hu[k])  # from the image alone, never the mask (lungfield.py)
        prov["seed"] = [seed, seeding.PHANTOM_SPLITS[split], i]
        records.append(
            {
                "id": sid,
                "label": label,
                "split": split,
                "patient": patient,
                "source": NAME,
                "spacing_mm": spacing,
                "provenance": prov,
            }
        )
    return hu, field, mask, records, None


#: physics "ct": where each split's slices are acquired, and the split each acquisition goes to.
#: The held-out site gives the shifted test and the data oracle's training slices; strategies see
#: neither (the Dataset keeps them apart from ``train`` and ``healthy``).
CT_SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("train", scanner.TRAIN_SITE), ("train-shifted", scanner.HELD_OUT_SITE)),
    "test": (("test", scanner.TRAIN_SITE), ("shifted", scanner.HELD_OUT_SITE)),
    "healthy": (("healthy", scanner.TRAIN_SITE),),
}


def _render_ct_jobs(
    size: int, seed: int, jobs: list[_Job]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], np.ndarray]:
    spacing = anatomy.FOV_MM / size
    hus: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    readers: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    for split, i, pick in jobs:
        code = seeding.PHANTOM_SPLITS[split]
        srng = seeding.stream(seed, seeding.PHANTOM_CT, code, i)
        key = (seed, seeding.PHANTOM_CT, code, i)
        outputs = CT_SPLITS[split]
        sites = tuple(site for _, site in outputs)
        if pick is None:
            chest = anatomy.chest_slice(size, srng)
            sections = anatomy.vessel_sections(chest, spacing, srng)
            width = float(chest.params["body_mm"][0])
            site = scanner.SITES[sites[0]]
            anatomy.paint_vessel_sections(chest.hu, chest, sections, spacing, site.slice_mm)
            images = {sites[0]: scanner.acquire(chest.hu, spacing, site, seeding.stream(*key, 2), width)}
            mask = drawn = np.zeros((size, size), np.uint8)
            prov: dict[str, Any] = {"anatomy": chest.params, "vessel_sections": len(sections)}
            label, patient, base_id = "LR1", f"phantom-healthy-{i:04d}", f"healthy-{i:04d}"
        else:
            cand, repeat = pick
            images, mask, drawn, facts = _ct_tumour_slice(size, cand, srng, key, sites)
            prov = {**_provenance(cand, repeat), **facts}
            label, patient = cand.label, cand.nodule.patient_id
            base_id = f"{split}-{i:04d}-a{cand.nodule.annotation_id}"
        prov["seed"] = [seed, seeding.PHANTOM_CT, code, i]
        for out_split, site in outputs:
            hus.append(images[site])
            masks.append(mask)
            readers.append(np.stack([drawn, mask]))
            records.append(
                {
                    "id": base_id if out_split == split else f"{base_id}@{site}",
                    "label": label,
                    "split": out_split,
                    "patient": patient,
                    "source": NAME,
                    "spacing_mm": spacing,
                    "provenance": {**prov, "site": site},
                }
            )
    hu = np.stack(hus) if hus else np.empty((0, size, size), np.float32)
    field = np.stack([lung_field(x) for x in hus]) if hus else np.empty((0, size, size), bool)
    mask = np.stack(masks) if masks else np.empty((0, size, size), np.uint8)
    return hu, field, mask, records, np.stack(readers) if readers else np.empty((0, 2, size, size), np.uint8)


def build(
    size: int, n_train: int, n_test: int, n_healthy: int, seed: int, progress: bool = True, physics: str = "v4"
) -> SliceStack:
    """Generate the dataset as stacked arrays (see :class:`augforge.data.processing.cache.SliceStack`).

    physics: "v4", the published phantom (one simulated scanner); or "ct", CT physics at two sites
    (:mod:`augforge.data.sources.scanner`): every training and test slice is also acquired at the
    held-out site (splits ``train-shifted`` and ``shifted``), the same anatomy and nodule.
    """
    if physics not in PHYSICS:
        raise DataError(f"{NAME}: physics {physics!r} unknown; choose one of {', '.join(PHYSICS)}")
    if size < 32:
        raise DataError(f"{NAME}: size {size} is too small for a chest slice; use 32 or more")
    if min(n_train, n_test, n_healthy) < 0 or n_test < 1:
        raise DataError(f"{NAME}: need n_test >= 1 and non-negative n_train, n_healthy")
    rng = seeding.stream(seed, seeding.PHANTOM_PATIENTS)
    picks = split_by_patient(candidates(seed), class_counts(n_train), class_counts(n_test), rng)
    jobs: list[_Job] = (
        [("train", i, p) for i, p in enumerate(picks["train"])]
        + [("test", i, p) for i, p in enumerate(picks["test"])]
        + [("healthy", i, None) for i in range(n_healthy)]
    )
    n = len(jobs)
    spacing = anatomy.FOV_MM / size
    per_job = {"v4": {"train": 1, "test": 1, "healthy": 1}, "ct": {k: len(v) for k, v in CT_SPLITS.items()}}[physics]
    total = sum(per_job[split] for split, _, _ in jobs)
    hu = np.empty((total, size, size), np.float32)
    field = np.empty((total, size, size), bool)
    mask = np.zeros((total, size, size), np.uint8)
    readers = np.zeros((total, 2, size, size), np.uint8) if physics == "ct" else None
    records: list[dict[str, Any]] = []
    chunks = [
        (size, seed, chunk) if physics == "v4" else (size, seed, chunk, physics)
        for chunk in parallel.chunked(jobs, _CHUNK)
    ]
    k = 0
    for c_hu, c_field, c_mask, c_records, c_readers in parallel.map_chunks(
        _render_jobs, chunks, parallel.workers_for(n), f"building {NAME} ({n} slices, {size}x{size})", progress
    ):
        m = len(c_records)
        hu[k : k + m], field[k : k + m], mask[k : k + m] = c_hu, c_field, c_mask
        if readers is not None:
            readers[k : k + m] = c_readers
        records += c_records
        k += m
    meta = {
        "name": NAME,
        "source": NAME,
        "size": size,
        "spacing_mm": spacing,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "n_healthy": n_healthy,
        "lidc_database": str(lidc.database_path()),
    }
    if physics != "v4":
        meta |= {
            "physics": physics,
            "ct_version": CT_VERSION,
            "physics_card": scanner.card(),
            "pleural_share": PLEURAL_SHARE,
            # readers.npy: the outline each image was drawn from, and the label (the other
            # readers' consensus, or that outline where the nodule has no other reader).
            "readers": 2,
            "consensus": 1,
            "reader_roles": ["drawn", "label"],
        }
    return SliceStack(hu=hu, field=field, mask=mask, records=records, meta=meta, readers=readers)
