"""`harness compare` on golden result sets, through the real CLI: verdicts and exit statuses."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
from conftest import run_cli

from harness import store
from harness.analyze import baselines, compare
from harness.errors import UserError

BASELINE = Path(__file__).parent / "golden" / "compare" / "baseline.jsonl"


def variant(tmp_path: Path, change=None, name: str = "current.jsonl") -> Path:
    rows = store.read_rows(BASELINE)
    if change:
        for row in rows:
            change(row)
    path = tmp_path / name
    for row in rows:
        store.append_row(path, row)
    return path


def run_compare(tmp_path: Path, current: Path, *extra: str) -> tuple[int, dict]:
    result = run_cli("compare", str(BASELINE), str(current), "--out", str(tmp_path / "out"), *extra)
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "out" / "compare.json").read_text()) if result.returncode in (0, 1) else {}
    return result.returncode, report


def verdicts(report: dict, run_id: str = "base-int8") -> dict[str, str]:
    entry = next(e for e in report["configs"] if e["run_id"] == run_id)
    return {metric: m["verdict"] for metric, m in entry["metrics"].items()}


def test_identical_runs_exit_0(tmp_path: Path) -> None:
    code, report = run_compare(tmp_path, variant(tmp_path))
    assert code == 0 and not report["regression"]
    judged = verdicts(report)
    assert {judged.pop("wer.en"), judged.pop("wer.pt")} == {"insufficient evidence"}  # 2 words per language
    assert judged.pop("status") == "unchanged" and set(judged.values()) == {"within noise"}
    assert (tmp_path / "out" / "compare.md").read_text().startswith("## Comparison: no regression")


def test_a_30_percent_peak_rss_increase_exits_1(tmp_path: Path) -> None:
    def grow(row):
        row["metrics"]["peak_rss_mb"] *= 1.30
    code, report = run_compare(tmp_path, variant(tmp_path, grow))
    assert code == 1
    assert verdicts(report)["peak_rss_mb"] == "worse"
    assert "REGRESSION" in (tmp_path / "out" / "compare.txt").read_text()


def test_the_fitted_memory_limit_is_judged_like_peak_rss(tmp_path: Path) -> None:
    def fitted(limit_mb):
        def change(row):
            row["metrics"]["fit"] = {"min_limit_mb": limit_mb, "steps": [], "run_seconds": 10.0}
        return change
    base = store.read_rows(variant(tmp_path, fitted(320.0), "fitted.jsonl"))
    current = store.read_rows(variant(tmp_path, fitted(400.0)))
    report = compare.compare_rows(base, current, compare.load_policy(None))
    verdict = report["configs"][1]["metrics"]["min_limit_mb"]
    assert report["regression"] and verdict["verdict"] == "worse" and verdict["detail"].startswith("+80.0 MiB (+25.0%)")
    same = compare.compare_rows(base, store.read_rows(variant(tmp_path, fitted(328.0), "near.jsonl")), compare.load_policy(None))
    assert same["configs"][1]["metrics"]["min_limit_mb"]["verdict"] == "within noise" and not same["regression"]


def test_small_rss_changes_are_noise_below_both_margins(tmp_path: Path) -> None:
    def grow(row):
        row["metrics"]["peak_rss_mb"] += 19.0  # +4.9 % of 390 MiB and under 20 MiB
    code, report = run_compare(tmp_path, variant(tmp_path, grow))
    assert code == 0 and verdicts(report)["peak_rss_mb"] == "within noise"


def test_the_rss_detail_says_whether_anonymous_or_file_backed_memory_moved() -> None:
    base = store.read_rows(BASELINE)
    for row in base:
        row["metrics"].update(rss_anon_after_load_mb=113.9, rss_file_after_load_mb=43.4)
    current = copy.deepcopy(base)
    for row in current:  # a fresh venv: the same code, shared libraries mapped with more pages
        row["metrics"].update(rss_file_after_load_mb=71.4, peak_rss_mb=row["metrics"]["peak_rss_mb"] + 28.0)
    report = compare.compare_rows(base, current, compare.load_policy(None))
    detail = report["configs"][0]["metrics"]["peak_rss_mb"]["detail"]
    assert detail.endswith("after load: anonymous +0.0 MiB, file-backed +28.0 MiB")


def test_a_latency_change_inside_the_noise_exits_0(tmp_path: Path) -> None:
    rng = random.Random(11)

    def jitter(row):
        for s in row["samples"]:
            s["latency_s"] = [t * rng.uniform(0.9, 1.12) for t in s["latency_s"]]
    code, report = run_compare(tmp_path, variant(tmp_path, jitter))
    assert code == 0
    assert verdicts(report)["latency"] == "within noise" and verdicts(report)["rtf"] == "within noise"


def test_a_real_slowdown_is_worse(tmp_path: Path) -> None:
    def slow(row):
        for s in row["samples"]:
            s["latency_s"] = [t * 1.4 for t in s["latency_s"]]
    code, report = run_compare(tmp_path, variant(tmp_path, slow))
    assert code == 1 and verdicts(report)["latency"] == "worse" and verdicts(report)["rtf"] == "worse"


def test_timings_taken_while_the_hypervisor_stole_cpu_are_not_evidence(tmp_path: Path) -> None:
    def slow_on_a_busy_host(row):
        row["metrics"]["cpu_steal_fraction"] = 0.11
        for s in row["samples"]:
            s["latency_s"] = [t * 1.4 for t in s["latency_s"]]
    code, report = run_compare(tmp_path, variant(tmp_path, slow_on_a_busy_host))
    assert code == 0 and verdicts(report)["latency"] == "insufficient evidence"
    entry = next(e for e in report["configs"] if e["run_id"] == "base-int8")
    assert entry["metrics"]["latency"]["detail"].startswith("CPU steal 11% while running")


def test_timings_taken_under_foreign_load_are_not_evidence() -> None:
    base = store.read_rows(BASELINE)
    current = copy.deepcopy(base)
    for row in current:
        row["metrics"]["foreign_cpu_fraction"] = 0.07
        for s in row["samples"]:
            s["latency_s"] = [t * 1.4 for t in s["latency_s"]]
    policy = compare.load_policy(None)
    assert policy["latency"]["max_foreign_cpu_fraction"] == 0.05  # one limit per NOISE metric of the registry
    entry = compare.compare_rows(base, current, policy)["configs"][1]
    assert {k: entry["metrics"][k]["verdict"] for k in ("latency", "rtf")} == {
        "latency": "insufficient evidence", "rtf": "insufficient evidence"}
    assert entry["metrics"]["latency"]["detail"].startswith("foreign CPU load 7% while running; median x1.400")
    policy["latency"]["max_foreign_cpu_fraction"] = 0.10
    assert compare.compare_rows(base, current, policy)["configs"][1]["metrics"]["latency"]["verdict"] == "worse"


def test_the_judged_metrics_come_from_the_registry() -> None:
    rows = store.read_rows(BASELINE)
    report = compare.compare_rows(rows, rows, compare.load_policy(None))
    assert list(report["configs"][1]["metrics"]) == ["status", "peak_rss_mb", "latency", "rtf", "wer.en", "wer.pt"]


def test_a_wer_rise_on_every_shared_utterance_exits_1(tmp_path: Path) -> None:
    def worse_pt(row):  # five inserted words in every Portuguese transcript: the paired interval is all above the limit
        row["metrics"]["languages"]["pt"]["wer"] += 5.0
        for sample in row["samples"]:
            if sample["lang"] == "pt":
                sample["hypothesis"] += " h" * 5
    code, report = run_compare(tmp_path, variant(tmp_path, worse_pt))
    assert code == 1 and verdicts(report)["wer.pt"] == "worse" and verdicts(report)["wer.en"] == "insufficient evidence"
    entry = next(e for e in report["configs"] if e["run_id"] == "base-int8")
    assert entry["metrics"]["wer.pt"]["method"] == "paired"
    assert "paired on 2 shared utterances" in entry["metrics"]["wer.pt"]["detail"]


def test_a_wer_figure_that_moved_without_its_transcripts_is_not_a_regression(tmp_path: Path) -> None:
    def edited(row):  # the headline figure changed but every transcript is the same: nothing shows a rise
        row["metrics"]["languages"]["pt"]["wer"] += 0.02
    code, report = run_compare(tmp_path, variant(tmp_path, edited))
    assert code == 0 and verdicts(report)["wer.pt"] == "insufficient evidence"


def test_ok_to_oom_is_a_regression(tmp_path: Path) -> None:
    def oom(row):
        if row["run_id"] == "tiny-int8":
            row.update(status="oom", reason="process tree RSS 700 MiB passed the memory cap")
    code, report = run_compare(tmp_path, variant(tmp_path, oom))
    assert code == 1 and verdicts(report, "tiny-int8") == {"status": "worse"}


def test_too_few_samples_is_reported_as_insufficient(tmp_path: Path) -> None:
    def few(row):
        row["samples"] = row["samples"][:1]  # 3 timings per side
    current = variant(tmp_path, few)
    code, report = run_compare(tmp_path, current)
    assert code == 0 and verdicts(report)["latency"] == "insufficient evidence"
    policy = tmp_path / "policy.yaml"
    policy.write_text("latency: {insufficient_is_regression: true}\n")
    code, _ = run_compare(tmp_path, current, "--policy", str(policy))
    assert code == 1


def test_new_and_missing_configurations(tmp_path: Path) -> None:
    rows = store.read_rows(BASELINE)
    extra = copy.deepcopy(rows[0])
    extra["run_id"] = "small-int8"
    current = tmp_path / "current.jsonl"
    for row in (rows[0], extra):
        store.append_row(current, row)
    code, report = run_compare(tmp_path, current)
    assert code == 0
    assert verdicts(report, "tiny-int8") == {"status": "missing"} and verdicts(report, "small-int8") == {"status": "new"}


def test_policy_file_changes_thresholds(tmp_path: Path) -> None:
    def grow(row):
        row["metrics"]["peak_rss_mb"] *= 1.30
    policy = tmp_path / "policy.yaml"
    policy.write_text("peak_rss: {max_increase_fraction: 0.5}\n")
    code, report = run_compare(tmp_path, variant(tmp_path, grow), "--policy", str(policy))
    assert code == 0 and verdicts(report)["peak_rss_mb"] == "within noise"
    bad = tmp_path / "bad.yaml"
    bad.write_text("peak_rss: {max_increase: 5}\n")
    code, _ = run_compare(tmp_path, variant(tmp_path, name="c2.jsonl"), "--policy", str(bad))
    assert code == 2


def test_another_machine_is_refused_unless_allowed(tmp_path: Path) -> None:
    def elsewhere(row):
        row["environment"]["cpu"] = "AMD EPYC 7763"
    current = variant(tmp_path, elsewhere)
    result = run_cli("compare", str(BASELINE), str(current), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "machine mismatch" in result.stderr
    code, report = run_compare(tmp_path, current, "--allow-other-machine")
    assert code == 0 and report["machine_mismatch"]


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"schema_version": 3, "run_id": "x"}) + "\n")
    result = run_cli("compare", str(BASELINE), str(bad))
    assert result.returncode == 2 and "schema_version" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("compare", str(BASELINE), str(tmp_path / "nothing"))
    assert result.returncode == 2 and "no such run directory" in result.stderr


def test_baselines_are_kept_per_machine_class(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    variant(run_dir, name="results.jsonl")
    saved = baselines.save(run_dir, "nightly", tmp_path / "baselines")
    assert saved == tmp_path / "baselines" / "intel-r-xeon-r-processor-x2" / "nightly"
    assert baselines.resolve("baseline:nightly", run_dir, tmp_path / "baselines") == saved
    with pytest.raises(UserError, match="no baseline 'weekly' for this machine class"):
        baselines.resolve("baseline:weekly", run_dir, tmp_path / "baselines")
    assert compare.compare(saved, run_dir, compare.load_policy(None))["regression"] is False


def test_the_text_says_which_statistic_each_line_compares() -> None:
    rows = store.read_rows(BASELINE)
    current = copy.deepcopy(rows)
    current[0]["status"], current[0]["reason"] = "error", "boom"
    report = compare.compare_rows(rows, current, compare.DEFAULT_POLICY)
    report.update(baseline="a", current="b")
    text = compare.to_text(report).splitlines()
    header = next(i for i, line in enumerate(text) if line.startswith("configuration "))
    assert text[header].split() == ["configuration", "statistic", "verdict", "baseline", "current", "detail"]
    assert "RTF = warm transcription seconds / audio seconds, as in summary.csv" in text[header - 1]
    labels = {line[60:81].strip() for line in text[header + 1:]}
    assert {"status", "peak RSS MiB", "median warm latency s", "RTF", "WER en"} <= labels
    markdown = compare.to_text(report, markdown=True)
    assert "| configuration | statistic | verdict | baseline | current | detail |" in markdown
    judged = {e["run_id"]: e["metrics"] for e in report["configs"]}
    assert judged[rows[0]["run_id"]]["status"]["verdict"] == "worse"
    assert judged[rows[1]["run_id"]]["status"]["verdict"] == "unchanged"
    # RTF as summary.csv has it (the row's total warm seconds / audio seconds), not a median of ratios
    assert judged[rows[1]["run_id"]]["rtf"]["baseline"] == rows[1]["metrics"]["rtf"]


def test_comparing_a_run_with_itself_and_a_busy_machine_are_warned() -> None:
    rows = store.read_rows(BASELINE)
    same = compare.compare_rows(rows, copy.deepcopy(rows), compare.DEFAULT_POLICY)
    assert same["warnings"] == ["the baseline and the current run are the same run (identical rows): nothing was "
                                "compared with anything else"]
    busy = copy.deepcopy(rows)
    busy[1]["metrics"]["foreign_cpu_fraction"] = 0.42
    busy[1]["metrics"]["latency_p95_s"] += 0.01
    report = compare.compare_rows(rows, busy, compare.DEFAULT_POLICY)
    (warning,) = report["warnings"]
    assert warning.startswith("current measured while the machine was busy: ") and "foreign CPU load 42.0 %" in warning
    report.update(baseline="a", current="b")
    assert f"warning: {warning}" in compare.to_text(report)
    assert f"> **Warning**: {warning}." in compare.to_text(report, markdown=True)
