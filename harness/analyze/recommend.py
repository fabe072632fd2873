"""Budgets -> the smallest configuration that meets them, and why every other one was not chosen.

Pure functions over result rows. Among `ok` rows, a configuration qualifies when it meets every budget
(the metrics harness.metrics marks `budget`: `peak_rss_mb`, `rtf`, latencies, per-language `wer` / `cer`;
a language with a budget but no data does not meet it). They are ranked in the registry's `rank` order:
lowest peak RSS (within 3 %: a tie); ties go to lower p95 latency, unless the latencies are
indistinguishable by the test `harness compare` uses (harness.analyze.compare.timing_difference): then
to the lower peak RSS, then the lower WER.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness import backends, store
from harness import metrics as registry
from harness.analyze import compare, uncertainty
from harness.analyze.envelope import envelope
from harness.errors import UserError
from harness.plan.scenario import BUDGET_PER_LANGUAGE, BUDGET_SCALARS, BUDGET_WER_INCREASE

# Peak RSS of one configuration varies between runs by a few percent (allocator arenas, thread
# start-up); peaks within 3 % of the lowest count as a tie, decided by p95 latency, then WER.
RSS_TIE_FRACTION = 0.03
# compare's timing verdicts that do not tell two configurations' latencies apart.
INDISTINGUISHABLE = ("within noise", "insufficient evidence")


@dataclass(frozen=True)
class Violation:
    budget: str  # "peak_rss_mb", "wer.pt", ...
    limit: float
    value: float | None  # None: no data (e.g. no Portuguese samples transcribed)
    # A wer_increase_vs budget judged on its 95 % interval: "failed" or "insufficient data" (then `value`
    # is the interval's upper bound), and the sentence that says so.
    verdict: str | None = None
    detail: str = ""

    @property
    def excess(self) -> float:
        """How far past the limit, as a fraction of the limit (inf when there is no data)."""
        if self.value is None:
            return math.inf
        past = self.value - self.limit if _lower_is_better(self.budget) else self.limit - self.value
        return past / self.limit if self.limit else math.inf

    def describe(self) -> str:
        if self.detail:
            return f"{self.budget}: {self.detail}"
        if self.value is None:
            return f"{self.budget}: no data (budget {_fmt(self.budget, self.limit)})"
        lower = _lower_is_better(self.budget)
        past = abs(self.value - self.limit)
        past_text = f"{past * 100:.1f} points" if _is_fraction(self.budget) else _fmt(self.budget, past)
        return (f"{self.budget} {_fmt(self.budget, self.value)} {'>' if lower else '<'} {_fmt(self.budget, self.limit)} "
                f"({'over' if lower else 'under'} by {past_text}, {self.excess:+.0%})")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "excess": None if math.isinf(self.excess) else round(self.excess, 4),
                "text": self.describe()}


def _fmt(budget: str, value: float) -> str:
    """A budget's limit or value, in the metric's unit (harness.metrics): 720 MiB, 3.50 s, 0.500, 12.0 %."""
    if budget.startswith(BUDGET_WER_INCREASE):
        return f"{value * 100:+.1f} points"
    metric = registry.get(budget.partition(".")[0])
    return metric.text(value) if metric is not None else f"{value:.3f}"


def _lower_is_better(budget: str) -> bool:
    metric = registry.get(budget.partition(".")[0])
    return metric is None or metric.lower_is_better


def _is_fraction(budget: str) -> bool:
    """A budget on a fraction (WER, CER, the WER increase): its excess is told in points."""
    if budget.startswith(BUDGET_WER_INCREASE):
        return True
    metric = registry.get(budget.partition(".")[0])
    return metric is not None and metric.unit == "fraction"


def flatten_budgets(budgets: dict[str, Any]) -> dict[str, float]:
    """{'wer': {'pt': 0.25}, 'rtf': 0.5} -> {'wer.pt': 0.25, 'rtf': 0.5}."""
    flat: dict[str, float] = {}
    for key, value in budgets.items():
        if key == BUDGET_WER_INCREASE:
            flat[f"wer_increase_vs_{value['quantization']}"] = float(value["max"])
        elif isinstance(value, dict):
            flat.update({f"{key}.{lang}": float(v) for lang, v in value.items()})
        else:
            flat[key] = float(value)
    return flat


def parse_budget_overrides(items: list[str], budgets: dict[str, Any]) -> dict[str, Any]:
    """Apply `--budget peak_rss_mb=700 --budget wer.pt=0.2` on top of the scenario's budgets."""
    from harness.catalog import LANGUAGES

    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in budgets.items()}
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not math.isfinite(value) or value < 0:  # nan, inf: no row could be judged (or saved)
            raise UserError(f"--budget {item!r}: invalid value {raw!r}; expected NAME=NUMBER with a finite "
                            "number >= 0, e.g. peak_rss_mb=700 or wer.pt=0.2")
        metric, _, lang = key.partition(".")
        if value == 0 and not _is_fraction(metric):  # no memory or time budget of 0 can be met
            raise UserError(f"--budget {item!r}: invalid value {raw!r}; {metric} needs a number > 0")
        if metric in BUDGET_PER_LANGUAGE and lang in LANGUAGES:
            if value > 1 and _is_fraction(metric):
                raise UserError(f"--budget {item!r}: {metric} is a fraction (0.2 = 20 %)")
            merged.setdefault(metric, {})[lang] = value
        elif metric in BUDGET_SCALARS and not lang:
            merged[metric] = value
        else:
            allowed = ", ".join([*BUDGET_SCALARS, *(f"{name}.LANG" for name in BUDGET_PER_LANGUAGE)])
            raise UserError(f"--budget {item!r}: unknown budget {key!r}; allowed: {allowed}")
    return merged


def violations(row: dict[str, Any], budgets: dict[str, Any], rows: list[dict[str, Any]] = ()) -> list[Violation]:
    """Budgets an `ok` row breaks (`rows`: the whole run, for comparisons between configurations)."""
    found = []
    for budget, limit in flatten_budgets({k: v for k, v in budgets.items() if k != BUDGET_WER_INCREASE}).items():
        name, _, lang = budget.partition(".")
        metric = registry.BY_NAME[name]
        value = metric.value(row, lang or None)
        if value is None and lang and lang != "en" and backends.info(row["config"]["backend"]).english_only(row["config"]["model"]):
            found.append(Violation(budget, limit, None, detail=f"English-only model: cannot transcribe {lang}"))
        elif value is None or (value > limit if metric.lower_is_better else value < limit):
            found.append(Violation(budget, limit, value))
    spec = budgets.get(BUDGET_WER_INCREASE)
    if spec is not None and row["config"]["quantization"] != spec["quantization"]:
        relaxed = spec.get("insufficient_data") == "met"
        for c in wer_increase(row, rows, spec["quantization"], spec["max"]):
            name = f"wer_increase_vs_{spec['quantization']}.{c['lang']}"
            if c["verdict"] is None:
                found.append(Violation(name, spec["max"], None))
            elif c["verdict"] == "failed" or (c["verdict"] == "insufficient data" and not relaxed):
                value = c["increase"] if c["verdict"] == "failed" else (c["ci"] or [None, None])[1]
                found.append(Violation(name, spec["max"], value, c["verdict"], c["text"] + (
                    " (counted as not met; `insufficient_data: met` in the budget relaxes this)"
                    if c["verdict"] == "insufficient data" else "")))
    return found


def reference_row(row: dict[str, Any], rows: list[dict[str, Any]], quantization: str) -> dict[str, Any] | None:
    """The row measuring the same configuration at another quantization."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        c = r["config"]
        return (c["backend"], c["model"], c["threads"], c["cpu_pinning"]["requested"],
                str(c.get("chunking")), c.get("beam_size"))

    return next((r for r in rows if r["config"]["quantization"] == quantization and key(r) == key(row)
                 and not r.get("profiler")), None)


def wer_increase(row: dict[str, Any], rows: list[dict[str, Any]], quantization: str,
                 allowed: float) -> list[dict[str, Any]]:
    """Per language: how much this row's WER exceeds the reference quantization's, judged against
    `allowed` on the 95 % interval of the difference (harness.analyze.uncertainty: paired on the shared
    utterances): "verdict" met / failed / insufficient data (also without transcripts to judge it by),
    "needed" (words that would settle it), "method", "text". "verdict" None: no reference data."""
    ref = reference_row(row, rows, quantization)
    ref_langs = ref["metrics"].get("languages", {}) if ref is not None and ref["status"] == "ok" else {}
    out = []
    for lang, stats in sorted(row["metrics"].get("languages", {}).items()):
        line: dict[str, Any] = {"lang": lang, "wer": stats.get("wer"), "reference_wer": ref_langs.get(lang, {}).get("wer"),
                                "reference_run_id": ref["run_id"] if ref is not None else None, "increase": None,
                                "ci": None, "verdict": None, "method": None, "needed": None, "text": "no reference data"}
        if lang in ref_langs:
            d = uncertainty.row_difference(ref, row, lang)
            if d["method"] == "none":
                line.update(verdict="insufficient data", text=d["note"])
            else:
                judged = uncertainty.budget_verdict(d, allowed)
                line.update(increase=d["increase"], ci=list(d["ci"]), method=d["method"], **judged,
                            text=_increase_text(d, judged, allowed))
        out.append(line)
    return out


def _increase_text(d: dict[str, Any], judged: dict[str, Any], allowed: float) -> str:
    """"+1.2 points, 95 % CI [-0.5, +4.0] (paired on 10 shared utterances, 84 words): insufficient data
    for at most +2.0; about 1,900 words in all would settle it (met, if the increase stayed where it is)"."""
    low, high = d["ci"]
    text = (f"{100 * d['increase']:+.1f} points, 95 % CI [{100 * low:+.1f}, {100 * high:+.1f}] ({d['note']}): "
            f"{judged['verdict']} for at most {100 * allowed:+.1f}")
    needed = judged["needed"]
    if judged["verdict"] == "insufficient data":
        text += (f"; about {needed['total_words']:,} words in all would settle it ({needed['expected_verdict']}, "
                 "if the increase stayed where it is)" if needed["total_words"]
                 else f"; {needed['note']}")
    return text


def _rank_value(metric: registry.Metric, row: dict[str, Any]) -> float:
    """A ranked metric of a row, lower = better (per language: the mean over the row's languages)."""
    if metric.per_language:
        values = [v for lang in row["metrics"].get("languages", {}) if (v := metric.value(row, lang)) is not None]
        value = sum(values) / len(values) if values else None
    else:
        value = metric.value(row)
    if value is None:
        return math.inf
    return value if metric.lower_is_better else -value


def rank_key(row: dict[str, Any]) -> tuple[float, ...]:
    """The order among qualifying configurations (harness.metrics `rank`): peak RSS, p95 latency, mean WER."""
    return tuple(_rank_value(m, row) for m in registry.ranked())


def recommend(rows: list[dict[str, Any]], budgets: dict[str, Any]) -> dict[str, Any]:
    """The recommendation as plain data (what recommendation.json holds)."""
    considered = [r for r in rows if not r.get("profiler")]
    ok = [r for r in considered if r["status"] == "ok"]
    broken = {r["run_id"]: violations(r, budgets, considered) for r in ok}
    keys = {r["run_id"]: rank_key(r) for r in ok}
    feasible = sorted((r for r in ok if not broken[r["run_id"]]), key=lambda r: keys[r["run_id"]])
    chosen, tests, tie = None, {}, None
    if feasible:
        tie_limit = keys[feasible[0]["run_id"]][0] * (1 + RSS_TIE_FRACTION)
        chosen, tests, tie = _choose([r for r in feasible if keys[r["run_id"]][0] <= tie_limit], keys)
        feasible.remove(chosen)
        feasible.insert(0, chosen)
    verdicts = []
    for r in considered:
        if chosen is not None and r["run_id"] == chosen["run_id"]:
            continue
        if r["status"] != "ok":
            first_line = (r.get("reason") or "").splitlines()[0] if r.get("reason") else ""
            verdicts.append({"run_id": r["run_id"], "status": r["status"], "violations": [],
                             "why": f"{r['status']}: {first_line}".rstrip(": ")})
        elif broken[r["run_id"]]:
            verdicts.append({"run_id": r["run_id"], "status": "ok",
                             "violations": [v.to_json() for v in broken[r["run_id"]]],
                             "why": "; ".join(v.describe() for v in broken[r["run_id"]])})
        else:
            assert chosen is not None
            verdicts.append({"run_id": r["run_id"], "status": "ok", "violations": [],
                             "why": _why_not_chosen(keys[r["run_id"]], keys[chosen["run_id"]], tests.get(r["run_id"]),
                                                    tie is not None and r["run_id"] in tie["run_ids"])})
    result: dict[str, Any] = {
        "budgets": budgets,
        "recommended": None if chosen is None else _summary(chosen),
        "tie": tie,
        "feasible": [r["run_id"] for r in feasible],
        "not_chosen": verdicts,
        "closest": None,
    }
    if chosen is None:
        result["closest"] = _closest(ok, broken)
    return result


def _pair(metric: registry.Metric, a: float, b: float, extra_digits: int = 0) -> str:
    """"650.0 vs 350.0 MiB", "1.60 vs 1.40 s", "6.0% vs 4.0%"."""
    if not metric.lower_is_better:
        a, b = -a, -b
    if metric.unit == "fraction":
        return f"{a:.{metric.digits + extra_digits}%} vs {b:.{metric.digits + extra_digits}%}"
    d = metric.digits + extra_digits
    return f"{a:.{d}f} vs {b:.{d}f}" + (f" {metric.unit}" if metric.unit else "")


def _choose(tied: list[dict[str, Any]], keys: dict[str, tuple[float, ...]]
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Among the configurations within 3 % of the least peak RSS: the fastest by p95 latency, unless others'
    warm latencies are indistinguishable from its by compare's timing test; such a tie goes to the lower
    peak RSS, then the lower WER. Returns the chosen row, the test of every other tied row against the
    fastest, and the tie (None when latency decided)."""
    fastest = min(tied, key=lambda r: keys[r["run_id"]][1:])
    latency = registry.ranked()[1]
    tests = {r["run_id"]: compare.timing_difference(fastest, r, latency) for r in tied if r is not fastest}
    same = [fastest, *(r for r in tied if r["run_id"] in tests and tests[r["run_id"]]["verdict"] in INDISTINGUISHABLE)]
    chosen = min(same, key=lambda r: (keys[r["run_id"]][0], *keys[r["run_id"]][2:]))
    if len(same) == 1:
        return chosen, tests, None
    if chosen is not fastest:  # the fastest lost the tie: its test is the chosen one's, seen from its side
        tests[fastest["run_id"]] = tests[chosen["run_id"]]
    losers = [r for r in same if r is not chosen]
    by_memory = all(keys[r["run_id"]][0] > keys[chosen["run_id"]][0] for r in losers)
    rss = registry.ranked()[0]
    evidence = "; ".join(f"{store.short_name(r)} against {store.short_name(fastest)}: {tests[r['run_id']]['detail']}"
                         for r in same if r is not fastest)
    text = (f"{', '.join(store.short_name(r) for r in same)} are indistinguishable on warm latency by the test "
            f"`harness compare` uses ({evidence}); the tie goes to the lower {rss.noun}"
            + ("" if by_memory else ", then the lower WER")
            + f": {store.short_name(chosen)} with {rss.text(keys[chosen['run_id']][0], 1)} ("
            + "; ".join(f"{store.short_name(r)} {rss.text(keys[r['run_id']][0], 1)}" for r in losers) + ")")
    return chosen, tests, {"run_ids": [r["run_id"] for r in losers], "decided_by": "memory" if by_memory else "memory, then WER",
                           "text": text}


def _why_not_chosen(a: tuple[float, ...], b: tuple[float, ...], test: dict[str, Any] | None = None,
                    indistinguishable: bool = False) -> str:
    """Why a configuration that meets every budget (rank key `a`) lost to the chosen one (`b`); `test`: its
    latency against the fastest of the memory tie (compare's timing test), `indistinguishable`: that test
    could not tell them apart."""
    first, *rest = registry.ranked()
    if a[0] > b[0] * (1 + RSS_TIE_FRACTION):
        more = a[0] - b[0]
        return (f"meets every budget but needs {first.text(more, first.digits + 1)} more {first.noun} "
                f"({_pair(first, a[0], b[0], 1)})")
    same = f"{first.noun} within {RSS_TIE_FRACTION:.0%} ({_pair(first, a[0], b[0], 1)})"
    latency, *after = rest
    if indistinguishable and test is not None:
        tie = f"meets every budget; {same}; warm latency indistinguishable ({test['detail']}), so the tie goes to"
        if a[0] > b[0]:
            return f"{tie} memory: more {first.noun} ({_pair(first, a[0], b[0], 1)})"
        wer = after[0]
        return f"{tie} memory, then WER: same {first.noun}, higher {wer.noun} ({_pair(wer, a[2], b[2])})"
    for i, metric in enumerate(rest, start=1):
        if a[i] > b[i] or i == len(rest):
            worse = "slower" if metric.unit == "s" else "higher" if metric.lower_is_better else "lower"
            tied = "".join(f" and {m.noun}" for m in rest[:i - 1])
            significant = (f", significantly: {test['detail']}" if metric is latency and test is not None
                           and test["verdict"] == "worse" else "")
            return f"meets every budget; {same}{tied}, {worse} {metric.noun} ({_pair(metric, a[i], b[i])}){significant}"
    return f"meets every budget; {same}"


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """The recommended configuration: its settings, every run-level budget metric, its languages, and
    what its measurement is valid for (the longest request measured: harness.analyze.envelope)."""
    return {"run_id": row["run_id"], "config": row["config"],
            "metrics": {m.name: m.value(row) for m in registry.budgetable(per_language=False)},
            "languages": row["metrics"].get("languages", {}), "envelope": envelope(row)}


def _closest(ok: list[dict[str, Any]], broken: dict[str, list[Violation]]) -> dict[str, Any] | None:
    """When nothing qualifies: the configuration nearest to qualifying and the budget it misses by least."""
    if not ok:
        return None

    def distance(r: dict[str, Any]) -> tuple[int, float]:
        vs = broken[r["run_id"]]
        return (sum(math.isinf(v.excess) for v in vs), sum(v.excess for v in vs if not math.isinf(v.excess)))

    best = min(ok, key=distance)
    nearest = min(broken[best["run_id"]], key=lambda v: v.excess)
    return {"run_id": best["run_id"], "violations": [v.to_json() for v in broken[best["run_id"]]],
            "budget": nearest.budget, "value": nearest.value, "limit": nearest.limit,
            "text": f"{best['run_id']} is closest: it misses {len(broken[best['run_id']])} budget(s); "
                    f"nearest to being met: {nearest.describe()}"}
