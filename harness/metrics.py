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
    optional: bool = False  # only measured in some setups (a cgroup, a fit, a CPU limit): a table given its
    # rows leaves the column out when no row has it (summary.csv keeps every column)
    # A bound of another per-language metric's 95 % bootstrap interval, held in the row as NAME_ci =
    # [low, high]: ("wer", 0) is wer_ci[0]. Tables show the interval beside its metric (`bounds`).
    interval: tuple[str, int] | None = None

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
            stats = ((m.get("languages") or {}).get(lang) or {}) if lang else {}
            if self.interval is not None:
                pair = stats.get(f"{self.interval[0]}_ci")
                return pair[self.interval[1]] if pair else None
            return stats.get(self.name)
        if self.position != RUN:
            return (m.get(self.position) or {}).get(self.name)
        return m.get(self.name)

    def cell(self, value: Any, interval: tuple[Any, Any] | None = None) -> str:
        """A table cell (the unit is in the header, except for percentages): 350, 1.42, 0.330, 4.3 %;
        with its interval: 14.2 % [6.0, 23.7]."""
        if _missing(value):
            return "-"
        scale, unit = (100, " %") if self.unit == "fraction" else (1, "")
        text = f"{scale * float(value):.{self.digits}f}{unit}"
        if interval is not None and not any(_missing(v) for v in interval):
            text += " [" + ", ".join(f"{scale * float(v):.{self.digits}f}" for v in interval) + "]"
        return text

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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _m(name: str, label: str, noun: str, unit: str, description: str, *show: str, **kw: Any) -> Metric:
    return Metric(name, label, noun, unit, description, show=frozenset(show), **kw)


# Order matters: it is the column order of every table and of summary.csv.
METRICS: tuple[Metric, ...] = (
    _m("peak_rss_mb", "peak RSS MiB", "peak RSS", "MiB",
       "kernel high-water mark of the worker's resident memory (ru_maxrss from os.wait4)",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND,
       budget=True, compare=MEMORY, search=SEARCH_MEMORY, stop=WATCHDOG, rank=1, digits=0),
    _m("probe_peak_rss_mb", "probe peak MiB", "peak RSS on the max_audio_s probe", "MiB",
       "largest RSS sampled while the max_audio_s probe (the longest request, harness.data.probe) was transcribed; "
       "peak_rss_mb includes it", SUMMARY, digits=0),
    _m("rss_after_load_mb", "RSS after load MiB", "RSS after load", "MiB", "resident memory once the model is loaded",
       SUMMARY, budget=True, digits=0),
    # The figures a pod is judged by (README "Sizing a pod"): what cannot be reclaimed, what the cgroup
    # was charged, what the kubelet calls the working set, and the smallest limit that really works.
    _m("peak_anon_mb", "peak anon MiB", "peak anonymous RSS", "MiB",
       "largest anonymous resident memory seen (RssAnon: the part the kernel cannot reclaim)",
       SUMMARY, REPORT, budget=True, digits=0, optional=True),
    _m("cgroup_peak_mb", "cgroup peak MiB", "cgroup peak charge", "MiB",
       "the worker cgroup's peak charge, page cache included (memory.peak / memory.max_usage_in_bytes)",
       SUMMARY, REPORT, digits=0, optional=True),
    _m("working_set_peak_mb", "working set MiB", "peak working set", "MiB",
       "largest working set as the kubelet computes it: cgroup usage minus inactive file pages",
       CONSOLE, SUMMARY, REPORT, TREND, budget=True, digits=0, optional=True),
    _m("min_limit_mb", "fitted limit MiB", "fitted memory limit", "MiB",
       "harness fit: the smallest kernel-enforced memory limit with no OOM kill and p95 within 10 % of unlimited",
       CONSOLE, SUMMARY, REPORT, MARKDOWN, TREND, position="fit", budget=True, compare=MEMORY, digits=0, optional=True),
    _m("throttled_s", "throttled s", "CFS throttled time", "s",
       "time the kernel held the worker's cgroup back at its CPU quota (cpu_limit) while it ran",
       SUMMARY, REPORT, position="cpu_throttling", optional=True),
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
    *(_m(f"{of}_ci_{end}", f"{of.upper()} CI {end}", f"{of.upper()} 95 % CI {end} bound", "fraction",
         f"{'lower' if i == 0 else 'upper'} bound of the 95 % bootstrap confidence interval of {of.upper()} "
         "(10,000 resamples of whole utterances)", SUMMARY, position=LANGUAGE, interval=(of, i), digits=1)
      for of in ("wer", "cer") for i, end in enumerate(("low", "high"))),
    _m("flagged", "flagged", "flagged utterances", "",
       "utterances whose transcript looks invented: repetition loop, over-generation, text past the audio's end "
       "(harness.analyze.hallucination)", SUMMARY, REPORT, position=LANGUAGE, digits=0),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
assert len(BY_NAME) == len(METRICS), "metric names must be unique (they are columns)"
assert all(m.show <= set(PLACES) and m.compare in (*JUDGES, None) for m in METRICS)
assert all((m.compare == NOISE) == (m.limit is not None) for m in METRICS), "a NOISE metric needs its limit"


def get(name: str) -> Metric | None:
    return BY_NAME.get(name)


def bounds(metric: Metric) -> tuple[Metric, Metric] | None:
    """The metrics holding `metric`'s interval (wer -> wer_ci_low, wer_ci_high), or None."""
    found = sorted((m for m in METRICS if m.interval is not None and m.interval[0] == metric.name),
                   key=lambda m: m.interval[1] if m.interval else 0)
    return (found[0], found[1]) if len(found) == 2 else None


def interval(metric: Metric, row: dict[str, Any], lang: str | None = None) -> tuple[Any, Any] | None:
    """`metric`'s interval in a row (None when it has none)."""
    b = bounds(metric)
    return (b[0].value(row, lang), b[1].value(row, lang)) if b else None


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


def columns(place: str, languages: list[str], rows: list[dict[str, Any]] | None = None) -> list[tuple[Metric, str | None, str]]:
    """The metric columns of a table at `place`: (metric, language or None, column name), run-level ones
    first in registry order, then per language (sorted) its metrics: wer_en, cer_en, wer_pt, ...
    Given the table's `rows`, an optional metric no row has is left out."""
    shown = [m for m in shown_in(place) if not m.optional or rows is None
             or any(m.value(r, lang) is not None for r in rows for lang in (languages if m.per_language else [None]))]
    out = [(m, None, m.name) for m in shown if not m.per_language]
    out += [(m, lang, f"{m.name}_{lang}") for lang in languages for m in shown if m.per_language]
    return out
