"""Study files: every mistake is one line naming the file and the key; valid files parse; `all` expands."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from augforge import Strategy, hookimpl
from augforge.bench.studyfile import StudyEntry, StudyRun, expand_all, load_study, plan_trials
from augforge.config import get_preset
from augforge.errors import UsageError
from augforge.plugins import get_registry

STUDIES = Path(__file__).resolve().parents[1] / "benchmarks" / "studies"

HEAD = """
[study]
data = "lidc-phantom"
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path, *, validate: bool = True) -> str:
    with pytest.raises(UsageError) as err:
        spec = load_study(path)
        if validate:
            spec.validate(get_registry())
    message = str(err.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


# Each case: the file's text, then what the message must contain (the key and the problem).
CASES = {
    "toml syntax": ('[study]\ndata = "lidc-phantom"\nseeds = = 3\n', ["not valid TOML", "line 3"]),
    "unknown top-level key": (
        HEAD + '[[strategies]]\nname = "flip"\n',
        ["top level: unknown key 'strategies'", "did you mean 'strategy'"],
    ),
    "unknown study key": (
        HEAD + 'seed = 3\n[[strategy]]\nname = "flip"\n',
        ["study: unknown key 'seed'", "did you mean 'seeds'"],
    ),
    "strategy inside the study table": (
        HEAD + 'strategy = "flip"\n',
        ["study: unknown key 'strategy'", "above the [study] table"],
    ),
    "unknown entry key": (
        HEAD + '[[strategy]]\nname = "flip"\nfractions = [0.5]\n',
        ["[[strategy]] #1 (flip): unknown key 'fractions'"],
    ),
    "no study table": ('[[strategy]]\nname = "flip"\n', ["no [study] table"]),
    "no strategies": (HEAD, ["no strategies"]),
    "missing data": ('[study]\nseeds = 2\n[[strategy]]\nname = "flip"\n', ["study.data is missing"]),
    "missing data path": (
        '[study]\ndata = "no/such/folder"\n[[strategy]]\nname = "flip"\n',
        ["study.data = 'no/such/folder': no such file or folder"],
    ),
    "unknown strategy": (
        HEAD + '[[strategy]]\nname = "flp"\n',
        ["[[strategy]] #1 (flp): unknown strategy 'flp'; did you mean 'flip'?"],
    ),
    "unknown part": (
        HEAD + '[[strategy]]\nname = "dcgan+afine"\n',
        ["[[strategy]] #1 (dcgan+afine): unknown strategy 'afine'"],
    ),
    "seeds not an integer": (
        HEAD + 'seeds = "3"\n[[strategy]]\nname = "flip"\n',
        ["study.seeds: expected an integer, got str '3'"],
    ),
    "seeds a float": (HEAD + 'seeds = 2.5\n[[strategy]]\nname = "flip"\n', ["study.seeds: expected an integer"]),
    "seeds zero": (HEAD + 'seeds = 0\n[[strategy]]\nname = "flip"\n', ["study.seeds: 0 is outside [1, 10000]"]),
    "fraction above 1": (
        HEAD + 'train_fractions = [0.5, 1.5]\n[[strategy]]\nname = "flip"\n',
        ["study.train_fractions: 1.5 is outside (0, 1]"],
    ),
    "fraction zero": (
        HEAD + '[[strategy]]\nname = "flip"\ntrain_fractions = [0, 1]\n',
        ["[[strategy]] #1 (flip).train_fractions: 0 is outside (0, 1]"],
    ),
    "fraction a boolean": (
        HEAD + '[[strategy]]\nname = "flip"\ntrain_fractions = [true]\n',
        ["(flip).train_fractions: the boolean true is not a number"],
    ),
    "fraction twice": (
        HEAD + 'train_fractions = [0.5, 0.5]\n[[strategy]]\nname = "flip"\n',
        ["study.train_fractions: 0.5 is listed twice"],
    ),
    "baseline not a boolean": (
        HEAD + 'baseline = "yes"\n[[strategy]]\nname = "flip"\n',
        ["study.baseline: expected true or false"],
    ),
    "unknown preset": (
        HEAD + 'preset = "turbo"\n[[strategy]]\nname = "flip"\n',
        ["study.preset: 'turbo' is not one of tiny, quick, fast, paper"],
    ),
    "unknown executor": (
        HEAD + 'executor = "slurm"\n[[strategy]]\nname = "flip"\n',
        ["study.executor = 'slurm': choose one of"],
    ),
    "workers negative": (
        HEAD + '[study.executor_options]\nworkers = -1\n[[strategy]]\nname = "flip"\n',
        ["study.executor_options.workers: -1 is below the minimum 0"],
    ),
    "unknown preset field": (
        HEAD + '[study.set]\n"train.epochz" = 3\n[[strategy]]\nname = "flip"\n',
        ["study.set: train.epochz: train has no field 'epochz'", "train.epochs"],
    ),
    "preset field wrong type": (
        HEAD + '[study.set]\n"train.epochs" = "many"\n[[strategy]]\nname = "flip"\n',
        ["study.set: ", "train.epochs: expected an integer"],
    ),
    "strategy parameter in set": (
        HEAD + '[study.set]\n"dcgan.epochs" = 3\n[[strategy]]\nname = "dcgan"\n',
        ["study.set.dcgan.epochs: 'dcgan' is not a preset section", "[[strategy]] entry's params"],
    ),
    "params for a part not in the hybrid": (
        HEAD + '[[strategy]]\nname = "dcgan+affine"\n[strategy.params.rotate]\nlimit_deg = 5\n',
        [
            (
                "[[strategy]] #1 (dcgan+affine).params.rotate: 'dcgan+affine' has no part 'rotate'; "
                "its parts are dcgan, affine"
            )
        ],
    ),
    "flat params for a hybrid": (
        HEAD + '[[strategy]]\nname = "dcgan+affine"\nparams = { ratio = 2.0 }\n',
        ["(dcgan+affine).params.ratio: a hybrid takes parameters per part"],
    ),
    "unknown param": (
        HEAD + '[[strategy]]\nname = "affine"\nparams = { pp = 0.5 }\n',
        ["[[strategy]] #1 (affine): strategy 'affine' has no parameter 'pp'"],
    ),
    "param wrong type": (
        HEAD + '[[strategy]]\nname = "affine"\nparams = { p = "high" }\n',
        ["[[strategy]] #1 (affine): affine.p: expected a number, got 'high'"],
    ),
    "param out of range": (
        HEAD + '[[strategy]]\nname = "dcgan+affine"\n[strategy.params.dcgan]\nratio = -1\n',
        ["(dcgan+affine): dcgan.ratio: -1.0 is outside [0, 20]"],
    ),
    "param a table": (
        HEAD + '[[strategy]]\nname = "affine"\nparams = { p = { x = 1 } }\n',
        ["[[strategy]] #1 (affine): affine.p: expected a number, got {'x': 1}"],
    ),
    "duplicate entry": (
        HEAD + '[[strategy]]\nname = "flip"\n[[strategy]]\nname = "rotate"\n'
        '[[strategy]]\nname = "flip"\nparams = { p = 1.0 }\n',
        ["[[strategy]] #3 (flip): repeats 'flip' of [[strategy]] #1 (flip)", "label"],
    ),
    "duplicate hybrid with spaces": (
        HEAD + '[[strategy]]\nname = "dcgan+affine"\n[[strategy]]\nname = "dcgan + affine"\n',
        ["#2 (dcgan+affine): repeats 'dcgan+affine'"],
    ),
    "label of another strategy": (
        HEAD + '[[strategy]]\nname = "intensity"\nlabel = "flip"\n',
        ["(intensity): label 'flip' is the name of another strategy"],
    ),
    "label none": (HEAD + '[[strategy]]\nname = "flip"\nlabel = "none"\n', ["'none' is the baseline's name"]),
    "label odd characters": (HEAD + '[[strategy]]\nname = "flip"\nlabel = "a/b"\n', ["(flip).label = 'a/b'"]),
    "all with params": (
        HEAD + '[[strategy]]\nname = "all"\nparams = { p = 1.0 }\n',
        ["(all).params: 'all' takes no parameters"],
    ),
    "all in a composite": (
        HEAD + '[[strategy]]\nname = "all+affine"\n',
        ["(all+affine).name: 'all' cannot be part of a composite"],
    ),
    "empty part": (HEAD + '[[strategy]]\nname = "dcgan+"\n', ["(dcgan+).name: empty part"]),
    "entry without a name": (HEAD + "[[strategy]]\nparams = { p = 1.0 }\n", ["[[strategy]] #1: name is missing"]),
    # A file someone sent must never be able to switch on unpickling (it runs code).
    "allow_pickle in a file": (
        HEAD + 'allow_pickle = true\n[[strategy]]\nname = "flip"\n',
        ["study.allow_pickle: a study file cannot permit unpickling", "--allow-pickle"],
    ),
    "allow_pickle false in a file": (
        HEAD + 'allow_pickle = false\n[[strategy]]\nname = "flip"\n',
        ["study.allow_pickle: a study file cannot permit unpickling"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, case):
    text, expected = CASES[case]
    message = load_error(write(tmp_path, text))
    for part in expected:
        assert part in message, f"{case}: {part!r} not in {message!r}"


def test_a_missing_or_unreadable_file(tmp_path):
    message = load_error(tmp_path / "nope.toml")
    assert message == f"{tmp_path / 'nope.toml'}: no such study file"
    assert "is a folder" in load_error(tmp_path)


def test_command_line_values_are_named_as_options(tmp_path):
    spec = load_study(write(tmp_path, HEAD + '[[strategy]]\nname = "flip"\n'))
    with pytest.raises(UsageError, match=r"^--data '/no/such': no such file or folder"):
        spec.override(data="/no/such").validate(get_registry())
    with pytest.raises(UsageError, match=r"^--set: train.epochz: train has no field"):
        spec.override(set={"train.epochz": "3"}).build_preset()
    with pytest.raises(UsageError, match=r"^--preset 'turbo': choose one of tiny, quick, fast, paper"):
        spec.override(preset="turbo").validate(get_registry())
    spec.override(data=str(tmp_path)).validate(get_registry())  # an existing path is accepted


VALID = """
# a comment
[study]
preset = "tiny"
data = "{data}"
seeds = 3
train_fractions = [1.0]
executor = "process"
baseline = true
out = "runs/example"

[study.executor_options]
workers = 2

[study.set]
"train.epochs" = 2
model.base_width = 4      # unquoted dotted keys mean the same
train.amp = false

[[strategy]]
name = "affine"
params = {{ p = 0.8, interpolation = "cubic" }}

[[strategy]]
name = "dcgan + affine"
[strategy.params.dcgan]
ratio = 2
gen_seed = "none"
[strategy.params.affine]
p = 1.0

[[strategy]]
name = "flip"
train_fractions = [0.25, 0.5, 1.0]

[[strategy]]
name = "intensity"
label = "noise (image)"
params = {{ p_noise = 1.0, p_blur = 0.0 }}

[[strategy]]
name = "rotate"
[strategy.params.rotate]   # the per-part form works for a single strategy too
limit_deg = 30
"""


def test_a_valid_file_parses_into_a_spec(tmp_path):
    path = write(tmp_path, VALID.format(data="lidc-phantom"))
    spec = load_study(path, registry=get_registry())
    assert (spec.preset, spec.data, spec.seeds, spec.train_fractions) == ("tiny", "lidc-phantom", 3, [1.0])
    assert (spec.executor, spec.workers, spec.executor_settings) == ("process", 2, {})
    assert spec.set == {"train.epochs": 2, "model.base_width": 4, "train.amp": False}
    assert (spec.baseline, spec.out, spec.allow_pickle, spec.name) == (True, "runs/example", False, "study")
    assert spec.entries == [
        StudyEntry("affine", {"affine": {"p": 0.8, "interpolation": "cubic"}}),
        StudyEntry("dcgan+affine", {"dcgan": {"ratio": 2, "gen_seed": "none"}, "affine": {"p": 1.0}}),
        StudyEntry("flip", {}, [0.25, 0.5, 1.0]),
        StudyEntry("intensity", {"intensity": {"p_noise": 1.0, "p_blur": 0.0}}, label="noise (image)"),
        StudyEntry("rotate", {"rotate": {"limit_deg": 30}}),
    ]
    preset = spec.build_preset()
    assert (preset.train.epochs, preset.model.base_width, preset.train.amp) == (2, 4, False)
    assert preset.data.source == "lidc-phantom"
    # The baseline runs at every fraction any strategy uses, so each has a partner.
    runs = spec.runs()
    assert runs[0] == StudyRun("none", {}, (1.0, 0.5, 0.25))
    assert runs[3] == StudyRun("flip", {}, (0.25, 0.5, 1.0))


def test_trials_are_planned_largest_fraction_first_with_labels(tmp_path):
    spec = load_study(write(tmp_path, VALID.format(data="lidc-phantom")), registry=get_registry())
    trials = plan_trials(spec, spec.build_preset(), seeds=[0, 1], dataset_fingerprint="f")
    # none at 3 fractions, flip at 3, four others at 1: (3 + 3 + 4) cells x 2 seeds.
    assert len(trials) == 20
    assert [t.train_fraction for t in trials] == sorted((t.train_fraction for t in trials), reverse=True)
    first = trials[:6]
    assert [(t.label or t.strategy, t.seed) for t in first] == [
        ("none", 0),
        ("affine", 0),
        ("dcgan+affine", 0),
        ("flip", 0),
        ("noise (image)", 0),
        ("rotate", 0),
    ]
    noise = next(t for t in trials if t.label == "noise (image)")
    assert noise.strategy == "intensity" and noise.config["strategy"] == "noise (image)"
    assert noise.strategy_params == {"intensity": {"p_noise": 1.0, "p_blur": 0.0}}
    assert len({t.key for t in trials}) == len(trials)


def test_no_baseline_and_an_explicit_baseline_entry(tmp_path):
    text = HEAD + 'baseline = false\n[[strategy]]\nname = "flip"\ntrain_fractions = [0.5, 1.0]\n'
    spec = load_study(write(tmp_path, text), registry=get_registry())
    assert [r.strategy for r in spec.runs()] == ["flip"]
    text = HEAD + (
        'train_fractions = [1.0]\n[[strategy]]\nname = "flip"\n[[strategy]]\nname = "none"\n'
        "train_fractions = [0.1, 1.0]\n"
    )
    spec = load_study(write(tmp_path, text), registry=get_registry())
    assert spec.runs() == [StudyRun("none", {}, (1.0, 0.1)), StudyRun("flip", {}, (1.0,))]


# -- all ----------------------------------------------------------------------------------------------


class _Extra(Strategy):
    name = "zz-third-party"
    description = "A strategy from a plugin registered in this test."


class ExtraPlugin:
    @hookimpl
    def register_strategies(self, register):
        register(_Extra)


def test_all_expands_to_every_registered_strategy_but_the_baseline(register_plugin):
    with register_plugin(ExtraPlugin(), "test-extra"):
        registry = get_registry()
        names = expand_all(["all"], registry)
        assert "zz-third-party" in names and "none" not in names
        assert names == sorted(set(registry.names()) - {"none"})
        assert {"copy-paste", "gan-affine", "dcgan"} <= set(names)
        both = expand_all(["dcgan+affine", " all", "flip"], registry)
        assert both[0] == "dcgan+affine" and both.count("flip") == 1 and "zz-third-party" in both
        assert expand_all(["flip", "dcgan + affine"], registry) == ["flip", "dcgan+affine"]
        with pytest.raises(UsageError, match="'all' cannot be part of a composite"):
            expand_all(["all+affine"], registry)


def test_all_in_a_study_file_leaves_explicit_entries_alone(tmp_path, register_plugin):
    text = HEAD + (
        '[[strategy]]\nname = "all"\ntrain_fractions = [0.5, 1.0]\n'
        '[[strategy]]\nname = "affine"\nparams = { p = 1.0 }\n'
    )
    with register_plugin(ExtraPlugin(), "test-extra"):
        registry = get_registry()
        spec = load_study(write(tmp_path, text), registry=registry)
        by_name = {e.strategy: e for e in spec.entries}
        assert set(by_name) == set(registry.names()) - {"none"}
        assert by_name["zz-third-party"].train_fractions == [0.5, 1.0]
        assert by_name["affine"].params == {"affine": {"p": 1.0}} and by_name["affine"].train_fractions is None
        spec.validate(registry)  # idempotent
        assert len(spec.entries) == len(by_name)
    # The shorthand is a top-level key, so it comes before the [study] table.
    shorthand = load_study(write(tmp_path, 'strategy = "all"\n' + HEAD, "short.toml"), registry=get_registry())
    assert "zz-third-party" not in {e.strategy for e in shorthand.entries}  # the plugin is gone again


# -- the shipped study files ---------------------------------------------------------------------------


def test_the_default_study_is_valid_and_has_its_learning_curves():
    spec = load_study(STUDIES / "default.toml", registry=get_registry())
    assert spec.preset == "fast" and spec.data == "lidc-phantom" and spec.seeds >= 3
    # one-thread trials, one per core on the 2-core machine it is sized for
    assert spec.executor == "process" and spec.workers == 2 and spec.build_preset().train.threads == 1
    runs = {r.label or r.strategy: r for r in spec.runs()}
    for family in (
        "none",
        "flip",
        "rotate",
        "affine",
        "elastic",
        "intensity",
        "classical",
        "copy-paste",
        "dcgan",
        "dcgan+affine",
    ):
        assert 1.0 in runs[family].train_fractions, family
    for curve in ("none", "classical", "dcgan"):
        assert set(runs[curve].train_fractions) == {0.1, 0.25, 1.0}, curve


@pytest.mark.parametrize(
    "name, preset, executor, changes",
    [
        ("quick.toml", "quick", "local", {}),
        ("quick-bf16.toml", "quick", "process", {"train.cpu_amp": True, "train.threads": 1}),
    ],
)
def test_the_default_studys_variants_run_its_design(name, preset, executor, changes):
    registry = get_registry()
    default = load_study(STUDIES / "default.toml", registry=registry)
    variant = load_study(STUDIES / name, registry=registry)
    assert variant.preset == preset and variant.data == default.data and variant.seeds == default.seeds
    assert variant.executor == executor and variant.set == changes

    def design(spec):
        return [(r.label or r.strategy, tuple(r.train_fractions)) for r in spec.runs()]

    assert design(variant) == design(default)


def test_the_paper_study_is_valid_once_given_the_data(tmp_path):
    spec = load_study(STUDIES / "paper.toml")
    assert spec.preset == "paper" and not spec.allow_pickle  # unpickling stays an explicit command-line flag
    with pytest.raises(UsageError, match="study.data = .*no such file or folder"):
        spec.validate(get_registry())
    spec = spec.override(data=str(tmp_path)).validate(get_registry())
    labels = [r.label or r.strategy for r in spec.runs()]
    assert labels == [
        "none",
        "flip",
        "rotate",
        "rotate the tumour",
        "noise (image)",
        "Gaussian blur",
        "dcgan-paper",
        "dcgan-paper+affine",
        "vqvae",
        "vqvae+dcgan-paper+affine",
    ]
    assert get_preset("paper").name == spec.build_preset().name


def test_the_examples_in_the_docs_are_valid(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "docs" / "studies.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 3
    for k, block in enumerate(blocks):
        if "[study]" not in block:  # a fragment: the strategies of a study
            block = HEAD + block
        load_study(write(tmp_path, block, f"example{k}.toml"), registry=get_registry())


def test_the_lidc_study_is_valid_on_an_export(lidc_export):
    root = lidc_export()
    spec = load_study(STUDIES / "lidc.toml").override(data=str(root)).validate(get_registry())
    runs = {r.label or r.strategy: r for r in spec.runs()}
    assert spec.preset == "quick" and spec.seeds >= 3
    assert set(runs["none"].train_fractions) == set(runs["classical"].train_fractions) == {0.1, 0.25, 1.0}
    registry = get_registry()
    assert not any(registry.create(name, {}).needs_hu for name in runs)  # nothing the export refuses
    default = {r.label or r.strategy for r in load_study(STUDIES / "default.toml").validate(registry).runs()}
    assert set(runs) == default  # the default study's strategies, on real CT
