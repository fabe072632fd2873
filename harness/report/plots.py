"""Report figures (matplotlib, Agg): each function takes result rows and returns PNG bytes; and each
run's memory timeline as a small inline SVG (`sparkline_svg`).

Built to stay fast and readable with hundreds of configurations: one scatter call per series, small
multiples of memory timelines only up to MAX_SMALL_MULTIPLES runs (beyond, one overlay figure drawn as
a single LineCollection, plus each run's sparkline in its details), and the latency distributions of at
most MAX_LATENCY_ROWS configurations.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from harness import store  # noqa: E402

MAX_SMALL_MULTIPLES = 16  # memory timelines as one subplot each up to this many runs; an overlay beyond
MAX_LATENCY_ROWS = 30  # latency distributions: the configurations with the lowest p95 (and the recommended one)
MAX_LEGEND_ENTRIES = 20
FAILED = ("oom", "error", "timeout", "over_budget")  # highlighted in the timeline overlay


def figures(rows: list[dict[str, Any]], languages: list[str], budgets: dict[str, Any],
            recommended: str | None) -> list[dict[str, str]]:
    """Every figure of the report, in order: [{"title", "png" (base64)}]. `rows`: the measured ones."""
    out = [{"title": f"Peak RSS vs WER ({lang})", "png": rss_vs_wer(rows, lang, budgets, recommended)} for lang in languages]
    out.append({"title": "RTF vs threads", "png": rtf_vs_threads(rows, budgets)})
    shown, total = latency_selection(rows, recommended)
    out.append({"title": "Warm latency distributions" + ("" if len(shown) == total else f" ({_latency_subset(shown, total)})"),
                "png": latency_distributions(rows, budgets, recommended)})
    if series := length_series(rows):
        out.append({"title": "Peak RSS and RTF vs audio length, per configuration", "png": by_audio_length(series)})
    if fits := fitted(rows):
        more = f" (the first {MAX_SMALL_MULTIPLES} of {len(fits)})" if len(fits) > MAX_SMALL_MULTIPLES else ""
        out.append({"title": f"Memory limit fits{more}: p95 latency against the kernel-enforced limit",
                    "png": fit_curves(fits)})
    timelines = [r for r in rows if _timeline(r) is not None]
    if timelines and len(timelines) <= MAX_SMALL_MULTIPLES:
        out.append({"title": "Memory timelines", "png": memory_timelines(timelines)[0]})
    elif timelines:
        out.append({"title": f"Memory timelines of all {len(timelines)} runs, overlaid (each run's own timeline is in "
                             "its details under Runs)", "png": memory_overlay(timelines, budgets, recommended)})
    return [{"title": f["title"], "png": base64.b64encode(f["png"]).decode("ascii")} for f in out]


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (lower x, lower y), sorted by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def rss_vs_wer(rows: list[dict[str, Any]], lang: str, budgets: dict[str, Any], recommended: str | None) -> bytes:
    ok = [r for r in rows if r["status"] == "ok" and r["metrics"].get("languages", {}).get(lang, {}).get("wer") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    points = [(r["metrics"]["peak_rss_mb"], 100 * r["metrics"]["languages"][lang]["wer"]) for r in ok]
    plain = [p for r, p in zip(ok, points) if r["run_id"] != recommended]
    star = [p for r, p in zip(ok, points) if r["run_id"] == recommended]
    bars = [(x, y, 100 * ci[0], 100 * ci[1]) for r, (x, y) in zip(ok, points)
            if (ci := r["metrics"]["languages"][lang].get("wer_ci"))]
    if bars:  # the 95 % bootstrap interval of each WER
        below, above = [max(0, y - lo) for _, y, lo, _ in bars], [max(0, hi - y) for _, y, _, hi in bars]
        ax.errorbar([b[0] for b in bars], [b[1] for b in bars], yerr=[below, above], fmt="none",
                    ecolor="tab:gray", elinewidth=1, capsize=3, zorder=2, label="95 % confidence interval")
    if plain:
        ax.scatter([x for x, _ in plain], [y for _, y in plain], s=36, marker="o", zorder=3, color="tab:blue")
    if star:
        ax.scatter([x for x, _ in star], [y for _, y in star], s=160, marker="*", zorder=4, color="tab:green",
                   label="recommended")
    labelled: set[str] = set()
    for r, (x, y) in zip(ok, points):
        # Thread and pinning variants of one model+quantization sit on top of each other: label once.
        group = f"{r['config']['model']} {r['config']['quantization']}"
        if group not in labelled:
            labelled.add(group)
            ax.annotate(group, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front(points)
    if len(front) > 1:
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:orange",
                label="Pareto front (less memory, lower WER)")
    if budgets.get("peak_rss_mb"):
        ax.axvline(budgets["peak_rss_mb"], color="tab:red", linestyle="--", label=f"peak RSS budget {budgets['peak_rss_mb']:.0f} MiB")
    if budgets.get("wer", {}).get(lang) is not None:
        ax.axhline(100 * budgets["wer"][lang], color="tab:purple", linestyle="--", label=f"WER {lang} budget {100 * budgets['wer'][lang]:.0f} %")
    ax.set_xlabel("peak RSS (MiB)")
    ax.set_ylabel(f"WER {lang} (%)")
    ax.set_title(f"Peak memory vs accuracy ({lang})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def rtf_vs_threads(rows: list[dict[str, Any]], budgets: dict[str, Any]) -> bytes:
    ok = [r for r in rows if r["status"] == "ok" and r["metrics"].get("rtf") is not None]
    groups: dict[tuple[str, str, bool], list[tuple[int, float]]] = {}
    for r in ok:
        c = r["config"]
        key = (c["model"], c["quantization"], c["cpu_pinning"]["requested"] != "none")
        groups.setdefault(key, []).append((c["threads"], r["metrics"]["rtf"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = sorted({(m, q) for m, q, _ in groups})
    for i, (model, quant) in enumerate(series):
        for pinned in (False, True):
            pts = sorted(groups.get((model, quant, pinned), []))
            if pts:
                ax.plot([t for t, _ in pts], [v for _, v in pts], marker="o", color=colors[i % len(colors)],
                        linestyle="-" if pinned else "--", label=f"{model} {quant} {'pinned' if pinned else 'unpinned'}")
    if budgets.get("rtf"):
        ax.axhline(budgets["rtf"], color="tab:red", linestyle=":", label=f"RTF budget {budgets['rtf']:g}")
    threads = sorted({r["config"]["threads"] for r in ok})
    ax.set_xticks(threads or [1])
    ax.set_xlabel("threads")
    ax.set_ylabel("real-time factor (processing s / audio s, lower is faster)")
    ax.set_title("Real-time factor vs threads (solid: pinned, dashed: unpinned)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _number(value: Any) -> float | None:
    """A finite number from a row's timeline (not validated by the contract), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _floats(values: Any) -> np.ndarray:
    """A timeline's list as float64 (anything that is not a number becomes NaN)."""
    if not isinstance(values, list):
        return np.empty(0)
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):  # a stray non-number in a list read from disk
        return np.array([math.nan if (v := _number(x)) is None else v for x in values], dtype=np.float64)


Timeline = tuple[np.ndarray, np.ndarray, dict[str, float]]


def _timeline(row: dict[str, Any]) -> Timeline | None:
    """A row's memory timeline: seconds since start, RSS MiB (finite pairs only, float arrays) and
    {phase: s}; None without one."""
    tl = row.get("timeline")
    if not isinstance(tl, dict):
        return None
    t, mb = _floats(tl.get("t_s")), _floats(tl.get("rss_mb"))
    n = min(len(t), len(mb))
    t, mb = t[:n], mb[:n]
    keep = np.isfinite(t) & np.isfinite(mb)
    if not keep.all():
        t, mb = t[keep], mb[keep]
    if not len(t):
        return None
    phases = tl.get("phases") if isinstance(tl.get("phases"), dict) else {}
    marks = {str(k): v for k, v in ((k, _number(v)) for k, v in phases.items()) if v is not None}
    return t, mb, marks


def _cap(row: dict[str, Any]) -> float | None:
    cap = _number(row["config"].get("memory_cap_mb"))
    return cap if cap and cap > 0 else None


def memory_timelines(rows: list[dict[str, Any]]) -> list[bytes]:
    """Small multiples: sampled RSS over time per run, load and transcription phases, the cap. For up to
    MAX_SMALL_MULTIPLES runs (memory_overlay draws more); one figure per MAX_SMALL_MULTIPLES runs."""
    with_data = [(r, tl) for r in rows if (tl := _timeline(r)) is not None]
    figures = []
    for start in range(0, len(with_data), MAX_SMALL_MULTIPLES):
        chunk = with_data[start:start + MAX_SMALL_MULTIPLES]
        cols = min(4, len(chunk))
        nrows = math.ceil(len(chunk) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.5 * nrows), squeeze=False)
        for ax in axes.flat[len(chunk):]:
            ax.set_visible(False)
        for ax, (r, (t, mb, phases)) in zip(axes.flat, chunk):
            ax.plot(t, mb, color="tab:blue", linewidth=1)
            if "loaded" in phases:
                ax.axvspan(phases.get("audio_decoded", phases.get("start", 0)), phases["loaded"], color="tab:orange", alpha=0.2, label="model load")
            if "loaded" in phases and "done" in phases:
                ax.axvspan(phases["loaded"], phases["done"], color="tab:green", alpha=0.12, label="transcription")
            if cap := _cap(r):
                ax.axhline(cap, color="tab:red", linestyle="--", linewidth=1, label="memory cap")
            ax.set_title(f"{store.short_name(r)} [{r['status']}]", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("s since start", fontsize=7)
            ax.set_ylabel("RSS MiB", fontsize=7)
        handles, labels = [], []
        for ax in axes.flat[:len(chunk)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle("Memory timeline per configuration (process-tree RSS sampled every 20 ms)", fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
        figures.append(_png(fig))
    return figures


def memory_overlay(rows: list[dict[str, Any]], budgets: dict[str, Any], recommended: str | None) -> bytes:
    """Every run's memory timeline in one axes (a LineCollection each for the ok and the failed runs):
    the recommended configuration and the failures stand out, the memory caps and the peak RSS budget
    are lines across."""
    ok_lines, failed_lines, failed_statuses, chosen = [], [], [], None
    for r in rows:
        tl = _timeline(r)
        if tl is None:
            continue
        if r["run_id"] == recommended:
            chosen = (r, tl)
        elif r["status"] in FAILED:
            failed_lines.append(np.column_stack(tl[:2]))
            failed_statuses.append(r["status"])
        else:
            ok_lines.append(np.column_stack(tl[:2]))
    fig, ax = plt.subplots(figsize=(10, 4.8))
    if ok_lines:
        ax.add_collection(LineCollection(ok_lines, colors="tab:blue", linewidths=0.7, alpha=0.3,
                                         label=f"other runs ({len(ok_lines)})"))
    if failed_lines:
        counts = ", ".join(f"{failed_statuses.count(s)} {s}" for s in FAILED if s in failed_statuses)
        ax.add_collection(LineCollection(failed_lines, colors="tab:red", linewidths=1.1, alpha=0.8, zorder=3,
                                         label=f"failed runs ({counts})"))
    if chosen is not None:
        r, (t, mb, _) = chosen
        ax.plot(t, mb, color="tab:green", linewidth=2.2, zorder=4,
                label=f"recommended: {store.short_name(r)}")
    caps = sorted({cap for r in rows if (cap := _cap(r))})
    for i, cap in enumerate(caps):
        ax.axhline(cap, color="tab:red", linestyle="--", linewidth=0.8, alpha=0.6,
                   label="memory cap" + ("s" if len(caps) > 1 else "") if i == 0 else None)
    if budgets.get("peak_rss_mb"):
        ax.axhline(budgets["peak_rss_mb"], color="tab:purple", linestyle=":", linewidth=1.2,
                   label=f"peak RSS budget {budgets['peak_rss_mb']:.0f} MiB")
    ax.autoscale_view()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("s since the run started")
    ax.set_ylabel("process-tree RSS (MiB)")
    ax.set_title(f"Memory timelines of {len(rows)} runs (RSS sampled every 20 ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)  # below: the lines stay visible
    return _png(fig)


SPARK_WIDTH, SPARK_HEIGHT = 300, 56


def memory_sparkline(row: dict[str, Any]) -> dict[str, str] | None:
    """The run's memory timeline for its details: {"svg": a small inline SVG, "note": what it shows}.

    The SVG holds numbers and fixed text only (it is rendered unescaped; the note is escaped as usual):
    RSS over time from 0 MiB up, the model load (orange) and the transcription (green) shaded, the
    memory cap dashed red. At most the lowest and the highest point per pixel column are kept."""
    tl = _timeline(row)
    if tl is None:
        return None
    t, mb, phases = tl
    cap = _cap(row)
    peak_at = int(np.argmax(mb))
    t_end = max([float(t.max()), *phases.values()]) or 1.0
    top = max(float(mb[peak_at]), cap or 0.0) * 1.08 or 1.0
    w, h = SPARK_WIDTH, SPARK_HEIGHT
    x = np.clip(t / t_end, 0.0, 1.0) * w
    y = h - np.clip(mb / top, 0.0, 1.0) * h
    if len(x) > 2 * w:
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        bounds = [*np.flatnonzero(np.r_[True, np.diff(np.minimum(x.astype(int), w - 1)) != 0]).tolist(), len(x)]  # pixel columns
        keep = set()
        for start, end in zip(bounds, bounds[1:]):
            keep.update((start + int(np.argmin(y[start:end])), start + int(np.argmax(y[start:end]))))
        index = np.array(sorted(keep))
        x, y = x[index], y[index]

    def px(seconds: float) -> float:
        return min(max(seconds / t_end, 0.0), 1.0) * w

    parts = [f'<svg class="spark" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="memory timeline">']
    if "loaded" in phases:
        start = px(phases.get("audio_decoded", phases.get("start", 0.0)))
        loaded = px(phases["loaded"])
        parts.append(f'<rect x="{start:.1f}" y="0" width="{max(loaded - start, 0.0):.1f}" height="{h}" '
                     'fill="#ff7f0e" fill-opacity="0.2"/>')
        if "done" in phases:
            parts.append(f'<rect x="{loaded:.1f}" y="0" width="{max(px(phases["done"]) - loaded, 0.0):.1f}" '
                         f'height="{h}" fill="#2ca02c" fill-opacity="0.12"/>')
    if cap:
        level = h - min(cap / top, 1.0) * h
        parts.append(f'<line x1="0" x2="{w}" y1="{level:.1f}" y2="{level:.1f}" stroke="#d62728" stroke-width="1" '
                     'stroke-dasharray="4 3"/>')
    polyline = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x.tolist(), y.tolist()))
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.2" points="{polyline}"/></svg>')
    note = (f"Memory timeline: {float(t[-1]):.1f} s, peak {float(mb[peak_at]):.0f} MiB at {float(t[peak_at]):.1f} s "
            f"(scale 0 to {top:.0f} MiB); orange: model load, green: transcription"
            + (f", dashed red: memory cap {cap:.0f} MiB" if cap else ""))
    return {"svg": "".join(parts), "note": note}


def latency_selection(rows: list[dict[str, Any]], recommended: str | None,
                      limit: int = MAX_LATENCY_ROWS) -> tuple[list[dict[str, Any]], int]:
    """The configurations the latency figure shows (in their order): every ok one with timings up to
    `limit`, else the `limit` with the lowest p95 and the recommended one; and how many there were."""
    ok = [r for r in rows if r["status"] == "ok" and any(s.get("latency_s") for s in r["samples"])]
    if len(ok) <= limit:
        return ok, len(ok)
    lowest = sorted(ok, key=lambda r: r["metrics"].get("latency_p95_s") or math.inf)[:limit]
    keep = {id(r) for r in lowest} | {id(r) for r in ok if r["run_id"] == recommended}
    return [r for r in ok if id(r) in keep], len(ok)


def _latency_subset(shown: list[dict[str, Any]], total: int) -> str:
    """The figure's subtitle when latency_selection left configurations out."""
    added = len(shown) > MAX_LATENCY_ROWS  # the recommended one, beyond the lowest p95s
    return (f"{len(shown)} of {total} configurations: the {MAX_LATENCY_ROWS} with the lowest p95"
            + (" and the recommended one" if added else ""))


def latency_distributions(rows: list[dict[str, Any]], budgets: dict[str, Any], recommended: str | None = None) -> bytes:
    ok, total = latency_selection(rows, recommended)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 4) + 1.2))
    data = [[x for s in r["samples"] for x in s.get("latency_s", [])] for r in ok]
    if data:
        ax.boxplot(data, orientation="horizontal", showfliers=True, widths=0.6)
        for key, color in (("latency_p50_s", "tab:green"), ("latency_p95_s", "tab:red")):
            ax.plot([_number(r["metrics"].get(key)) or math.nan for r in ok], range(1, len(ok) + 1), linestyle="none",
                    marker="|", color=color, markersize=14)
        ax.set_yticks(range(1, len(ok) + 1), [store.short_name(r) + (" (recommended)" if r["run_id"] == recommended else "")
                                              for r in ok], fontsize=8)
    if budgets.get("latency_p95_s"):
        ax.axvline(budgets["latency_p95_s"], color="tab:red", linestyle="--", label=f"p95 budget {budgets['latency_p95_s']:g} s")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("warm latency per request (s); green tick p50, red tick p95")
    ax.set_title("Warm latency distributions" + ("" if len(ok) == total else f"\n({_latency_subset(ok, total)})"),
                 fontsize=10 if len(ok) < total else None)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def length_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, float]]]:
    """{configuration: [(audio minutes, peak RSS MiB while transcribing it, RTF)]}, for configurations
    measured on samples of several lengths (a memory-versus-audio-length study)."""
    series = {}
    for r in rows:
        points = sorted((s["audio_s"] / 60, s["peak_rss_mb"], sum(s["latency_s"]) / (s["audio_s"] * len(s["latency_s"])))
                        for s in r.get("samples", []) if s.get("peak_rss_mb") is not None and s.get("latency_s"))
        if r["status"] == "ok" and len({round(p[0], 1) for p in points}) >= 3:
            whole = " whole" if r["config"].get("chunking", {}).get("mode", "whole") == "whole" else ""
            series[store.short_name(r) + whole] = points
    return series


def by_audio_length(series: dict[str, list[tuple[float, float, float]]]) -> bytes:
    """Peak RSS and RTF against audio length, one line per configuration (chunking mode)."""
    fig, (mem, speed) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, points in series.items():
        minutes = [p[0] for p in points]
        mem.plot(minutes, [p[1] for p in points], marker="o", label=name)
        speed.plot(minutes, [p[2] for p in points], marker="o", label=name)
    mem.set_ylabel("peak RSS while transcribing (MiB, sampled)")
    speed.set_ylabel("RTF (compute s / audio s)")
    for ax, title in ((mem, "Memory vs audio length"), (speed, "Speed vs audio length")):
        ax.set_xlabel("audio length (minutes)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if len(series) <= MAX_LEGEND_ENTRIES:
        mem.legend(fontsize=7)
    else:  # a legend of that many lines hides the plot and takes seconds to lay out
        fig.suptitle(f"{len(series)} configurations (too many to name: see the table)", fontsize=9)
    return _png(fig)


def fitted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok rows with a `harness fit` result (metrics.fit.min_limit_mb and its bisection steps)."""
    return [r for r in rows if r["status"] == "ok" and (r["metrics"].get("fit") or {}).get("min_limit_mb") is not None
            and any(s.get("limit_mb") is not None for s in r["metrics"]["fit"].get("steps", []))]


def fit_curves(rows: list[dict[str, Any]]) -> bytes:
    """One panel per fitted configuration: p95 latency of each bisection step against its kernel-enforced
    memory limit. Red: OOM-killed (the region at or below the largest such limit is shaded); orange: ran
    but slower than the unconstrained run allows; blue: passed. Green line: the fitted limit; grey dotted:
    peak RSS, for contrast (the limit a pod needs is neither its peak RSS nor its cgroup charge)."""
    shown = rows[:MAX_SMALL_MULTIPLES]
    cols = min(2, len(shown))
    n_rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(6 * cols, 3.6 * n_rows), squeeze=False)
    for ax, row in zip(axes.flat, shown):
        fit = row["metrics"]["fit"]
        steps = [s for s in fit["steps"] if s.get("limit_mb") is not None]
        reference = fit.get("reference_latency_p95_s")
        top = max([s["limit_mb"] for s in steps] + [row["metrics"].get("peak_rss_mb") or 0])
        killed = [s["limit_mb"] for s in steps if s["status"] == "oom"]
        if killed:
            ax.axvspan(0, max(killed), color="tab:red", alpha=0.12, label="OOM-killed at or below")
        elif fit.get("reference_peak_anon_mb"):  # the bisection's floor: anonymous memory cannot be reclaimed
            ax.axvspan(0, fit["reference_peak_anon_mb"], color="tab:red", alpha=0.12, label="below the anonymous peak")
        for kind, color, marker, picked in (
                ("passed", "tab:blue", "o", lambda s: s.get("passed")),
                ("slower than allowed", "tab:orange", "^", lambda s: not s.get("passed") and s["status"] == "ok"),
                ("OOM-killed", "tab:red", "x", lambda s: s["status"] == "oom"),
                ("other failure", "tab:gray", "s", lambda s: not s.get("passed") and s["status"] not in ("ok", "oom"))):
            points = [(s["limit_mb"], s.get("latency_p95_s") or 0) for s in steps if picked(s)]
            if points:
                ax.scatter([x for x, _ in points], [y for _, y in points], color=color, marker=marker, zorder=3, label=kind)
        if reference:
            tolerance = fit.get("latency_tolerance", 0.10)
            ax.axhspan(reference, reference * (1 + tolerance), color="tab:blue", alpha=0.08,
                       label=f"unconstrained p95 + {tolerance:.0%}")
        ax.axvline(fit["min_limit_mb"], color="tab:green", label=f"fitted limit {fit['min_limit_mb']:.0f} MiB")
        if row["metrics"].get("peak_rss_mb"):
            ax.axvline(row["metrics"]["peak_rss_mb"], color="tab:gray", linestyle=":",
                       label=f"peak RSS {row['metrics']['peak_rss_mb']:.0f} MiB")
        ax.set_xlim(min([s["limit_mb"] for s in steps] + [fit.get("reference_peak_anon_mb") or top]) * 0.9, top * 1.05)
        ax.set_title(store.short_name(row), fontsize=9)
        ax.set_xlabel("kernel-enforced memory limit (MiB)")
        ax.set_ylabel("p95 latency (s; OOM at 0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    return _png(fig)
