"""Baseline vs current results -> a verdict per configuration and metric, and a regression exit code.

Which metrics are judged, and by which judge, comes from the metric registry (harness.metrics `compare`).
Noise-aware: warm latency and RTF are `worse` only when the ratio of medians passes a threshold AND
the per-timing samples differ significantly (two-sided Mann-Whitney U); with too few timings the
evidence is reported as insufficient. Peak RSS is `worse` only past both a relative and an absolute
margin. WER is compared in absolute points per language, on the 95 % interval of the increase (paired
on the shared utterances). Any ok -> oom/error/timeout is a regression.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from harness import metrics as registry
from harness import store
from harness.analyze import uncertainty
from harness.contract import machine_class
from harness.errors import UserError

DEFAULT_POLICY: dict[str, Any] = {
    "peak_rss": {"max_increase_fraction": 0.05, "max_increase_mb": 20.0},
    "latency": {"max_ratio": 1.15, "alpha": 0.05, "min_samples": 6, "insufficient_is_regression": False,
                # A virtual machine whose hypervisor took more than this share of CPU time while a
                # configuration ran was not measuring the code: its timings are not evidence. Likewise
                # when other processes on the machine used more than this share of its CPU. One
                # `max_NAME` per NOISE metric of the registry (cpu_steal_fraction, foreign_cpu_fraction).
                **{f"max_{m.name}": m.limit for m in registry.judged(registry.NOISE)}},
    "wer": {"max_increase_points": 1.0},
    "status_regressions": ["oom", "error", "timeout"],
    # `history:DIR` baselines (harness.analyze.history_baseline): runs needed for a verdict, how many
    # robust standard deviations of the window a memory increase must also pass, and whether too short
    # a history fails the gate.
    "history": {"min_runs": 3, "spread_factor": 3.0, "no_history_is_regression": False},
}
# What a TIMING judge compares: one value per warm timing of the row (sample, its timing in seconds).
PER_TIMING = {
    "latency_p95_s": lambda sample, t: t,
    "rtf": lambda sample, t: t / sample["audio_s"] if sample.get("audio_s") else t,
}
assert all(m.name in PER_TIMING for m in registry.judged(registry.TIMING)), "a TIMING metric needs its per-timing values"
VERDICTS = ("better", "worse", "within noise", "unchanged", "changed", "insufficient evidence", "new", "missing")


def load_policy(path: Path | None) -> dict[str, Any]:
    """The default policy, with any threshold the policy file (YAML or JSON) sets."""
    policy = json.loads(json.dumps(DEFAULT_POLICY))
    if path is None:
        return policy
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the policy: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of policy sections ({', '.join(DEFAULT_POLICY)})")
    for section, value in raw.items():
        if section not in policy:
            raise UserError(f"{path}: unknown policy section {section!r}; allowed: {', '.join(DEFAULT_POLICY)}")
        if section == "status_regressions":
            if not isinstance(value, list):
                raise UserError(f"{path}: field 'status_regressions': expected a list of statuses")
            policy[section] = value
            continue
        if not isinstance(value, dict):
            raise UserError(f"{path}: field '{section}': expected a mapping")
        for key, v in value.items():
            if key not in policy[section]:
                raise UserError(f"{path}: unknown key '{section}.{key}'; allowed: {', '.join(policy[section])}")
            if not isinstance(v, type(policy[section][key])) and not (isinstance(v, int) and isinstance(policy[section][key], float)):
                raise UserError(f"{path}: field '{section}.{key}': invalid value {v!r}; expected "
                                f"{type(policy[section][key]).__name__}")
            policy[section][key] = v
    return policy


def _per_timing(row: dict[str, Any], metric: registry.Metric) -> list[float]:
    """The row's warm timings as values of `metric` (every repetition of every sample)."""
    value = PER_TIMING[metric.name]
    return [value(s, t) for s in row.get("samples", []) for t in s.get("latency_s", [])]


def _timing_verdict(base: list[float], cur: list[float], policy: dict[str, Any]) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    p = policy["latency"]
    if len(base) < p["min_samples"] or len(cur) < p["min_samples"]:
        return {"verdict": "insufficient evidence", "baseline": _median(base), "current": _median(cur),
                "detail": f"{len(base)} vs {len(cur)} timings; at least {p['min_samples']} per side are needed"}
    b, c = statistics.median(base), statistics.median(cur)
    ratio = c / b if b else float("inf")
    p_value = float(mannwhitneyu(base, cur, alternative="two-sided").pvalue)
    significant = p_value < p["alpha"]
    if ratio > p["max_ratio"] and significant:
        verdict = "worse"
    elif ratio < 1 / p["max_ratio"] and significant:
        verdict = "better"
    else:
        verdict = "within noise"
    return {"verdict": verdict, "baseline": b, "current": c, "ratio": round(ratio, 4), "p_value": round(p_value, 6),
            "detail": f"median x{ratio:.3f}, Mann-Whitney p = {p_value:.3g} ({len(base)} vs {len(cur)} timings)"}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _memory_verdict(b: dict[str, Any], c: dict[str, Any], metric: registry.Metric, policy: dict[str, Any]) -> dict[str, Any]:
    p = policy["peak_rss"]
    base, cur = metric.value(b), metric.value(c)
    if base is None or cur is None:
        return {"verdict": "new" if base is None else "missing", "baseline": base, "current": cur, "detail": ""}
    delta = cur - base
    past = abs(delta) > p["max_increase_fraction"] * base and abs(delta) > p["max_increase_mb"]
    verdict = ("worse" if delta > 0 else "better") if past else "within noise"
    detail = f"{delta:+.1f} MiB ({delta / base:+.1%})" if base else f"{delta:+.1f} MiB"
    # Measured here: the file-backed part (mapped shared libraries) of one configuration moved by
    # +28 MiB between a fresh and an older venv while anonymous memory stayed equal to 0.1 MiB.
    # Say which side moved, so a reader can tell page-cache state from a change in the code.
    split = [m.get(k) for m in (b["metrics"], c["metrics"]) for k in ("rss_anon_after_load_mb", "rss_file_after_load_mb")]
    if None not in split and delta:
        detail += f"; after load: anonymous {split[2] - split[0]:+.1f} MiB, file-backed {split[3] - split[1]:+.1f} MiB"
    return {"verdict": verdict, "baseline": base, "current": cur, "delta": round(delta, 1), "detail": detail}


def _accuracy_verdict(b: dict[str, Any], c: dict[str, Any], lang: str, base: float, cur: float,
                      policy: dict[str, Any]) -> dict[str, Any]:
    """WER judged on the 95 % interval of the increase (harness.analyze.uncertainty.row_difference: paired
    on the utterances both runs transcribed, unpaired when they share none): worse only when the whole
    interval lies above max_increase_points, better when it lies below -max_increase_points, within noise
    when it lies between; otherwise the data cannot tell (insufficient evidence). The detail says which
    comparison was made, on how much speech."""
    limit = policy["wer"]["max_increase_points"] / 100
    d = uncertainty.row_difference(b, c, lang)
    out = {"baseline": base, "current": cur, "delta_points": round(100 * (cur - base), 2), "method": d["method"]}
    if d["method"] == "none":
        return {**out, "verdict": "insufficient evidence", "detail": f"{100 * (cur - base):+.1f} points; {d['note']}"}
    low, high = d["ci"]
    verdict = ("worse" if low > limit else "better" if high < -limit else "within noise" if -limit <= low and high <= limit
               else "insufficient evidence")
    return {**out, "verdict": verdict, "ci_points": [round(100 * low, 2), round(100 * high, 2)],
            "detail": f"{100 * d['increase']:+.1f} points, 95 % CI [{100 * low:+.1f}, {100 * high:+.1f}], {d['note']}"}


def compare_rows(baseline: list[dict[str, Any]], current: list[dict[str, Any]], policy: dict[str, Any]) -> dict[str, Any]:
    base_by_id = {r["run_id"]: r for r in baseline if not r.get("profiler")}
    cur_by_id = {r["run_id"]: r for r in current if not r.get("profiler")}
    configs = []
    for run_id in list(base_by_id) + [i for i in cur_by_id if i not in base_by_id]:
        b, c = base_by_id.get(run_id), cur_by_id.get(run_id)
        entry: dict[str, Any] = {"run_id": run_id, "metrics": {}}
        if b is None or c is None:
            entry["metrics"]["status"] = {"verdict": "new" if b is None else "missing",
                                          "baseline": b and b["status"], "current": c and c["status"], "detail": ""}
        else:
            entry["metrics"] = _compare_pair(b, c, policy)
        entry["regression"] = regressed(entry["metrics"], policy)
        configs.append(entry)
    warnings = []
    if base_by_id and base_by_id == cur_by_id:
        warnings.append("the baseline and the current run are the same run (identical rows): nothing was compared "
                        "with anything else")
    for side, rows in (("baseline", base_by_id), ("current", cur_by_id)):
        busy = [f"{store.short_name(r)} ({', '.join(f'{m.noun} {m.cell(v)}' for m, v in registry.noisy(r))})"
                for r in rows.values() if registry.noisy(r)]
        if busy:
            warnings.append(f"{side} measured while the machine was busy: {'; '.join(busy)}; its timings are not "
                            "evidence (insufficient evidence)")
    return {"policy": policy, "configs": configs, "regression": any(e["regression"] for e in configs),
            "warnings": warnings}


def regressed(verdicts: dict[str, dict[str, Any]], policy: dict[str, Any]) -> bool:
    """A configuration's verdicts make a regression: one is worse (or, by policy, a timing with insufficient
    evidence; WER's insufficient evidence is a matter of how much speech was measured, never a regression)."""
    timing = {m.verdict_key for m in registry.judged(registry.TIMING)}
    return any(m["verdict"] == "worse" for m in verdicts.values()) or (
        policy["latency"]["insufficient_is_regression"]
        and any(m["verdict"] == "insufficient evidence" for key, m in verdicts.items() if key in timing))


def _compare_pair(b: dict[str, Any], c: dict[str, Any], policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    flipped = b["status"] == "ok" and c["status"] in policy["status_regressions"]
    recovered = b["status"] in policy["status_regressions"] and c["status"] == "ok"
    out["status"] = {"verdict": "worse" if flipped else "better" if recovered
                     else "unchanged" if b["status"] == c["status"] else "changed",
                     "baseline": b["status"], "current": c["status"],
                     "detail": f"{b['status']} -> {c['status']}" + (f": {c['reason'].splitlines()[0]}" if flipped and c.get("reason") else "")}
    if b["status"] != "ok" or c["status"] != "ok":
        return out
    # Which metrics are judged, and by which judge, is the registry's (harness.metrics `compare`), in its order.
    for metric in registry.METRICS:
        if metric.compare == registry.MEMORY:
            if metric.value(b) is not None or metric.value(c) is not None:  # e.g. a fit on neither side
                out[metric.verdict_key] = _memory_verdict(b, c, metric, policy)
        elif metric.compare == registry.TIMING:
            out[metric.verdict_key] = timing_difference(b, c, metric, policy)
            if metric.name == "rtf":  # shown as summary.csv has it (total warm seconds / total audio seconds)
                out[metric.verdict_key].update(baseline=metric.value(b), current=metric.value(c))
        elif metric.compare == registry.ACCURACY:
            langs = set(b["metrics"].get("languages", {})) | set(c["metrics"].get("languages", {}))
            for lang in sorted(langs):
                bv, cv = metric.value(b, lang), metric.value(c, lang)
                key = f"{metric.verdict_key}.{lang}"
                if bv is None or cv is None:
                    out[key] = {"verdict": "new" if bv is None else "missing", "baseline": bv, "current": cv, "detail": ""}
                else:
                    out[key] = _accuracy_verdict(b, c, lang, bv, cv, policy)
    return out


def timing_difference(b: dict[str, Any], c: dict[str, Any], metric: registry.Metric,
                      policy: dict[str, Any] = DEFAULT_POLICY) -> dict[str, Any]:
    """The TIMING judge between two ok rows (also the recommendation's test for a latency tie): ratio of
    medians and Mann-Whitney U of the per-timing values; timings taken on a busy machine are not evidence."""
    verdict = _timing_verdict(_per_timing(b, metric), _per_timing(c, metric), policy)
    for m in registry.judged(registry.NOISE):
        taken = max(m.value(b) or 0, m.value(c) or 0)
        if taken > policy["latency"].get(f"max_{m.name}", m.limit):
            verdict.update(verdict="insufficient evidence", detail=f"{_busy(m, taken)}; " + verdict["detail"])
    return verdict


def _busy(metric: registry.Metric, taken: float) -> str:
    """"CPU steal 11% while running", "foreign CPU load 7% while running"."""
    return f"{metric.noun} {taken:.0%} while running"


def load_side(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and environment of a run directory or results file."""
    if not path.exists():
        raise UserError(f"{path}: no such run directory or results file")
    rows = store.read_rows(path)
    if not rows:
        raise UserError(f"{path}: no results")
    return rows, store.run_environment(path, rows)


def compare(baseline: Path, current: Path, policy: dict[str, Any], allow_other_machine: bool = False) -> dict[str, Any]:
    base_rows, base_env = load_side(baseline)
    cur_rows, cur_env = load_side(current)
    base_class, cur_class = machine_class(base_env), machine_class(cur_env)
    if base_class != cur_class and not allow_other_machine:
        raise UserError(f"machine mismatch: the baseline {baseline} was measured on '{base_class}', the current run "
                        f"{current} on '{cur_class}'; timings are not comparable across machines. Save a baseline "
                        "on this machine (harness baseline save) or pass --allow-other-machine")
    report = compare_rows(base_rows, cur_rows, policy)
    report.update(baseline=str(baseline), current=str(current), machine={"baseline": base_class, "current": cur_class},
                  machine_mismatch=base_class != cur_class)
    return report


def to_text(report: dict[str, Any], markdown: bool = False) -> str:
    lines = []
    verdict = "REGRESSION" if report["regression"] else "no regression"
    if markdown:
        lines += [f"## Comparison: {verdict}", "", f"Baseline `{report['baseline']}`, current `{report['current']}`.", ""]
        if report.get("machine_mismatch"):
            lines += [f"> **Machine mismatch**: {report['machine']['baseline']} vs {report['machine']['current']}.", ""]
        if report.get("note"):  # e.g. "no history for machine class X: 2 runs"
            lines += [f"> {report['note']}", ""]
        lines += [f"> **Warning**: {w}.\n" for w in report.get("warnings", [])]
        lines += [f"{STATISTICS_NOTE}", "", "| " + " | ".join(HEADER) + " |", "|---|---|---|---:|---:|---|"]
    else:
        lines += [f"comparison: {verdict}  (baseline {report['baseline']}, current {report['current']})"]
        if report.get("machine_mismatch"):
            lines += [f"MACHINE MISMATCH: {report['machine']['baseline']} vs {report['machine']['current']}"]
        if report.get("note"):
            lines += [report["note"]]
        lines += [f"warning: {w}" for w in report.get("warnings", [])]
        lines += [STATISTICS_NOTE, _text_line(HEADER)]
    for entry in report["configs"]:
        for metric, m in entry["metrics"].items():
            cells = [entry["run_id"], statistic(metric), m["verdict"], _show(m.get("baseline")), _show(m.get("current")),
                     m.get("detail", "")]
            if markdown:
                lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
            else:
                lines.append(_text_line(cells))
    return "\n".join(lines) + "\n"


HEADER = ("configuration", "statistic", "verdict", "baseline", "current", "detail")
STATISTICS_NOTE = ("Latency and RTF are judged on every warm timing (ratio of medians and a Mann-Whitney U test); "
                   "RTF = warm transcription seconds / audio seconds, as in summary.csv; WER is corpus WER per language.")


def statistic(key: str) -> str:
    """A verdict's key as its column says it: "median warm latency s", "peak RSS MiB", "WER en"."""
    name, _, lang = key.partition(".")
    if name == "latency":
        return "median warm latency s"
    metric = next((m for m in registry.METRICS if m.verdict_key == name), None)
    return key if metric is None else metric.header(lang or None)


def _text_line(cells: list[str] | tuple[str, ...]) -> str:
    return "  ".join([f"{cells[0]:<58}", f"{cells[1]:<21}", f"{cells[2]:<21}", f"{cells[3]:>9}", f"{cells[4]:>9}", cells[5]])


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"text": out_dir / "compare.txt", "markdown": out_dir / "compare.md", "json": out_dir / "compare.json"}
    paths["text"].write_text(to_text(report))
    paths["markdown"].write_text(to_text(report, markdown=True))
    paths["json"].write_text(json.dumps(report, indent=2))
    return paths
