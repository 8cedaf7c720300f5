"""The performance suite's runner on fake benchmark scripts: medians, same-run ratios, goals,
failures and timeouts, results.json schema, and the markdown table between its markers.
No real benchmark runs here."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from augforge.errors import DataError, UsageError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
sys.modules["run_all"] = run_all  # dataclasses resolve their module's annotations through sys.modules
_spec.loader.exec_module(run_all)

MACHINE = {"cpu": "Test CPU", "cores": 2, "physical_cores": 2, "ram_gib": 24.0, "gpu": None, "os": "Linux"}
VERSIONS = {"augforge": "0.1.0", "torch": "2.13.0", "numpy": "2.0", "albumentations": "2.0.8", "python": "3.11"}
SCHEMA = {"name", "value", "unit", "reference", "ratio", "goal", "met", "machine", "versions"}

# Three runs of (value, reference): the per-run ratios are 0.5, 1.0, 0.2, so the median ratio (0.5)
# differs from the ratio of the medians (20 / 30): the runner must take the former.
FAKE = """
import json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
value, ref = [(10.0, 20.0), (30.0, 30.0), (20.0, 100.0)][n % 3]
print("some log line")
print(json.dumps({"speed": value, "peer": {"speed": ref}, "ratio": value / ref,
                  "versions": {"fakelib": "1.2"}}, indent=2))
"""


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)  # absolute: BENCH_DIR / absolute path is the path itself


def _fake_bench(tmp_path: Path, **kw) -> object:
    metric = run_all.Metric(
        "fake_speed",
        "a fake speed",
        "ms",
        lambda j: j["speed"],
        reference=lambda j: j["peer"]["speed"],
        ratio=lambda j: j["ratio"],
        ratio_is="value / reference",
        goal=run_all.Goal("ratio", ">=", 0.4),
    )
    plain = run_all.Metric("fake_plain", "no reference, no goal", "s", lambda j: j["speed"])
    args = (str(tmp_path / "counter"),)
    return run_all.Benchmark(
        "fake", _script(tmp_path, "fake.py", FAKE), (metric, plain), args=args, quick_args=args, **kw
    )


def _suite(benches, **kw):
    return run_all.run_suite(benches, progress=False, machine=MACHINE, versions=VERSIONS, warm_cache=False, **kw)


def test_entries_are_medians_with_same_run_ratios_and_goals(tmp_path):
    entries = _suite([_fake_bench(tmp_path, repeats=3)], log_dir=tmp_path / "logs")
    speed, plain = entries
    assert SCHEMA <= set(speed)
    assert (speed["name"], speed["value"], speed["reference"], speed["unit"]) == ("fake_speed", 20.0, 30.0, "ms")
    assert speed["ratio"] == 0.5  # median of 0.5, 1.0, 0.2; not 20 / 30
    assert speed["goal"] == {"on": "ratio", "op": ">=", "bound": 0.4, "text": "ratio >= 0.4"}
    assert speed["met"] is True
    assert speed["per_run"] == [10.0, 30.0, 20.0] and speed["runs"] == speed["runs_planned"] == 3
    assert speed["machine"] == MACHINE
    assert speed["versions"] == {**VERSIONS, "fakelib": "1.2"}  # what the script reports is kept
    assert speed["error"] is None and speed["mode"] == "full"
    assert (plain["reference"], plain["ratio"], plain["goal"], plain["met"]) == (None, None, None, None)
    assert (tmp_path / "logs" / "fake-2.out").read_text().startswith("some log line")

    out = tmp_path / "results.json"
    run_all.write_results(out, entries)
    assert run_all.read_results(out) == json.loads(out.read_text()) == entries


def test_goal_not_met_and_value_goals():
    assert run_all.Goal("value", "<=", 60).met(61.0, None) is False
    assert run_all.Goal("value", "<", 0.05).met(0.01, None) is True
    assert run_all.Goal("ratio", ">=", 100).met(1.0, None) is None  # not measured is not "met"
    with pytest.raises(ValueError):
        run_all.Goal("speed", ">=", 1)


def test_a_failing_script_is_recorded_and_the_suite_goes_on(tmp_path):
    broken = run_all.Benchmark(
        "broken",
        _script(
            tmp_path,
            "broken.py",
            """
        import sys
        print("half a result")
        sys.exit("cannot read the dataset")
    """,
        ),
        (run_all.Metric("broken_speed", "", "s", lambda j: j["speed"], goal=run_all.Goal("value", "<=", 1)),),
        repeats=3,
    )
    silent = run_all.Benchmark(
        "silent",
        _script(tmp_path, "silent.py", "print('no json here')"),
        (run_all.Metric("silent_speed", "", "s", lambda j: j["speed"]),),
    )
    entries = _suite([broken, silent, _fake_bench(tmp_path)])
    by_name = {e["name"]: e for e in entries}
    assert by_name["broken_speed"]["value"] is None and by_name["broken_speed"]["met"] is None
    assert "exit status 1" in by_name["broken_speed"]["error"]
    assert "cannot read the dataset" in by_name["broken_speed"]["error"]
    assert by_name["broken_speed"]["runs"] == 0  # a failed script is not repeated
    assert "no JSON object" in by_name["silent_speed"]["error"]
    assert by_name["fake_speed"]["value"] == 10.0 and by_name["fake_speed"]["error"] is None


def test_a_hanging_script_is_killed_at_its_timeout(tmp_path):
    hang = run_all.Benchmark(
        "hang",
        _script(tmp_path, "hang.py", "import time\ntime.sleep(60)"),
        (run_all.Metric("hang_speed", "", "s", lambda j: j["speed"]),),
        timeout_s=1,
    )
    t0 = time.perf_counter()
    (entry,) = _suite([hang])
    assert time.perf_counter() - t0 < 20
    assert entry["error"].startswith("timed out after 1 s")


def test_an_unavailable_peer_is_a_note_not_an_error(tmp_path):
    peer = run_all.Benchmark(
        "peer",
        _script(
            tmp_path,
            "peer.py",
            """
        import json
        print(json.dumps({"available": False, "reason": "MONAI does not import: ImportError: x"}))
    """,
        ),
        (run_all.Metric("peer_speed", "", "ms", lambda j: j["speed"]),),
    )
    (entry,) = _suite([peer])
    assert entry["value"] is None and entry["error"] is None
    assert "MONAI does not import" in entry["note"]


def test_repeats_stop_at_the_budget(tmp_path):
    (speed, _) = _suite([_fake_bench(tmp_path, repeats=3)], budget_s=0.0)
    assert (speed["runs"], speed["runs_planned"]) == (1, 3)


def test_markdown_table_replaces_only_the_block_between_markers(tmp_path):
    entries = _suite([_fake_bench(tmp_path, repeats=3)])
    entries.append(
        {
            **entries[1],
            "name": "fake_missing",
            "value": None,
            "met": None,
            "goal": {"on": "value", "op": "<=", "bound": 1, "text": "value <= 1 s"},
            "error": "timed out after 900 s: x",
        }
    )
    doc = tmp_path / "performance.md"
    doc.write_text(
        f"# Performance\n\nHand-written intro.\n\n{run_all.BEGIN_MARK}\nold table\n"
        f"{run_all.END_MARK}\n\nHand-written analysis.\n"
    )
    run_all.update_markdown(doc, run_all.render_table(entries))
    text = doc.read_text()
    assert text.startswith("# Performance\n\nHand-written intro.\n")
    assert text.endswith(f"{run_all.END_MARK}\n\nHand-written analysis.\n")
    assert "old table" not in text
    assert "| `fake_speed` | a fake speed | 20.0 ms | 30.0 ms | 0.500 | ratio >= 0.4 | yes | 3/3 |" in text
    assert "not measured: timed out after 900 s" in text
    assert "Goals met: 1 of 2. Not measured: `fake_missing`." in text
    assert "- `fake_speed`: value / reference" in text
    assert "Test CPU, 2 logical / 2 physical cores, 24.0 GiB RAM, GPU none" in text

    # Rendering again is stable: the block is replaced, not appended.
    run_all.update_markdown(doc, run_all.render_table(entries))
    assert doc.read_text() == text


def test_markdown_without_markers_is_refused(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    with pytest.raises(DataError, match="perf-table:begin"):
        run_all.update_markdown(doc, "table")


def test_only_merges_into_previous_results(tmp_path):
    old = [{"name": "a1", "benchmark": "a"}, {"name": "b1", "benchmark": "b"}, {"name": "c1", "benchmark": "c"}]
    new = [
        {"name": "b1", "benchmark": "b", "value": 2},
        {"name": "b2", "benchmark": "b"},
        {"name": "d1", "benchmark": "d"},
    ]
    merged = run_all.merge_entries(old, new)
    assert [e["name"] for e in merged] == ["a1", "b1", "b2", "c1", "d1"]
    assert merged[1]["value"] == 2


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert run_all.main(["--only", "nosuch"]) == UsageError.exit_code
    assert "--only nosuch: no such benchmark" in capsys.readouterr().err
    missing = tmp_path / "results.json"
    assert run_all.main(["--render", "--out", str(missing), "--docs", str(tmp_path / "p.md")]) == 1
    assert f"{missing}: not found" in capsys.readouterr().err


def test_the_suite_declares_every_goal_of_the_issue():
    goals = {m.name: m.goal for b in run_all.BENCHMARKS if b.default for m in b.metrics if m.goal}
    assert goals["unet_train_flops"] == run_all.Goal("ratio", ">=", 0.5)
    assert goals["data_wait_share"] == run_all.Goal("value", "<", 5)  # percent
    assert goals["placement_speedup"] == run_all.Goal("ratio", ">=", 100)
    assert goals["dataset_cold_build"] == run_all.Goal("value", "<=", 60)
    assert goals["dataset_reload"] == run_all.Goal("value", "<=", 3)
    assert goals["main_job_wall_time"] == run_all.Goal("value", "<=", 600)
    assert goals["main_job_peak_memory"] == run_all.Goal("value", "<=", 4)
    assert all(
        goals[f"transform_overhead.{s}"] == run_all.Goal("ratio", "<=", 1.10) for s in run_all.TRANSFORM_STRATEGIES
    )
    # The diffusion generator's budget on 2 cores (the generator-family issue).
    assert goals["ddpm_fit"] == run_all.Goal("value", "<=", 600)
    assert goals["ddpm_sampling_throughput"] == run_all.Goal("value", ">=", 50)
    # Real CT, where the export is at hand (not part of the default suite): a quick trial in 3 minutes.
    lidc = next(b for b in run_all.BENCHMARKS if b.key == "lidc_trial")
    assert not lidc.default and "--data" in lidc.args
    assert {m.name: m.goal for m in lidc.metrics}["lidc_quick_trial"] == run_all.Goal("value", "<=", 180)
    # The default study in 30 minutes on 2 cores (the study-throughput issue), measured by running it.
    study = next(b for b in run_all.BENCHMARKS if b.key == "study_throughput")
    assert {m.name: m.goal for m in study.metrics}["default_study_wall_time"] == run_all.Goal("value", "<=", 30)
    for b in run_all.BENCHMARKS:  # every script the suite names exists
        assert (run_all.BENCH_DIR / b.script).is_file(), b.script


def test_a_quick_run_is_marked_as_a_smoke_test(tmp_path):
    entries = _suite([_fake_bench(tmp_path)], quick=True)
    assert {e["mode"] for e in entries} == {"quick"}
    assert run_all.render_table(entries).startswith("**Smoke test (`--quick`)")
    assert "Smoke test" not in run_all.render_table(_suite([_fake_bench(tmp_path)]))


def test_a_gpu_run_is_recorded_with_its_own_machine(tmp_path):
    # The committed outputs of the one GPU run: the entries name that machine, not the one importing.
    gpu = ROOT / "benchmarks" / "gpu"
    entries = run_all.import_gpu([gpu / "nvidia-h200.json", gpu / "nvidia-h200-fit-repeat.json"])
    by_name = {e["name"]: e for e in entries}
    assert {e["benchmark"] for e in entries} == {"gpu"} and not any(e["error"] for e in entries)
    step = by_name["gpu_paper_step"]
    raw = json.loads((gpu / "nvidia-h200.json").read_text())
    assert (
        step["value"] == raw["unet_paper"]["step_ms_amp_on"]
        and step["reference"] == raw["unet_paper"]["step_ms_amp_off"]
    )
    assert step["machine"]["gpu"].startswith(raw["device"]) and step["machine"]["cores"] == raw["machine"]["cores"]
    assert step["measured_at"] == raw["measured_at"] and step["versions"]["torch"] == raw["torch"]
    # The second file adds its part: the repeatability check.
    fit = by_name["gpu_fit_repeat_max_diff"]
    assert fit["value"] == 0.0 and fit["reference"] > 0
    # Recorded through the command line: merged into the results file, the table rendered.
    out, docs = tmp_path / "results.json", tmp_path / "performance.md"
    docs.write_text(f"# x\n\n{run_all.BEGIN_MARK}\n{run_all.END_MARK}\n")
    args = ["--import-gpu", str(gpu / "nvidia-h200.json"), "--out", str(out), "--docs", str(docs)]
    assert run_all.main(args) == 0
    assert "NVIDIA H200" in docs.read_text() and json.loads(out.read_text())[0]["benchmark"] == "gpu"


def test_a_cpu_or_smoke_output_is_not_recorded_as_a_gpu_run(tmp_path):
    smoke = tmp_path / "smoke.json"
    smoke.write_text(json.dumps({"device": "cpu (x)", "cuda": None, "smoke": True, "machine": {}}))
    with pytest.raises(DataError, match="not the output of a full gpu_check.py run on a CUDA machine"):
        run_all.import_gpu([smoke])
    with pytest.raises(DataError, match="not found"):
        run_all.import_gpu([tmp_path / "missing.json"])
