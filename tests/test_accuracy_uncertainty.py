"""Accuracy claims with their uncertainty, wired through: rows carry WER/CER intervals and hallucination
flags, `wer_increase_vs` is met / failed / insufficient data, `harness compare` judges WER on the
paired (or unpaired) interval, and the report shows the utterances that decide a difference.

The golden rows (tests/golden/uncertainty/one-clip-dominates.jsonl, invented sentences) are base int8
and float32 on 8 English and 10 Portuguese utterances: identical transcripts except one stuttered
English recording, where int8 drops the repeated words and loops at the end (13 more errors of 123
words). Portuguese transcripts are identical (74 words).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

from harness import metrics as registry
from harness import store
from harness.analyze import compare, uncertainty
from harness.analyze.recommend import recommend, wer_increase
from harness.contract import SampleRef
from harness.errors import UserError
from harness.measure import record
from harness.plan.scenario import load_scenario
from harness.report import build, drilldown, generate

GOLDEN = Path(__file__).parent / "golden" / "uncertainty" / "one-clip-dominates.jsonl"
BUDGET = {"wer_increase_vs": {"quantization": "float32", "max": 0.02}}
SCENARIO = """
name: quantization
matrix: {model: [base], quantization: [int8, float32], threads: [2], cpu_pinning: [auto]}
budgets: {wer_increase_vs: {quantization: float32, max: 0.02}}
"""


def golden() -> tuple[dict, dict]:
    int8, f32 = store.read_rows(GOLDEN)
    return int8, f32


def more_portuguese(row: dict, times: int) -> dict:
    """The row with its Portuguese utterances recorded `times` times (new ids, same transcripts)."""
    pt = [s for s in row["samples"] if s["lang"] == "pt"]
    extra = [{**s, "id": f"{s['id']}-{k}"} for k in range(1, times) for s in pt]
    return {**row, "samples": row["samples"] + extra}


def test_one_stuttered_recording_dominates_the_paired_difference() -> None:
    int8, f32 = golden()
    d = uncertainty.row_difference(f32, int8, "en")
    assert d["method"] == "paired" and d["utterances"] == 8 and d["words"] == 123
    assert d["increase"] == pytest.approx(13 / 123)
    # A resample without the stuttered clip (probability (7/8)^8 = 0.344) sees no difference at all:
    # the bootstrap reaches down to 0 and int8 is worse in only ~66 % of resamples. No utterance shows
    # int8 better, so that side is bounded by the rule of three: 3.7 errors in 123 words.
    assert d["bootstrap_ci"][0] == 0.0 and d["ci"][1] > 0.2
    assert d["ci"][0] == pytest.approx(-uncertainty.rule_of_three(123)) == pytest.approx(-0.02999, abs=1e-4)
    assert d["p_a_better"] == pytest.approx(1 - (7 / 8) ** 8, abs=0.02) and d["p_b_better"] == 0.0
    shown = drilldown.drilldown(int8, [int8, f32], ["en", "pt"])
    assert shown["neighbour"] == store.short_name(f32)
    en = shown["languages"][0]
    assert [u["id"] for u in en["utterances"]] == ["en_08_stutter"]  # the only clip whose errors differ
    assert en["utterances"][0]["points"] == pytest.approx(100 * 13 / 123)
    kinds = {t["kind"] for t in en["utterances"][0]["sides"][0]["diff"]}
    assert {"delete", "insert", "equal"} <= kinds
    assert shown["languages"][1]["utterances"] == []  # Portuguese: identical transcripts


def test_wer_increase_vs_has_three_verdicts() -> None:
    int8, f32 = golden()
    by_lang = {c["lang"]: c for c in wer_increase(int8, [int8, f32], "float32", 0.02)}
    # Identical transcripts of 74 words do not show that int8 costs less than 2 points (the rule of
    # three allows 3.7 unseen extra errors: 5.0 points) ...
    assert by_lang["pt"]["verdict"] == "insufficient data" and by_lang["pt"]["ci"][1] == pytest.approx(3.689 / 74, abs=1e-4)
    # ... four times as much speech, as identical, does (1.2 points).
    int8_x4, f32_x4 = more_portuguese(int8, 4), more_portuguese(f32, 4)
    met = {c["lang"]: c for c in wer_increase(int8_x4, [int8_x4, f32_x4], "float32", 0.02)}["pt"]
    assert met["verdict"] == "met" and met["ci"][1] < 0.02
    en = by_lang["en"]
    assert en["verdict"] == "insufficient data" and en["method"] == "paired"
    assert en["needed"]["expected_verdict"] == "failed" and en["needed"]["total_words"] > 123
    assert "words in all would settle it" in en["text"]
    failing = copy.deepcopy(int8)
    for s in failing["samples"]:
        if s["lang"] == "pt":  # a word lost in every Portuguese utterance: +13.5 points on all of them
            s["hypothesis"] = s["hypothesis"].split(" ", 1)[1]
    assert {c["lang"]: c["verdict"] for c in wer_increase(failing, [failing, f32], "float32", 0.02)}["pt"] == "failed"


def test_the_recommendation_counts_insufficient_data_as_not_met_unless_relaxed() -> None:
    int8, f32 = golden()
    rec = recommend([int8, f32], BUDGET)
    assert rec["recommended"]["run_id"] == "base-f32"
    why = next(v for v in rec["not_chosen"] if v["run_id"] == "base-int8")
    assert why["violations"][0]["verdict"] == "insufficient data"
    assert why["why"].startswith("wer_increase_vs_float32.en: +10.6 points, 95 % CI [-3.0, +22.4]")
    assert "counted as not met; `insufficient_data: met` in the budget relaxes this" in why["why"]
    relaxed = recommend([int8, f32], {"wer_increase_vs": {**BUDGET["wer_increase_vs"], "insufficient_data": "met"}})
    assert relaxed["recommended"]["run_id"] == "base-int8"


def test_compare_pairs_shared_utterances_and_says_when_it_cannot(tmp_path: Path) -> None:
    int8, f32 = golden()
    policy = compare.load_policy(None)

    def judged(current: dict) -> dict:
        return compare.compare_rows([f32], [{**current, "run_id": f32["run_id"]}], policy)["configs"][0]["metrics"]

    paired = judged(int8)
    assert paired["wer.en"]["method"] == "paired" and paired["wer.en"]["verdict"] == "insufficient evidence"
    assert "paired on 8 shared utterances, 123 words" in paired["wer.en"]["detail"]
    assert paired["wer.pt"]["verdict"] == "insufficient evidence"  # identical, but 74 words: +-5 points
    assert judged(more_portuguese(int8, 4))["wer.pt"]["verdict"] == "insufficient evidence"  # +-1.2 points
    plenty = compare.compare_rows([more_portuguese(f32, 6)], [{**more_portuguese(int8, 6), "run_id": f32["run_id"]}],
                                  policy)["configs"][0]["metrics"]
    assert plenty["wer.pt"]["verdict"] == "within noise"  # 444 words: within +-0.9 points
    other = copy.deepcopy(int8)
    for s in other["samples"]:
        s["id"] += "-other"  # another recording of each sentence: nothing to pair
    unpaired = judged(other)
    assert unpaired["wer.en"]["method"] == "unpaired" and "unpaired: the runs share no utterance" in unpaired["wer.en"]["detail"]
    assert unpaired["wer.pt"]["method"] == "unpaired" and unpaired["wer.pt"]["delta_points"] == 0
    strict = {**policy, "latency": {**policy["latency"], "insufficient_is_regression": True}}
    entry = compare.compare_rows([f32], [{**int8, "run_id": f32["run_id"]}], strict)["configs"][0]
    assert not entry["regression"]  # too little speech to judge WER is not a regression, even when strict on timings
    rescored = copy.deepcopy(int8)
    rescored["data"] = {"normalization": {"en": {"normalizer": "none"}}}
    different = judged(rescored)["wer.en"]
    assert different["method"] == "none" and different["verdict"] == "insufficient evidence"
    assert "scored en differently" in different["detail"]


def test_rows_carry_intervals_and_flags() -> None:
    refs = {f"en{i}": f"sentence number {i} has six words" for i in range(6)}
    hyps = {**refs, "en0": "sentence number 0 has six", "en5": "thank you thank you thank you thank you"}
    by_id = {i: SampleRef(id=i, lang="en", audio=f"{i}.wav", text=t, dataset="d") for i, t in refs.items()}
    result = {"samples": [{"id": i, "lang": "en", "audio_s": 2.0, "latency_s": [0.5], "hypothesis": h} for i, h in hyps.items()],
              "vmhwm_mb": 1.0, "rss_after_load_mb": 1.0, "rss_anon_after_load_mb": 1.0, "rss_file_after_load_mb": 0.0,
              "load_s": 0.1, "first_latency_s": 0.5}
    samples: list[dict] = []
    en = record._measure(result, by_id, {}, [], samples, {})["languages"]["en"]
    low, high = en["wer_ci"]
    assert low <= en["wer"] <= high and 0 < high <= 1 and en["cer_ci"][0] <= en["cer"] <= en["cer_ci"][1]
    assert en["flagged"] == 1 and en["flags"] == {"repetition": 1, "over-generation": 0, "past-audio-end": 0}
    assert [s.get("flags") for s in samples] == [None] * 5 + [["repetition"]]
    row = {"metrics": {"languages": {"en": en}}}
    assert registry.BY_NAME["wer_ci_high"].value(row, "en") == high


def test_old_rows_without_intervals_still_read_and_report(tmp_path: Path) -> None:
    old = store.read_rows(Path(__file__).parent / "golden" / "recommend" / "feasible.jsonl")
    wer = registry.BY_NAME["wer"]
    assert wer.cell(wer.value(old[0], "en"), registry.interval(wer, old[0], "en")) == "12.0 %"
    assert registry.BY_NAME["flagged"].value(old[0], "en") is None


def run_dir(path: Path) -> Path:
    path.mkdir()
    (path / "scenario.yaml").write_text(SCENARIO)
    with warnings.catch_warnings():  # threads: 2 on a 1-CPU machine
        warnings.simplefilter("ignore")
        ids = {s.quantization: s.run_id for s in load_scenario(path / "scenario.yaml").expand()}
    for row in golden():
        row["run_id"] = ids[row["config"]["quantization"]]
        en = row["metrics"]["languages"]["en"]
        en["wer_ci"] = [0.0, 0.2]
        en["flagged"] = int(row["config"]["quantization"] == "int8")
        for s in row["samples"]:
            if s["id"] == "en_08_stutter" and en["flagged"]:
                s["flags"] = ["repetition"]
        store.append_row(path / "results.jsonl", row)
    return path


def test_the_report_shows_intervals_verdicts_the_deciding_utterance_and_flags(tmp_path: Path) -> None:
    run = run_dir(tmp_path / "run")
    data = build.build(run)
    assert data["recommendation"]["recommended"]["config"]["quantization"] == "float32"
    int8_line = next(r for r in data["table"] if r["quantization"] == "int8")
    assert int8_line["cells"]["wer_en"] == "12.2 % [0.0, 20.0]" and int8_line["cells"]["wer_pt"] == "1.4 %"
    assert int8_line["cells"]["flagged_en"] == "1"
    verdicts = {c["lang"]: c["verdict"] for c in data["quantization_comparison"]["lines"]}
    assert verdicts == {"en": "insufficient data", "pt": "insufficient data"}
    # float32 is recommended and there is no larger model: the drill-down compares it with int8
    assert data["drilldown"]["neighbour"].startswith("base int8")
    assert data["drilldown"]["languages"][0]["utterances"][0]["id"] == "en_08_stutter"
    assert [(f["id"], f["flags"]) for f in data["flagged"]] == [("en_08_stutter", ["repetition"])]
    paths = generate(run)
    html = paths["html"].read_text()
    assert "Which utterances decide the difference" in html and "<del>the</del>" in html and "<ins>everyone</ins>" in html
    assert "Hallucination flags" in html and "insufficient data" in html
    assert "**insufficient data**" in paths["markdown"].read_text()


def test_a_bad_insufficient_data_option_names_file_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("max: 0.02}", "max: 0.02, insufficient_data: maybe}"))
    with pytest.raises(UserError, match=r"s\.yaml: field 'budgets\.wer_increase_vs\.insufficient_data': "
                                        r"invalid value 'maybe'; expected one of not-met, met"):
        load_scenario(path)
