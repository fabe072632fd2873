"""The metric registry: every figure a row carries that the harness reads, in one place.

For each metric: where it sits in a row, its unit and direction, whether a scenario can budget it, how
`harness compare` judges it, where it is shown, and what the budget-aware search may assume about it.
Budget validation, the recommendation, the search, compare, the console table, summary.csv, the
report's configuration table, the trend index and the DataFrame (`harness.load`) all read this table:
adding a metric is the worker (or the row builder, harness/measure/record.py) plus one entry here.

Import-free on purpose (standard library only): the plan, measure and analyze stages all read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Where a metric sits in a row (`Metric.position`): RUN = row["metrics"][name]; LANGUAGE =
# row["metrics"]["languages"][LANG][name]; any other value names a section: row["metrics"][SECTION][name].
RUN, LANGUAGE = "run", "language"

# Where a metric is shown (`Metric.show`).
CONSOLE = "console"  # the results table printed at the end of `harness run`
SUMMARY = "summary"  # summary.csv (per-language metrics as NAME_LANG columns)
REPORT = "report"  # the configuration table of index.html
MARKDOWN = "markdown"  # the compact table of report.md
TREND = "trend"  # the trend index (reports/index.html): a chart over time, and the table for run-level ones
PLACES = (CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND)

# How `harness compare` judges a metric (`Metric.compare`; harness.analyze.compare has a judge per kind).
MEMORY = "memory"  # worse only past both a relative and an absolute margin (policy section `peak_rss`)
TIMING = "timing"  # ratio of medians of the per-timing values and a Mann-Whitney U test (policy section `latency`)
ACCURACY = "accuracy"  # absolute points, per language (policy section `wer`)
NOISE = "noise"  # not judged: a share of the machine others took while the row was measured; past
# `limit` (or the policy's `latency.max_NAME`) the row's timings are not evidence
JUDGES = (MEMORY, TIMING, ACCURACY, NOISE)

# What `harness run --search` may assume (`Metric.search`), at the same backend, threads, pinning,
# chunking and beam size:
SEARCH_MEMORY = "memory"  # a larger model or a wider quantization never needs less
SEARCH_SPEED = "speed"  # at the same quantization, a larger model is never faster

# Who can stop a run early once its budget is certain to break (`Metric.stop`).
WORKER = "worker"  # the worker child, from the warm timings so far (harness.child.worker.check_stop_rules)
WATCHDOG = "watchdog"  # the runner's memory sampler, like the memory cap (harness.measure.runner)


@dataclass(frozen=True)
class Metric:
    name: str  # its key in the row, a column of summary.csv and of the DataFrame (unique)
    label: str  # column header in tables: "peak RSS MiB"
    noun: str  # in sentences and chart titles: "peak RSS"
    unit: str  # "MiB", "s", "" (a ratio), "fraction" (shown as %; a budget's excess in points)
    description: str
    position: str = RUN  # RUN, LANGUAGE or a section name (e.g. "stream")
    lower_is_better: bool = True
    budget: bool = False  # a scenario's `budgets:` (and --budget) may set a limit on it
    compare: str | None = None  # one of JUDGES, or None: not judged
    compare_key: str | None = None  # its name among compare's verdicts, when not `name`
    limit: float | None = None  # NOISE: the share past which timings are suspect (compare's default, console mark)
    warm_timing: bool = False  # computed from the warm timed runs: suspect when a NOISE metric passes its limit
    show: frozenset[str] = frozenset()  # a subset of PLACES
    search: str | None = None  # SEARCH_MEMORY / SEARCH_SPEED: the monotonicity `--search` may assume
    stop: str | None = None  # WORKER / WATCHDOG: a run can be stopped once its budget is certain to break
    rank: int | None = None  # the recommendation's order among qualifying configurations (1 first)
    digits: int = 2  # decimals shown (for "fraction": of the percentage)

    @property
    def per_language(self) -> bool:
        return self.position == LANGUAGE

    @property
    def section(self) -> str | None:
        return None if self.position in (RUN, LANGUAGE) else self.position

    @property
    def verdict_key(self) -> str:
        return self.compare_key or self.name

    def value(self, row: dict[str, Any], lang: str | None = None) -> Any:
        """This metric in a row (for a per-language one, in language `lang`); None when absent."""
        m = row.get("metrics") or {}
        if self.position == LANGUAGE:
            return (((m.get("languages") or {}).get(lang) or {}).get(self.name)) if lang else None
        if self.position != RUN:
            return (m.get(self.position) or {}).get(self.name)
        return m.get(self.name)

    def cell(self, value: Any) -> str:
        """A table cell (the unit is in the header, except for percentages): 350, 1.42, 0.330, 4.3 %."""
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            return "-"
        if self.unit == "fraction":
            return f"{100 * float(value):.{self.digits}f} %"
        return f"{float(value):.{self.digits}f}"

    def text(self, value: float, digits: int | None = None) -> str:
        """A value in a sentence, with its unit: 720 MiB, 3.50 s, 0.500, 12.0 %."""
        d = self.digits if digits is None else digits
        if self.unit == "fraction":
            return f"{100 * value:.{d}f} %"
        return f"{value:.{d}f}" + (f" {self.unit}" if self.unit else "")

    def title(self, lang: str | None = None) -> str:
        """A chart title: "peak RSS (MiB)", "WER en (fraction)", "real-time factor"."""
        return self.noun + (f" {lang}" if lang else "") + (f" ({self.unit})" if self.unit else "")

    def header(self, lang: str | None = None) -> str:
        """A column header: "p95 s", "WER en"."""
        return self.label + (f" {lang}" if lang else "")


def _m(name: str, label: str, noun: str, unit: str, description: str, *show: str, **kw: Any) -> Metric:
    return Metric(name, label, noun, unit, description, show=frozenset(show), **kw)


# Order matters: it is the column order of every table and of summary.csv.
METRICS: tuple[Metric, ...] = (
    _m("peak_rss_mb", "peak RSS MiB", "peak RSS", "MiB",
       "kernel high-water mark of the worker's resident memory (ru_maxrss from os.wait4)",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND,
       budget=True, compare=MEMORY, search=SEARCH_MEMORY, stop=WATCHDOG, rank=1, digits=0),
    _m("rss_after_load_mb", "RSS after load MiB", "RSS after load", "MiB", "resident memory once the model is loaded",
       SUMMARY, budget=True, digits=0),
    _m("load_s", "load s", "load time", "s", "model load time", CONSOLE, SUMMARY, REPORT, budget=True),
    _m("first_latency_s", "cold s", "cold latency", "s", "the first transcription after load (cold)",
       CONSOLE, SUMMARY, REPORT, budget=True),
    _m("latency_p50_s", "p50 s", "p50 latency", "s", "median warm latency per request",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, budget=True, warm_timing=True, search=SEARCH_SPEED),
    _m("latency_p95_s", "p95 s", "p95 latency", "s", "95th percentile of warm latency per request",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND, budget=True, warm_timing=True, search=SEARCH_SPEED, stop=WORKER,
       # compare judges the whole distribution of per-timing warm latencies (median ratio + U test)
       compare=TIMING, compare_key="latency", rank=2),
    _m("rtf", "RTF", "real-time factor", "", "warm processing seconds / audio seconds",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND, budget=True, warm_timing=True, search=SEARCH_SPEED, stop=WORKER,
       compare=TIMING, digits=3),
    _m("chunk_latency_p95_s", "piece p95 s", "per-piece p95 latency", "s",
       "stream mode: 95th percentile of compute time per piece", SUMMARY, position="stream"),
    _m("lag_max_s", "largest lag s", "largest lag", "s",
       "stream mode: largest delay of a piece's text behind its audio", SUMMARY, position="stream"),
    _m("final_latency_p95_s", "final p95 s", "final-transcript p95 latency", "s",
       "stream mode: end of the audio to the final transcript, 95th percentile", SUMMARY, position="stream"),
    _m("cpu_steal_fraction", "CPU steal", "CPU steal", "fraction",
       "share of the machine's CPU time the hypervisor took while the worker ran", compare=NOISE, limit=0.05, digits=1),
    _m("foreign_cpu_fraction", "foreign load", "foreign CPU load", "fraction",
       "share of the machine's CPU time other processes used while the worker ran",
       SUMMARY, REPORT, compare=NOISE, limit=0.05, digits=1),
    _m("wer", "WER", "WER", "fraction", "corpus word error rate (normalized; total errors / reference words)",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND, position=LANGUAGE, budget=True, compare=ACCURACY, rank=3, digits=1),
    _m("cer", "CER", "CER", "fraction", "corpus character error rate (normalized)",
       SUMMARY, position=LANGUAGE, budget=True, digits=1),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
assert len(BY_NAME) == len(METRICS), "metric names must be unique (they are columns)"
assert all(m.show <= set(PLACES) and m.compare in (*JUDGES, None) for m in METRICS)
assert all((m.compare == NOISE) == (m.limit is not None) for m in METRICS), "a NOISE metric needs its limit"


def get(name: str) -> Metric | None:
    return BY_NAME.get(name)


def shown_in(place: str) -> list[Metric]:
    return [m for m in METRICS if place in m.show]


def budgetable(per_language: bool | None = None) -> list[Metric]:
    """Metrics a budget may name (all, or only the per-language / only the other ones)."""
    return [m for m in METRICS if m.budget and (per_language is None or m.per_language == per_language)]


def judged(kind: str) -> list[Metric]:
    """The metrics `harness compare` judges with `kind`'s judge."""
    return [m for m in METRICS if m.compare == kind]


def searched(assumption: str) -> list[Metric]:
    """The metrics `--search` may assume `assumption` (SEARCH_MEMORY / SEARCH_SPEED) for."""
    return [m for m in METRICS if m.search == assumption]


def stopped_by(who: str) -> list[Metric]:
    return [m for m in METRICS if m.stop == who]


def ranked() -> list[Metric]:
    """The recommendation's order among configurations that meet every budget."""
    return sorted((m for m in METRICS if m.rank is not None), key=lambda m: m.rank or 0)


def noisy(row: dict[str, Any]) -> list[tuple[Metric, float]]:
    """The NOISE metrics of a row past their limit (its warm timings are suspect)."""
    return [(m, v) for m in judged(NOISE) if isinstance(v := m.value(row), (int, float)) and m.limit is not None
            and v > m.limit]


def columns(place: str, languages: list[str]) -> list[tuple[Metric, str | None, str]]:
    """The metric columns of a table at `place`: (metric, language or None, column name), run-level ones
    first in registry order, then per language (sorted) its metrics: wer_en, cer_en, wer_pt, ..."""
    shown = shown_in(place)
    out = [(m, None, m.name) for m in shown if not m.per_language]
    out += [(m, lang, f"{m.name}_{lang}") for lang in languages for m in shown if m.per_language]
    return out
