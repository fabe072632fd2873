"""Budget-aware search: order, early-stop rules, and which configurations cannot win."""

from __future__ import annotations

import pytest

from harness.child.worker import BudgetBreach, check_stop_rules
from harness.plan import search
from harness.plan.scenario import RunSpec


def spec(model: str, quantization: str, threads: int = 2, pinning: str = "none") -> RunSpec:
    return RunSpec(run_id=f"{model}-{quantization}-t{threads}-{pinning}", scenario="s", backend="faster-whisper",
                   model=model, quantization=quantization, threads=threads, cpu_pinning=pinning,
                   chunking={"mode": "whole"}, beam_size=5, decoding={}, memory_cap_mb=None, timeout_s=60,
                   repeats=1, warmup=1)


def row(s: RunSpec, status: str = "ok", peak: float = 400, p95: float = 1.0, rtf: float = 0.3,
        wer: dict[str, float] | None = None, budget: str | None = None) -> dict:
    r = {"run_id": s.run_id, "status": status, "config": s.config(),
         "metrics": {"peak_rss_mb": peak, "latency_p95_s": p95, "rtf": rtf,
                     "languages": {lang: {"wer": w} for lang, w in (wer or {"en": 0.05}).items()}}}
    if budget:
        r["budget_verdict"] = {"budget": budget}
    return r


def test_order_is_smallest_expected_memory_first() -> None:
    specs = [spec("base", "float32"), spec("small", "int8"), spec("base", "int8", 1), spec("tiny.en", "float32"),
             spec("base", "int8", 2)]
    assert [s.run_id for s in search.order(specs)] == [
        "tiny.en-float32-t2-none", "base-int8-t1-none", "base-int8-t2-none", "base-float32-t2-none", "small-int8-t2-none"]


def test_english_only_model_cannot_meet_a_portuguese_budget() -> None:
    why = search.cannot_win(spec("tiny.en", "int8"), [], {"wer": {"pt": 0.3}}, {"en", "pt"})
    assert why is not None and "English-only" in why
    assert search.cannot_win(spec("tiny.en", "int8"), [], {"wer": {"en": 0.1}}, {"en", "pt"}) is None


def test_a_larger_configuration_cannot_beat_a_feasible_smaller_one() -> None:
    budgets = {"peak_rss_mb": 700}
    measured = [row(spec("base", "int8"), peak=390)]
    why = search.cannot_win(spec("base", "float32"), measured, budgets, {"en"})
    assert why is not None and "already meets every budget" in why
    assert search.cannot_win(spec("small", "int8"), measured, budgets, {"en"}) is not None
    # Other threads or pinning: memory may differ a little, so it is measured.
    assert search.cannot_win(spec("base", "float32", threads=1), measured, budgets, {"en"}) is None
    assert search.cannot_win(spec("base", "float32", pinning="auto"), measured, budgets, {"en"}) is None


def test_breaking_the_memory_budget_rules_out_larger_configurations() -> None:
    budgets = {"peak_rss_mb": 300, "wer": {"en": 0.01}}
    for measured in ([row(spec("base", "int8"), status="over_budget", budget="peak_rss_mb")],
                     [row(spec("base", "int8"), peak=390)]):
        why = search.cannot_win(spec("base", "float32"), measured, budgets, {"en"})
        assert why is not None and "peak_rss_mb" in why


def test_breaking_a_latency_budget_rules_out_larger_models_at_the_same_quantization_only() -> None:
    budgets = {"latency_p95_s": 1.0}
    measured = [row(spec("base", "int8"), p95=1.5, wer={"en": 0.2})]
    assert "latency" in search.cannot_win(spec("small", "int8"), measured, budgets, {"en"})
    assert search.cannot_win(spec("base", "float32"), measured, budgets, {"en"}) is None


def test_an_infeasible_smaller_configuration_proves_nothing_about_accuracy() -> None:
    measured = [row(spec("tiny.en", "int8"), wer={"en": 0.2})]
    assert search.cannot_win(spec("base", "int8"), measured, {"wer": {"en": 0.1}}, {"en"}) is None


def test_budget_groups_and_stop_rules_come_from_the_metric_registry() -> None:
    assert search.MEMORY_BUDGETS == ("peak_rss_mb",)
    assert set(search.SPEED_BUDGETS) == {"latency_p50_s", "latency_p95_s", "rtf"}
    budgets = {"peak_rss_mb": 700, "latency_p50_s": 2, "latency_p95_s": 3, "rtf": 0.5, "wer": {"en": 0.1}}
    assert search.stop_rules(budgets) == {"latency_p95_s": 3.0, "rtf": 0.5}  # the worker's; memory is the runner's
    # A smaller configuration killed at the memory cap broke the memory budget too.
    why = search.cannot_win(spec("base", "float32"), [row(spec("base", "int8"), status="oom")], {"peak_rss_mb": 300}, {"en"})
    assert why is not None and "already broke the peak_rss_mb budget" in why


def test_stop_rules_fire_only_when_the_final_figure_is_certain() -> None:
    # 20 planned timings: p95 interpolates at index 18.05, so 2 timings above the limit decide it.
    check_stop_rules({"latency_p95_s": 1.0}, [2.0] + [0.5] * 5, planned=20, planned_audio_s=100)
    with pytest.raises(BudgetBreach, match="latency_p95_s"):
        check_stop_rules({"latency_p95_s": 1.0}, [2.0, 0.5, 3.0], planned=20, planned_audio_s=100)
    # RTF: 30 s spent on 100 s of planned audio is already above 0.25, whatever the rest costs.
    check_stop_rules({"rtf": 0.25}, [10.0, 10.0], planned=10, planned_audio_s=100)
    with pytest.raises(BudgetBreach, match="rtf"):
        check_stop_rules({"rtf": 0.25}, [10.0, 10.0, 10.0], planned=10, planned_audio_s=100)


def test_stop_rules_never_stop_a_run_that_could_still_meet_its_budget() -> None:
    import random

    from harness.analyze.scoring import percentile

    rng = random.Random(7)
    for _ in range(2000):
        planned = rng.randint(1, 40)
        prefix = [rng.choice([0.2, 0.9, 1.1, 3.0]) for _ in range(rng.randint(1, planned))]
        try:
            check_stop_rules({"latency_p95_s": 1.0}, prefix, planned, planned_audio_s=1e9)
        except BudgetBreach:
            best_case = prefix + [0.0] * (planned - len(prefix))  # the rest as fast as possible
            assert percentile(best_case, 95) > 1.0, (planned, prefix)


def test_replayed_on_the_default_scenario_the_search_measures_a_quarter_and_agrees() -> None:
    """The exhaustive default sweep measured on the project's 2-core VM, replayed through the
    search's order and skip rules: the configurations it would measure hold the same winner."""
    from pathlib import Path

    from harness import store
    from harness.analyze.recommend import recommend
    from harness.plan.scenario import load_scenario

    root = Path(__file__).resolve().parents[1]
    scenario = load_scenario(root / "scenarios" / "default.yaml")
    exhaustive = {r["run_id"]: r for r in store.read_rows(root / "tests" / "golden" / "default-exhaustive.jsonl")}
    measured: list[dict] = []
    # The golden sweep predates the openai-whisper reference row: replay the configurations it holds.
    for s in search.order([s for s in scenario.expand() if s.backend == "faster-whisper"]):
        if search.cannot_win(s, measured, scenario.budgets, {"en", "pt"}) is None:
            measured.append(exhaustive[s.run_id])
    assert len(measured) == 4
    assert recommend(measured, scenario.budgets)["recommended"]["run_id"] == \
        recommend(list(exhaustive.values()), scenario.budgets)["recommended"]["run_id"]
    spent = sum(r["metrics"]["run_seconds"] for r in measured)
    total = sum(r["metrics"]["run_seconds"] for r in exhaustive.values())
    assert spent < 0.6 * total  # at least 40 % fewer run-seconds
