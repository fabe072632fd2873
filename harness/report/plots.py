"""Report figures (matplotlib, Agg): each function takes result rows and returns PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from harness import store  # noqa: E402

MAX_TIMELINES_PER_FIGURE = 16


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
    labelled: set[str] = set()
    for r, (x, y) in zip(ok, points):
        star = r["run_id"] == recommended
        ax.scatter([x], [y], s=160 if star else 36, marker="*" if star else "o", zorder=3,
                   color="tab:green" if star else "tab:blue", label="recommended" if star else None)
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


def memory_timelines(rows: list[dict[str, Any]]) -> list[bytes]:
    """Small multiples: sampled RSS over time per run, load and transcription phases, the cap."""
    with_data = [r for r in rows if r.get("timeline", {}).get("t_s")]
    figures = []
    for start in range(0, len(with_data), MAX_TIMELINES_PER_FIGURE):
        chunk = with_data[start:start + MAX_TIMELINES_PER_FIGURE]
        cols = min(4, len(chunk))
        nrows = math.ceil(len(chunk) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.5 * nrows), squeeze=False)
        for ax in axes.flat[len(chunk):]:
            ax.set_visible(False)
        for ax, r in zip(axes.flat, chunk):
            tl = r["timeline"]
            ax.plot(tl["t_s"], tl["rss_mb"], color="tab:blue", linewidth=1)
            phases = tl.get("phases", {})
            if "loaded" in phases:
                ax.axvspan(phases.get("audio_decoded", phases.get("start", 0)), phases["loaded"], color="tab:orange", alpha=0.2, label="model load")
            if "loaded" in phases and "done" in phases:
                ax.axvspan(phases["loaded"], phases["done"], color="tab:green", alpha=0.12, label="transcription")
            cap = r["config"].get("memory_cap_mb")
            if cap:
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


def latency_distributions(rows: list[dict[str, Any]], budgets: dict[str, Any]) -> bytes:
    ok = [r for r in rows if r["status"] == "ok" and any("latency_s" in s for s in r["samples"])]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 4) + 1.2))
    data = [[x for s in r["samples"] for x in s.get("latency_s", [])] for r in ok]
    if data:
        ax.boxplot(data, orientation="horizontal", showfliers=True, widths=0.6)
        for i, r in enumerate(ok, start=1):
            m = r["metrics"]
            ax.plot([m["latency_p50_s"]], [i], marker="|", color="tab:green", markersize=14)
            ax.plot([m["latency_p95_s"]], [i], marker="|", color="tab:red", markersize=14)
        ax.set_yticks(range(1, len(ok) + 1), [store.short_name(r) for r in ok], fontsize=8)
    if budgets.get("latency_p95_s"):
        ax.axvline(budgets["latency_p95_s"], color="tab:red", linestyle="--", label=f"p95 budget {budgets['latency_p95_s']:g} s")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("warm latency per request (s); green tick p50, red tick p95")
    ax.set_title("Warm latency distributions")
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
    mem.legend(fontsize=7)
    return _png(fig)
