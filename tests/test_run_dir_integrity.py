"""A run directory's integrity: torn last lines, one process at a time, one scenario per directory,
and corrupt files reported as bad input (exit 2, file and line named, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from harness import store
from harness.analyze import compare
from harness.contract import Status
from harness.errors import UserError
from harness.measure import node, record, sweep
from harness.measure import run_dir as run_directory
from harness.plan.scenario import Scenario, load_scenario
from harness.report import build

GOLDEN = Path(__file__).parent / "golden" / "recommend" / "feasible.jsonl"
SCENARIO = """\
name: integrity
matrix: {model: [tiny, base, small], quantization: [int8, float32], threads: [1, 2]}
budgets: {peak_rss_mb: 700, rtf: 0.5, latency_p95_s: 3.0, wer: {en: 0.10, pt: 0.25}}
"""
# Text a Whisper hypothesis may hold: multi-byte UTF-8 (a tear can split a character), and U+2028 and
# U+0085, which json.dumps(ensure_ascii=False) writes raw and str.splitlines() would take for line ends.
TEXT = "São Paulo, naïve café \u2028 next \x85 end"


def scenario_in(folder: Path, text: str = SCENARIO, name: str = "scenario.yaml") -> Scenario:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return load_scenario(folder / name)


def skipped_rows(scenario: Scenario) -> list[dict]:
    """One cheap row per configuration (what a resume reads back; no model runs)."""
    provenance = record.Provenance({"started_at": "2026-01-01T00:00:00+00:00"}, {"executor": "test"})
    return [record.not_run_row(sweep.make_job(spec, [], {}), Status.SKIPPED, f"{i}: {TEXT}", provenance)
            for i, spec in enumerate(scenario.expand())]


def golden_run(run_dir: Path, with_scenario: bool = True) -> Path:
    """A run directory of SCENARIO holding the golden feasible rows (relabelled with SCENARIO's run ids)."""
    ids = {}
    if with_scenario:
        ids = {(s.model, s.quantization, s.threads): s.run_id for s in scenario_in(run_dir).expand()}
    run_dir.mkdir(parents=True, exist_ok=True)
    for row in store.read_rows(GOLDEN):
        c = row["config"]
        row.update(scenario="integrity", run_id=ids.get((c["model"], c["quantization"], c["threads"]), row["run_id"]))
        store.append_row(run_dir / "results.jsonl", row)
    (run_dir / "environment.json").write_text(json.dumps(row["environment"]))
    return run_dir


def lines_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


def manifest(tmp_path: Path) -> Path:
    """A one-clip manifest (half a second of silence): `harness run` loads samples before it resumes."""
    folder = tmp_path / "data"
    folder.mkdir()
    with wave.open(str(folder / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 8000)
    (folder / "manifest.jsonl").write_text(json.dumps({"id": "s1", "lang": "en", "audio": "silence.wav", "text": "x"}) + "\n")
    return folder / "manifest.jsonl"


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, env={"HARNESS_CACHE_DIR": str(tmp_path / "cache")})  # not the user's machine lock
    assert "Traceback" not in result.stderr, result.stderr
    result.stderr = " ".join(result.stderr.split())  # rich wraps long lines
    return result


# ---------------------------------------------------------------------------------------------
# 1. A torn last line is moved aside before the next row is appended


def test_a_tear_at_every_byte_of_the_last_row_loses_no_row(tmp_path: Path) -> None:
    scenario = scenario_in(tmp_path / "src")
    rows = skipped_rows(scenario)[:4]
    whole = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    last_start = len(whole) - len(json.dumps(rows[-1], ensure_ascii=False).encode()) - 1
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "scenario.yaml").write_text(SCENARIO)
    remeasured = {**rows[-1], "reason": f"measured again: {TEXT}"}
    for cut in range(last_start + 1, len(whole) - 1):  # inside the last row, up to its closing brace
        for side in run_dir.glob("results.jsonl.torn-*"):
            side.unlink()
        (run_dir / "results.jsonl").write_bytes(whole[:cut])
        with pytest.warns(UserWarning, match=r"results.jsonl:4: the last line was torn.*kept the 3 whole line\(s\)"):
            with run_directory.prepare_run_dir(run_dir, scenario, resume=True) as done:
                assert [r["run_id"] for r in done] == [r["run_id"] for r in rows[:3]], cut
                store.append_row(run_dir / "results.jsonl", remeasured)
        [side] = run_dir.glob("results.jsonl.torn-*")
        assert side.read_bytes() == whole[last_start:cut], cut
        assert store.read_rows(run_dir) == [*rows[:3], remeasured], cut
        assert len(lines_of(run_dir / "results.jsonl")) == 4, cut


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path: Path) -> None:
    scenario = scenario_in(tmp_path / "run")
    rows = skipped_rows(scenario)
    path = tmp_path / "run" / "results.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows[:2]).rstrip(b"\n"))
    with run_directory.prepare_run_dir(tmp_path / "run", scenario, resume=True) as done:
        assert len(done) == 2
        store.append_row(path, rows[2])
    assert store.read_rows(path) == rows[:3] and not list(path.parent.glob("*.torn-*"))


def test_an_earlier_fragment_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    for fragment in (b'{"schema_version": 1, "run', b'{"schema_version": 1, "status": "o'):
        path.write_bytes(b'{"a": 1}\n' + fragment)
        with pytest.warns(UserWarning, match="torn"):
            store.repair_tail(path)
    assert sorted(p.read_bytes() for p in tmp_path.glob("results.jsonl.torn-*")) == [
        b'{"schema_version": 1, "run', b'{"schema_version": 1, "status": "o']
    assert path.read_bytes() == b'{"a": 1}\n'


def test_harness_profile_repairs_the_tail_before_appending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    scenario = scenario_in(tmp_path / "run")
    rows = skipped_rows(scenario)
    path = tmp_path / "run" / "results.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:50])
    profiled = {**rows[0], "run_id": rows[0]["run_id"] + "-memray", "profiler": "memray", "profile_of": rows[0]["run_id"]}
    monkeypatch.setattr(node, "run_job", lambda job, work_dir, on_row, where: on_row(profiled))
    with pytest.warns(UserWarning, match="the last line was torn"):
        sweep.profile_configuration(scenario, scenario.expand()[0], [], tmp_path / "run", "memray")
    assert store.read_rows(path) == [rows[0], profiled]


# ---------------------------------------------------------------------------------------------
# 2. One process at a time in a run directory


def test_a_second_process_is_refused_while_the_first_holds_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = scenario_in(tmp_path, name="s.yaml")
    scenario_in(run_dir)
    for row in skipped_rows(scenario):  # every configuration done: the resume measures nothing
        store.append_row(run_dir / "results.jsonl", row)
    before = (run_dir / "results.jsonl").read_bytes()
    args = ("run", str(tmp_path / "s.yaml"), "--resume", str(run_dir), "--dataset", str(manifest(tmp_path)))
    with run_directory.run_dir_lock(run_dir, "the test holding the lock"):
        refused = cli(*args, tmp_path=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"{run_dir}: in use by pid {os.getpid()} on " in refused.stderr
    assert "the test holding the lock" in refused.stderr
    done = cli(*args, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "results.jsonl").read_bytes() == before  # nothing measured twice


RACER = """
import json, sys, time
from pathlib import Path
from harness.contract import Status
from harness.measure import node, record, sweep
from harness.errors import UserError
from harness.plan.scenario import load_scenario

run_dir, scenario = Path(sys.argv[1]), load_scenario(sys.argv[2])
def fake_run_job(job, work_dir, on_row, where):  # the sweep and its locks are real; measuring is not
    time.sleep(0.3)
    on_row(record.not_run_row(job, Status.SKIPPED, f"measured by {sys.argv[3]}", record.Provenance({}, where)))
node.run_job = fake_run_job
print("ready", flush=True)
while not (run_dir.parent / "go").exists():
    time.sleep(0.005)
try:
    rows = sweep.run_scenario(scenario, [], run_dir, resume=True)
    print(json.dumps({"ok": len(rows)}))
except UserError as exc:
    print(json.dumps({"refused": str(exc)}))
"""


def test_two_resumes_started_together_measure_each_configuration_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenario = scenario_in(run_dir)
    first = skipped_rows(scenario)[0]
    store.append_row(run_dir / "results.jsonl", first)
    (tmp_path / "racer.py").write_text(RACER)
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    racers = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), str(run_dir), str(run_dir / "scenario.yaml"), name],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for name in ("A", "B")]
    for racer in racers:
        assert racer.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0 and "Traceback" not in err, err
        outcomes.append((racer.pid, json.loads(out)))
    [(winner, ok)] = [(pid, o) for pid, o in outcomes if "ok" in o]
    [refused] = [o["refused"] for _, o in outcomes if "refused" in o]
    assert ok == {"ok": len(scenario.expand())}
    assert f"in use by pid {winner} on " in refused and "harness run: measuring" in refused
    ids = [json.loads(line)["run_id"] for line in lines_of(run_dir / "results.jsonl")]
    assert sorted(ids) == sorted(s.run_id for s in scenario.expand())  # each configuration once
    assert not list(run_dir.glob(".write-test*"))


# ---------------------------------------------------------------------------------------------
# 3. One scenario per run directory


def test_resume_with_another_scenario_is_refused_with_the_difference(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    started = scenario_in(run_dir)
    store.append_row(run_dir / "results.jsonl", skipped_rows(started)[0])
    renamed = scenario_in(tmp_path, SCENARIO.replace("name: integrity", "name: other"), "renamed.yaml")
    with pytest.raises(UserError, match=r"not the scenario the run directory was started with \(name 'integrity' in "
                                        rf"{run_dir}/scenario.yaml, 'other' in {tmp_path}/renamed.yaml\)"):
        with run_directory.prepare_run_dir(run_dir, renamed, resume=True):
            pass
    grown = scenario_in(tmp_path, SCENARIO.replace("small]", "small, tiny.en]"), "grown.yaml")
    extra = ", ".join(s.run_id for s in grown.expand() if s.model == "tiny.en")
    with pytest.raises(UserError, match=f"run ids only in {tmp_path}/grown.yaml: {extra}"):
        with run_directory.prepare_run_dir(run_dir, grown, resume=True):
            pass
    capped = scenario_in(tmp_path, SCENARIO + "memory_cap_mb: 512\n", "capped.yaml")
    with pytest.raises(UserError, match=r"memory_cap_mb None in .*, 512.0 in "):
        with run_directory.prepare_run_dir(run_dir, capped, resume=True):
            pass
    reformatted = scenario_in(tmp_path, "# the same scenario, reformatted\n" + SCENARIO.replace(
        "{model: [tiny, base, small], quantization: [int8, float32], threads: [1, 2]}",
        "\n  model: [tiny, base, small]   # three sizes\n  quantization: [int8, float32]\n  threads: [1, 2]\n"), "same.yaml")
    with run_directory.prepare_run_dir(run_dir, reformatted, resume=True) as rows:
        assert len(rows) == 1


def test_resume_with_another_scenario_through_the_cli(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    store.append_row(run_dir / "results.jsonl", skipped_rows(scenario_in(run_dir))[0])
    scenario_in(tmp_path, SCENARIO.replace("name: integrity", "name: other"), "other.yaml")
    result = cli("run", str(tmp_path / "other.yaml"), "--resume", str(run_dir), "--dataset", str(manifest(tmp_path)),
                 tmp_path=tmp_path)
    assert result.returncode == 2
    assert f"{run_dir}: cannot resume with {tmp_path}/other.yaml" in result.stderr and "name 'integrity'" in result.stderr
    assert len(lines_of(run_dir / "results.jsonl")) == 1


def test_rows_of_another_scenario_are_left_out_of_report_compare_and_resume(tmp_path: Path) -> None:
    run_dir = golden_run(tmp_path / "run")
    scenario = load_scenario(run_dir / "scenario.yaml")
    rows = store.read_rows(run_dir)
    recommended = build.build(run_dir)["recommendation"]["recommended"]["run_id"]
    unmeasured = next(s.run_id for s in scenario.expand() if s.run_id not in {r["run_id"] for r in rows})
    chosen = next(r for r in rows if r["run_id"] == recommended)
    chosen["metrics"]["peak_rss_mb"] = 100.0  # would win, were it counted
    store.append_row(run_dir / "results.jsonl", {**chosen, "run_id": unmeasured, "scenario": "other"})
    store.append_row(run_dir / "results.jsonl", {**chosen, "run_id": "made-up-config"})
    foreign = [f"{run_dir}/results.jsonl:5: left out {unmeasured}: a row of scenario 'other', not of this run's 'integrity'",
               f"{run_dir}/results.jsonl:6: left out made-up-config: not a configuration of {run_dir}/scenario.yaml"]
    with pytest.warns(UserWarning) as caught:
        data = build.build(run_dir)
    assert [str(w.message) for w in caught] == foreign
    assert data["recommendation"]["recommended"]["run_id"] == recommended
    assert {r["run_id"] for r in data["table"]} == {r["run_id"] for r in rows}
    with pytest.warns(UserWarning) as caught:
        compared, _ = compare.load_side(run_dir)
    assert [str(w.message) for w in caught] == foreign
    assert [r["run_id"] for r in compared] == [r["run_id"] for r in rows]
    with pytest.warns(UserWarning, match="left out"):
        with run_directory.prepare_run_dir(run_dir, scenario, resume=True) as done:
            assert unmeasured not in {r["run_id"] for r in done}  # measured again, for this scenario


# ---------------------------------------------------------------------------------------------
# 4. Corrupt files: exit 2 naming the file and line, never a traceback


def _edit_row(line: int, change):
    def corrupt(run_dir: Path) -> None:
        path = run_dir / "results.jsonl"
        lines = path.read_text().splitlines()
        row = json.loads(lines[line - 1])
        lines[line - 1] = json.dumps(change(row))
        path.write_text("\n".join(lines) + "\n")
    return corrupt


def _without(key: str):
    return lambda row: {k: v for k, v in row.items() if k != key}


def _replace_line(line: int, data: bytes):
    def corrupt(run_dir: Path) -> None:
        lines = (run_dir / "results.jsonl").read_bytes().split(b"\n")
        lines[line - 1] = data
        (run_dir / "results.jsonl").write_bytes(b"\n".join(lines))
    return corrupt


def _write(name: str, data: bytes):
    return lambda run_dir: (run_dir / name).write_bytes(data)


CORRUPT = {  # case: (how to corrupt the run directory, what the message must say)
    "row without run_id": (_edit_row(2, _without("run_id")), "results.jsonl:2: field 'run_id' is missing"),
    "row without status": (_edit_row(1, _without("status")), "results.jsonl:1: field 'status' is missing"),
    "row without config": (_edit_row(3, _without("config")), "results.jsonl:3: field 'config' is missing"),
    "row without metrics": (_edit_row(2, _without("metrics")), "results.jsonl:2: field 'metrics' is missing"),
    "config not an object": (_edit_row(2, lambda r: {**r, "config": "base int8"}),
                             "results.jsonl:2: field 'config': invalid value \"base int8\"; expected an object"),
    "threads a string": (_edit_row(2, lambda r: {**r, "config": {**r["config"], "threads": "two"}}),
                         "results.jsonl:2: field 'config.threads': invalid value \"two\"; expected an integer"),
    "peak RSS a string": (_edit_row(2, lambda r: {**r, "metrics": {**r["metrics"], "peak_rss_mb": "350 MiB"}}),
                          "results.jsonl:2: field 'metrics.peak_rss_mb': invalid value \"350 MiB\""),
    "unknown status": (_edit_row(1, lambda r: {**r, "status": "fine"}), "results.jsonl:1: field 'status': invalid value \"fine\""),
    "row a JSON array": (_replace_line(2, b'["base-int8", "ok"]'), "results.jsonl:2: expected a JSON object (one result row), got list"),
    "row not UTF-8": (_replace_line(2, b'{"run_id": "caf\xe9"}'), "results.jsonl:2: not UTF-8 text"),
    "row not JSON": (_replace_line(2, b'{"run_id": '), "results.jsonl:2:12: not valid JSON: Expecting value"),
    "environment.json truncated": (_write("environment.json", b'{"cpu": "Intel", "logical'),
                                   "environment.json:1:18: not valid JSON: Unterminated string starting at"),
    "environment.json a list": (_write("environment.json", b"[1, 2]"), "environment.json: expected a JSON object, got list"),
    "environment.json not UTF-8": (_write("environment.json", b'{"cpu": "\xff"}'), "environment.json:1: not UTF-8 text"),
    "environment.json packages": (_write("environment.json", b'{"packages": ["numpy"]}'),
                                  "environment.json: field 'packages': invalid value [\"numpy\"]; expected an object"),
    "scenario.yaml invalid": (_write("scenario.yaml", b"name: integrity\nmatrix: {model: [huge]}\n"),
                              "scenario.yaml: field 'matrix.model[0]': invalid value 'huge'"),
    "scenario.yaml not UTF-8": (_write("scenario.yaml", b"name: caf\xe9\n"), "scenario.yaml: cannot read scenario"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_files_are_bad_input_for_report_compare_and_baseline_save(tmp_path: Path, case: str) -> None:
    corrupt, message = CORRUPT[case]
    run_dir = golden_run(tmp_path / "run")
    good = golden_run(tmp_path / "good", with_scenario=False)
    corrupt(run_dir)
    for args in (("report", str(run_dir)), ("compare", str(good), str(run_dir)),
                 ("baseline", "save", str(run_dir), "--name", "nightly", "--root", str(tmp_path / "baselines"))):
        result = cli(*args, tmp_path=tmp_path)
        assert result.returncode == 2 and f"{run_dir}/{message}" in result.stderr, (args, result.stderr)
    assert not (tmp_path / "baselines").exists()


@pytest.mark.parametrize("case", [c for c in CORRUPT if not c.startswith("environment.json")])
def test_corrupt_files_are_refused_on_resume(tmp_path: Path, case: str) -> None:
    corrupt, message = CORRUPT[case]
    run_dir = golden_run(tmp_path / "run")
    corrupt(run_dir)
    before = (run_dir / "results.jsonl").read_bytes()
    with pytest.raises(UserError) as refused:
        with run_directory.prepare_run_dir(run_dir, scenario_in(tmp_path), resume=True):
            pass
    assert f"{run_dir}/{message}" in str(refused.value)
    assert (run_dir / "results.jsonl").read_bytes() == before


def test_corrupt_results_through_run_resume(tmp_path: Path) -> None:
    run_dir = golden_run(tmp_path / "run")
    scenario_in(tmp_path, SCENARIO, "s.yaml")
    _edit_row(2, _without("run_id"))(run_dir)
    result = cli("run", str(tmp_path / "s.yaml"), "--resume", str(run_dir), "--dataset", str(manifest(tmp_path)),
                 tmp_path=tmp_path)
    assert result.returncode == 2 and f"{run_dir}/results.jsonl:2: field 'run_id' is missing" in result.stderr


def test_the_trend_index_skips_a_bad_run_directory_and_names_it(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    golden_run(reports / "integrity-good")
    for name, (corrupt, _) in (("bad-row", CORRUPT["row without config"]), ("bad-scenario", CORRUPT["scenario.yaml invalid"])):
        corrupt(golden_run(reports / name))
    golden_run(reports / "bad-recommendation")
    (reports / "bad-recommendation" / "recommendation.json").write_text('{"recommended": {"run_id": "faster-wh')
    golden_run(reports / "odd-recommendation")
    (reports / "odd-recommendation" / "recommendation.json").write_text('{"recommended": "base", "answer": "x"}')
    result = cli("report", "--index", str(reports), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for name, problem in (("bad-row", "results.jsonl:3: field 'config' is missing"),
                          ("bad-scenario", "scenario.yaml: field 'matrix.model[0]'"),
                          ("bad-recommendation", "recommendation.json:1:28: not valid JSON: Unterminated string starting at"),
                          ("odd-recommendation", "recommendation.json: field 'recommended': invalid value \"base\"")):
        assert f"warning: {reports}/{name}: left out of the index: {reports}/{name}/{problem}" in result.stderr, name
    html = (reports / "index.html").read_text()
    assert "integrity-good" in html and "bad-row" not in html and "odd-recommendation" not in html
