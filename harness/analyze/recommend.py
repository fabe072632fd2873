"""Budgets -> the smallest configuration that meets them, and why every other one was not chosen.

Pure functions over result rows. Among `ok` rows, a configuration qualifies when it meets every budget
(`peak_rss_mb`, `rtf`, latencies, per-language `wer` / `cer`; a language with a budget but no data
does not meet it). "Smallest" = lowest peak RSS (within 3 %: a tie); ties go to lower p95 latency, then lower WER.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import UserError
from harness.plan.scenario import BUDGET_PER_LANGUAGE, BUDGET_SCALARS, BUDGET_WER_INCREASE

# Peak RSS of one configuration varies between runs by a few percent (allocator arenas, thread
# start-up); peaks within 3 % of the lowest count as a tie, decided by p95 latency, then WER.
RSS_TIE_FRACTION = 0.03


@dataclass(frozen=True)
class Violation:
    budget: str  # "peak_rss_mb", "wer.pt", ...
    limit: float
    value: float | None  # None: no data (e.g. no Portuguese samples transcribed)

    @property
    def excess(self) -> float:
        """How far over the limit, as a fraction of the limit (inf when there is no data)."""
        if self.value is None:
            return math.inf
        return (self.value - self.limit) / self.limit if self.limit else math.inf

    def describe(self) -> str:
        if self.value is None:
            return f"{self.budget}: no data (budget {_fmt(self.budget, self.limit)})"
        over = self.value - self.limit
        over_text = f"{over * 100:.1f} points" if self.budget.startswith(("wer", "cer")) else _fmt(self.budget, over)
        return (f"{self.budget} {_fmt(self.budget, self.value)} > {_fmt(self.budget, self.limit)} "
                f"(over by {over_text}, {self.excess:+.0%})")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "excess": None if math.isinf(self.excess) else round(self.excess, 4),
                "text": self.describe()}


def _fmt(budget: str, value: float) -> str:
    if budget.startswith("wer_increase"):
        return f"{value * 100:+.1f} points"
    if budget.startswith(("wer", "cer")):
        return f"{value * 100:.1f} %"
    if budget.endswith("_mb"):
        return f"{value:.0f} MiB"
    if budget.endswith("_s"):
        return f"{value:.2f} s"
    return f"{value:.3f}"


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
        if metric in BUDGET_PER_LANGUAGE and lang in LANGUAGES:
            if value > 1:
                raise UserError(f"--budget {item!r}: {metric} is a fraction (0.2 = 20 %)")
            merged.setdefault(metric, {})[lang] = value
        elif metric in BUDGET_SCALARS and not lang:
            merged[metric] = value
        else:
            allowed = ", ".join(BUDGET_SCALARS) + ", wer.LANG, cer.LANG"
            raise UserError(f"--budget {item!r}: unknown budget {key!r}; allowed: {allowed}")
    return merged


def violations(row: dict[str, Any], budgets: dict[str, Any], rows: list[dict[str, Any]] = ()) -> list[Violation]:
    """Budgets an `ok` row breaks (`rows`: the whole run, for comparisons between configurations)."""
    m = row["metrics"]
    found = []
    for budget, limit in flatten_budgets({k: v for k, v in budgets.items() if k != BUDGET_WER_INCREASE}).items():
        metric, _, lang = budget.partition(".")
        value = m.get("languages", {}).get(lang, {}).get(metric) if lang else m.get(metric)
        if value is None or value > limit:
            found.append(Violation(budget, limit, value))
    if BUDGET_WER_INCREASE in budgets:
        spec = budgets[BUDGET_WER_INCREASE]
        for comparison in wer_increase(row, rows, spec["quantization"]):
            if comparison["increase"] is None or comparison["increase"] > spec["max"]:
                found.append(Violation(f"wer_increase_vs_{spec['quantization']}.{comparison['lang']}",
                                       spec["max"], comparison["increase"]))
    return found


def reference_row(row: dict[str, Any], rows: list[dict[str, Any]], quantization: str) -> dict[str, Any] | None:
    """The row measuring the same configuration at another quantization."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        c = r["config"]
        return (c["backend"], c["model"], c["threads"], c["cpu_pinning"]["requested"],
                str(c.get("chunking")), c.get("beam_size"))

    return next((r for r in rows if r["config"]["quantization"] == quantization and key(r) == key(row)
                 and not r.get("profiler")), None)


def wer_increase(row: dict[str, Any], rows: list[dict[str, Any]], quantization: str) -> list[dict[str, Any]]:
    """Per language: this row's WER minus the reference quantization's (None: no reference data)."""
    ref = reference_row(row, rows, quantization)
    ref_langs = ref["metrics"].get("languages", {}) if ref is not None and ref["status"] == "ok" else {}
    out = []
    for lang, stats in sorted(row["metrics"].get("languages", {}).items()):
        ref_wer = ref_langs.get(lang, {}).get("wer")
        out.append({"lang": lang, "wer": stats.get("wer"), "reference_wer": ref_wer,
                    "reference_run_id": ref["run_id"] if ref is not None else None,
                    "increase": None if ref_wer is None or stats.get("wer") is None else stats["wer"] - ref_wer})
    return out


def _mean_wer(row: dict[str, Any]) -> float:
    wers = [s["wer"] for s in row["metrics"].get("languages", {}).values() if s.get("wer") is not None]
    return sum(wers) / len(wers) if wers else math.inf


def rank_key(row: dict[str, Any]) -> tuple[float, float, float]:
    m = row["metrics"]
    return (m.get("peak_rss_mb") or math.inf, m.get("latency_p95_s") or math.inf, _mean_wer(row))


def recommend(rows: list[dict[str, Any]], budgets: dict[str, Any]) -> dict[str, Any]:
    """The recommendation as plain data (what recommendation.json holds)."""
    considered = [r for r in rows if not r.get("profiler")]
    ok = [r for r in considered if r["status"] == "ok"]
    broken = {r["run_id"]: violations(r, budgets, considered) for r in ok}
    feasible = sorted((r for r in ok if not broken[r["run_id"]]), key=rank_key)
    chosen = None
    if feasible:
        tie_limit = feasible[0]["metrics"]["peak_rss_mb"] * (1 + RSS_TIE_FRACTION)
        tied = [r for r in feasible if r["metrics"]["peak_rss_mb"] <= tie_limit]
        chosen = min(tied, key=lambda r: rank_key(r)[1:])
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
                             "why": _why_not_chosen(r, chosen)})
    result: dict[str, Any] = {
        "budgets": budgets,
        "recommended": None if chosen is None else _summary(chosen),
        "feasible": [r["run_id"] for r in feasible],
        "not_chosen": verdicts,
        "closest": None,
    }
    if chosen is None:
        result["closest"] = _closest(ok, broken)
    return result


def _why_not_chosen(row: dict[str, Any], chosen: dict[str, Any]) -> str:
    a, b = rank_key(row), rank_key(chosen)
    if a[0] > b[0] * (1 + RSS_TIE_FRACTION):
        return f"meets every budget but needs {a[0] - b[0]:.1f} MiB more peak RSS ({a[0]:.1f} vs {b[0]:.1f} MiB)"
    same = f"peak RSS within {RSS_TIE_FRACTION:.0%} ({a[0]:.1f} vs {b[0]:.1f} MiB)"
    if a[1] > b[1]:
        return f"meets every budget; {same}, slower p95 latency ({a[1]:.2f} vs {b[1]:.2f} s)"
    return f"meets every budget; {same} and p95 latency, higher WER ({a[2]:.1%} vs {b[2]:.1%})"


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    m = row["metrics"]
    return {"run_id": row["run_id"], "config": row["config"],
            "metrics": {k: m.get(k) for k in ("peak_rss_mb", "rss_after_load_mb", "load_s", "first_latency_s",
                                              "latency_p50_s", "latency_p95_s", "rtf")},
            "languages": m.get("languages", {})}


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
