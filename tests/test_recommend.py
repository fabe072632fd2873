"""The recommender on golden results files, budget overrides, and the deployment snippet."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import store
from harness.analyze import deploy
from harness.analyze.recommend import parse_budget_overrides, recommend
from harness.errors import UserError

GOLDEN = Path(__file__).parent / "golden" / "recommend"
BUDGETS = {"peak_rss_mb": 700, "rtf": 0.5, "latency_p95_s": 3.0, "wer": {"en": 0.10, "pt": 0.25}}


def _rec(name: str, budgets: dict = BUDGETS) -> dict:
    return recommend(store.read_rows(GOLDEN / f"{name}.jsonl"), budgets)


def _why(rec: dict) -> dict[str, str]:
    return {v["run_id"]: v["why"] for v in rec["not_chosen"]}


def test_feasible_picks_the_least_memory_that_meets_every_budget() -> None:
    rec = _rec("feasible")
    assert rec["recommended"]["run_id"] == "base-int8"
    assert rec["feasible"] == ["base-int8", "base-f32"]
    why = _why(rec)
    assert why["tiny-int8"] == ("wer.en 12.0 % > 10.0 % (over by 2.0 points, +20%); "
                                "wer.pt 30.0 % > 25.0 % (over by 5.0 points, +20%)")
    assert why["base-f32"] == "meets every budget but needs 300.0 MiB more peak RSS (650.0 vs 350.0 MiB)"
    assert "peak_rss_mb 720 MiB > 700 MiB" in why["small-int8"]
    assert "latency_p95_s 3.50 s > 3.00 s" in why["small-int8"] and "rtf 0.700 > 0.500" in why["small-int8"]
    assert rec["closest"] is None


def test_infeasible_says_so_and_names_the_nearest_budget() -> None:
    rec = _rec("infeasible")
    assert rec["recommended"] is None and rec["feasible"] == []
    closest = rec["closest"]
    assert closest["run_id"] == "base-int8"  # misses one budget by 2 points; tiny misses two
    assert closest["budget"] == "wer.pt" and closest["value"] == 0.27 and closest["limit"] == 0.25
    assert "wer.pt 27.0 % > 25.0 % (over by 2.0 points, +8%)" in closest["text"]


def test_ties_go_to_lower_p95_then_lower_wer() -> None:
    rec = _rec("ties", {"peak_rss_mb": 400})
    assert rec["feasible"] == ["base-int8-t1", "base-int8-t2-pin", "base-int8-t2-slow"]
    assert rec["recommended"]["run_id"] == "base-int8-t1"  # same RSS and p95 as t2-pin, lower WER
    why = _why(rec)
    assert "slower p95 latency (1.60 vs 1.40 s)" in why["base-int8-t2-slow"]
    assert "higher WER (6.0% vs 4.0%)" in why["base-int8-t2-pin"]


def test_a_language_with_a_budget_but_no_data_does_not_meet_it() -> None:
    rec = _rec("missing_language")
    assert rec["recommended"]["run_id"] == "base-int8"
    assert _why(rec)["tiny.en-int8"] == "wer.pt: no data (budget 25.0 %)"
    # Without a Portuguese budget, the English-only model wins on memory.
    assert _rec("missing_language", {"wer": {"en": 0.1}})["recommended"]["run_id"] == "tiny.en-int8"


def test_failed_rows_are_never_chosen_and_say_why() -> None:
    rec = _rec("failed")
    assert rec["recommended"]["run_id"] == "base-int8"
    why = _why(rec)
    assert why["base-f32-oom"].startswith("oom: process tree RSS 512.3 MiB passed the memory cap")
    assert why["large-v3"] == "error: model 'large-v3' is not available on this machine"
    assert why["tiny-timeout"].startswith("timeout: ")
    nothing = recommend([r for r in store.read_rows(GOLDEN / "failed.jsonl") if r["status"] != "ok"], BUDGETS)
    assert nothing["recommended"] is None and nothing["closest"] is None


def test_budget_overrides() -> None:
    merged = parse_budget_overrides(["peak_rss_mb=512", "wer.pt=0.2", "cer.en=0.05"], BUDGETS)
    assert merged["peak_rss_mb"] == 512 and merged["wer"] == {"en": 0.10, "pt": 0.2} and merged["cer"] == {"en": 0.05}
    assert BUDGETS["wer"]["pt"] == 0.25  # the scenario's budgets are not modified
    for bad in ("peak_rss=1", "wer.xx=0.1", "rtf", "rtf=fast", "wer.pt=20", "peak_rss_mb=-1"):
        with pytest.raises(UserError, match="--budget"):
            parse_budget_overrides([bad], {})


def test_budget_names_come_from_the_metric_registry() -> None:
    with pytest.raises(UserError, match=r"allowed: peak_rss_mb, rss_after_load_mb, load_s, first_latency_s, "
                                        r"latency_p50_s, latency_p95_s, rtf, wer\.LANG, cer\.LANG$"):
        parse_budget_overrides(["foreign_cpu_fraction=0.1"], {})
    rec = _rec("feasible", {**BUDGETS, "rss_after_load_mb": 200, "cer": {"pt": 0.09}})
    assert _why(rec)["base-int8"] == ("rss_after_load_mb 245 MiB > 200 MiB (over by 45 MiB, +22%); "
                                      "cer.pt 10.0 % > 9.0 % (over by 1.0 points, +11%)")
    # recommendation.json: the winner's run-level budget metrics, in registry order
    assert list(_rec("feasible")["recommended"]["metrics"]) == [
        "peak_rss_mb", "rss_after_load_mb", "load_s", "first_latency_s", "latency_p50_s", "latency_p95_s", "rtf"]


def test_deployment_snippet_adds_headroom_and_asks_for_guaranteed_qos() -> None:
    rec = _rec("feasible")
    snippet = deploy.snippet(rec["recommended"])
    assert snippet["memory_mib"] == 403  # ceil(350 * 1.15)
    assert 'memory: "403Mi"' in snippet["kubernetes"] and 'cpu: "2"' in snippet["kubernetes"]
    assert snippet["kubernetes"].count('memory: "403Mi"') == 2  # request == limit
    assert "OMP_NUM_THREADS" in snippet["kubernetes"]
    assert "WhisperModel('base', device=\"cpu\", compute_type='int8', cpu_threads=2" in snippet["python"]
    assert "Systran/faster-whisper-base on the Hugging Face hub" in snippet["python"]  # the backend's own snippet
    assert any("Guaranteed QoS" in note for note in snippet["notes"])
    assert deploy.snippet(rec["recommended"], headroom=0.5)["memory_mib"] == 525


def test_quantization_may_cost_at_most_a_given_wer_increase() -> None:
    budgets = {"wer_increase_vs": {"quantization": "float32", "max": 0.02}}
    rec = _rec("feasible", budgets)
    assert rec["recommended"]["run_id"] == "base-int8"  # +0.5 / +1.0 points against base float32
    assert _why(rec)["tiny-int8"].startswith("wer_increase_vs_float32.en: no data")  # no tiny float32 measured
    strict = _rec("feasible", {"wer_increase_vs": {"quantization": "float32", "max": 0.005}})
    assert strict["recommended"]["run_id"] == "base-f32"
    assert "wer_increase_vs_float32.pt +1.0 points > +0.5 points" in _why(strict)["base-int8"]


def test_peaks_within_three_percent_are_a_tie() -> None:
    rows = store.read_rows(GOLDEN / "ties.jsonl")
    rows[0]["metrics"]["peak_rss_mb"] = 340.0  # base-int8-t2-slow: least memory, but 350 is within 3 %
    rec = recommend(rows, {"peak_rss_mb": 400})
    assert rec["recommended"]["run_id"] == "base-int8-t1"
    assert "peak RSS within 3% (340.0 vs 350.0 MiB), slower p95 latency" in _why(rec)["base-int8-t2-slow"]
    rows[0]["metrics"]["peak_rss_mb"] = 330.0  # 350 > 330 * 1.03: no longer a tie
    assert recommend(rows, {"peak_rss_mb": 400})["recommended"]["run_id"] == "base-int8-t2-slow"
