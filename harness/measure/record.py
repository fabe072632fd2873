"""The one place a result row is built: what the runner observed in the worker child (its reply,
the kernel's figures, the memory timeline) plus the job -> a row of the results contract, with WER and
latency statistics computed here, on the node, in the parent (the child imports no scorer)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from harness import SCHEMA_VERSION
from harness import metrics as registry
from harness.analyze import hallucination, streaming, uncertainty
from harness.analyze import scoring as metrics
from harness.contract import Job, Row, SampleRef, Status
from harness.measure.runner import ChildOutcome
from harness.plan.scenario import RunSpec

NOISY_CV = 0.10
TIMELINE_MAX_POINTS = 600


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, digits)


@dataclass(frozen=True)
class Provenance:
    """Where and how a row was measured, known on the node before the row is built."""

    environment: dict[str, Any]  # the node's machine and software (measure.environment.capture)
    node: dict[str, Any]  # executor, host, machine class (+ the Ray node id on a cluster)
    model_source: str | None = None  # where the weights came from on that node
    requested_cpus: list[int] | None = None
    profile: dict[str, Any] | None = None  # a profiled run: {"profiler", "profile_of", "profile", "profile_summary"}


def not_run_row(job: Job, status: Status, reason: str, provenance: Provenance) -> dict[str, Any]:
    """A configuration that was not run (skipped, or an error before the worker started)."""
    spec = RunSpec(**job.spec)
    return _row(spec, status, reason, spec.config(), {}, [], job, provenance)


def _row(spec: RunSpec, status: Status, reason: str, config: dict[str, Any], measured: dict[str, Any],
         samples: list[dict[str, Any]], job: Job, provenance: Provenance, **extra: Any) -> dict[str, Any]:
    config["model_source"] = provenance.model_source
    row = Row(schema_version=SCHEMA_VERSION, run_id=spec.run_id, scenario=spec.scenario, status=status,
              reason=reason, config=config, metrics=measured, samples=samples, data=job.data,
              node=provenance.node, environment=provenance.environment, **extra, **(provenance.profile or {}))
    return row.to_json()


def build_row(job: Job, outcome: ChildOutcome, provenance: Provenance,
              skipped_languages: dict[str, str] | None = None) -> dict[str, Any]:
    """Turn what the runner observed into the contract's row (metrics computed here, in the parent)."""
    spec = RunSpec(**job.spec)
    result = outcome.result if outcome.result and outcome.result.get("ok") else None
    effective = (result or {}).get("effective", {})
    config = spec.config()
    config["cpu_pinning"]["effective"] = effective.get("cpus", provenance.requested_cpus)
    config["threads_effective"] = effective.get("threads")
    config["compute_type_effective"] = effective.get("compute_type")
    config["backend_effective"] = {k: v for k, v in effective.items() if k not in ("cpus", "threads", "compute_type")} or None
    config["memory_cap_mode"] = outcome.cap_mode
    if outcome.cpu_quota is not None:
        config["cpu_quota"] = outcome.cpu_quota  # as the kernel holds it
    measured: dict[str, Any] = {"peak_rss_mb": _round(outcome.ru_maxrss_mb, 1),
                                "peak_rss_source": "ru_maxrss (os.wait4, kernel high-water mark)",
                                **_kubernetes_figures(outcome)}
    rows: list[dict[str, Any]] = []
    row_warnings: list[str] = list(outcome.notes)
    if outcome.cpu_quota is not None and spec.threads > outcome.cpu_quota["cores"]:
        row_warnings.append(f"{spec.threads} thread(s) under cpu_limit {spec.cpu_limit} ({outcome.cpu_quota['cores']:g} "
                            "cores of CFS quota): more threads than the quota lets run at once; expect throttling")
    skipped_languages = dict(skipped_languages or {})
    probes: list[dict[str, Any]] = []
    if result is not None:
        by_id = {s.id: s for s in job.samples}
        scoring = {lang: metrics.Normalization(**how) for lang, how in job.data.get("normalization", {}).items()}
        timed = [s for s in result["samples"] if not s.get("probe")]
        measured.update(_measure({**result, "samples": timed}, by_id, scoring, outcome.timeline, rows, skipped_languages))
        probes = [_probe(s, by_id, scoring, outcome.timeline) for s in result["samples"] if s.get("probe")]
        cv = metrics.median_cv([r["latency_s"] for r in rows if "latency_s" in r])
        measured["latency_cv"] = _round(cv)
        if cv is not None and cv > NOISY_CV:
            row_warnings.append(f"warm timings vary by {cv:.0%} between repetitions (more than "
                                f"{NOISY_CV:.0%}): the machine is noisy; latency figures are uncertain")
    if (outcome.foreign_cpu_fraction or 0) > registry.BY_NAME["foreign_cpu_fraction"].limit:
        row_warnings.append(f"other processes used {outcome.foreign_cpu_fraction:.0%} of the machine's CPU time while "
                            "this configuration ran: its timings were taken under foreign load")
    status, reason = Status(outcome.status), outcome.reason
    if status is Status.OK and not rows:
        status = Status.SKIPPED
        reason = "; ".join(f"{lang}: {why}" for lang, why in skipped_languages.items())
    extra = {"budget_verdict": outcome.budget_verdict} if outcome.budget_verdict else {}
    if probes:
        extra["probes"] = probes
        measured["probe_peak_rss_mb"] = max((p["peak_rss_mb"] for p in probes if p["peak_rss_mb"] is not None), default=None)
    if outcome.oom_verdict:
        extra["oom_verdict"] = outcome.oom_verdict
    measured["run_seconds"] = _round(outcome.wall_s, 2)
    measured["cpu_steal_fraction"] = _round(outcome.cpu_steal_fraction)
    measured["foreign_cpu_fraction"] = _round(outcome.foreign_cpu_fraction)
    return _row(spec, status, reason, config, measured, rows, job, provenance, **extra,
                skipped_languages=skipped_languages, warnings=row_warnings,
                timeline=_timeline(outcome, (outcome.result or {}).get("phases", {})))


def with_fit(measured: dict[str, Any], fit: dict[str, Any]) -> dict[str, Any]:
    """The row that supersedes a measured row once its memory limit was fitted (harness.measure.fit):
    the same measurement plus `metrics.fit`, validated as a new row (the measured one is never changed;
    readers take the later row of a run id in its place)."""
    row = Row.model_validate({**measured, "metrics": {**measured["metrics"], "fit": fit}})
    return row.to_json()


def _kubernetes_figures(outcome: ChildOutcome) -> dict[str, Any]:
    """The memory figures a pod is judged by (MiB), the CPU throttling the kernel reported, and what
    the cold page cache cost: only those this node could observe."""
    figures: dict[str, Any] = {"peak_anon_mb": _round(outcome.peak_anon_mb, 1)}
    if outcome.cgroup_mode is not None:
        figures.update(cgroup_peak_mb=_round(outcome.cgroup_peak_mb, 1),
                       working_set_peak_mb=_round(outcome.working_set_peak_mb, 1),
                       page_cache_refault_mb=_round(outcome.refault_mb, 1), cgroup_source=outcome.cgroup_mode)
        phases = (outcome.result or {}).get("phases", {})
        if outcome.refault_mb is not None and "measure_start" in phases and "done" in phases:
            figures["page_cache_refault_timed_mb"] = _round(
                (_refaulted_by(outcome.refault_timeline, phases["done"])
                 - _refaulted_by(outcome.refault_timeline, phases["measure_start"])) / (1 << 20), 1)
    if outcome.cpu_throttling is not None:
        figures["cpu_throttling"] = outcome.cpu_throttling
    if outcome.page_cache_eviction is not None:
        figures["page_cache_evicted"] = outcome.page_cache_eviction
    return figures


def _refaulted_by(timeline: list[tuple[float, int]], t: float) -> int:
    """Bytes of page cache refaulted up to monotonic time `t` (sampled every 20 ms)."""
    return max((b for when, b in timeline if when <= t), default=0)


def _measure(result: dict[str, Any], by_id: dict[str, SampleRef], scoring: dict[str, metrics.Normalization],
             timeline: list[tuple[float, float]], rows: list[dict[str, Any]],
             skipped_languages: dict[str, str]) -> dict[str, Any]:
    warm: list[float] = []
    warm_audio_s = 0.0
    per_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in result["samples"]:
        if "skipped" in s:
            skipped_languages[s["lang"]] = s["skipped"]
            continue
        ref = by_id[s["id"]].text
        how = scoring.get(s["lang"])
        row = {k: v for k, v in s.items() if k not in ("windows", "pieces")}
        row.update(reference=ref, wer=_round(metrics.sample_wer(ref, s["hypothesis"], s["lang"], how)),
                   peak_rss_mb=_window_peak(timeline, s.get("windows", [])))
        if "pieces" in s:  # stream mode: how many errors sit at a seam between pieces
            row["boundary_errors"] = streaming.boundary_errors(ref, s["pieces"], s["lang"], how)
        if found := hallucination.flags(ref or None, s["hypothesis"], s["lang"], s["audio_s"], how=how):
            row["flags"] = found
        rows.append(row)
        per_lang[s["lang"]].append(row)
        warm += s["latency_s"]
        warm_audio_s += s["audio_s"] * len(s["latency_s"])
    languages = {}
    for lang, lang_rows in per_lang.items():
        rates = metrics.error_rates([r["reference"] for r in lang_rows], [r["hypothesis"] for r in lang_rows], lang,
                                    scoring.get(lang))
        languages[lang] = {
            "wer": _round(rates["wer"]), "cer": _round(rates["cer"]), "words": rates["words"],
            "samples": len(lang_rows), "audio_s": _round(sum(r["audio_s"] for r in lang_rows), 2),
            "rtf": _round(sum(sum(r["latency_s"]) for r in lang_rows)
                          / sum(r["audio_s"] * len(r["latency_s"]) for r in lang_rows)),
            **({"errors_at_boundaries": sum(r["boundary_errors"]["at_boundaries"] for r in lang_rows),
                "errors": sum(r["boundary_errors"]["errors"] for r in lang_rows)}
               if all("boundary_errors" in r for r in lang_rows) else {}),
            "synthetic": all(by_id[r["id"]].synthetic for r in lang_rows),
            **_uncertainty(lang_rows, lang, scoring.get(lang)),
        }
    out: dict[str, Any] = {
        "vmhwm_mb": _round(result["vmhwm_mb"], 1),
        "rss_after_load_mb": _round(result["rss_after_load_mb"], 1),
        "rss_anon_after_load_mb": _round(result["rss_anon_after_load_mb"], 1),
        "rss_file_after_load_mb": _round(result["rss_file_after_load_mb"], 1),
        "load_s": _round(result["load_s"]),
        "first_latency_s": _round(result["first_latency_s"]),
        "languages": languages,
    }
    if rows and all("chunks" in r for r in rows):
        out["stream"] = streaming.summarize(rows)
    if warm:
        out.update(latency_p50_s=_round(metrics.percentile(warm, 50)),
                   latency_p95_s=_round(metrics.percentile(warm, 95)),
                   rtf=_round(sum(warm) / warm_audio_s), warm_timings=len(warm))
    return out


def _uncertainty(lang_rows: list[dict[str, Any]], lang: str, how: metrics.Normalization | None) -> dict[str, Any]:
    """A language's 95 % bootstrap intervals of WER and CER, and its hallucination flag counts."""
    out: dict[str, Any] = {}
    for name, unit in (("wer_ci", "words"), ("cer_ci", "characters")):
        low, high = uncertainty.corpus_rate_ci(lang_rows, lang, how, unit=unit)["ci"]
        if not math.isnan(low):
            out[name] = [_round(low), _round(high)]
    flags = {f: sum(f in r.get("flags", ()) for r in lang_rows) for f in hallucination.FLAGS}
    return {**out, "flagged": sum(bool(r.get("flags")) for r in lang_rows), "flags": flags}


def _probe(s: dict[str, Any], by_id: dict[str, SampleRef], scoring: dict[str, metrics.Normalization],
           timeline: list[tuple[float, float]]) -> dict[str, Any]:
    """A max_audio_s probe's result: its one transcription, the memory while it ran, and its WER on its
    own (no language's WER, latency or RTF includes it)."""
    ref = by_id[s["id"]].text
    return {"id": s["id"], "lang": s["lang"], "audio_s": round(s["audio_s"], 2), "latency_s": s["latency_s"],
            "hypothesis": s["hypothesis"], "reference": ref,
            "wer": _round(metrics.sample_wer(ref, s["hypothesis"], s["lang"], scoring.get(s["lang"]))),
            "peak_rss_mb": _window_peak(timeline, s.get("windows", []))}


def _window_peak(timeline: list[tuple[float, float]], windows: list[list[float]]) -> float | None:
    """The largest sampled tree RSS while a sample was being transcribed (every 20 ms: a shorter spike
    can be missed; the row's peak_rss_mb is the kernel's exact peak of the whole run)."""
    inside = [rss for t, rss in timeline if any(t0 <= t <= t1 for t0, t1 in windows)]
    return round(max(inside), 1) if inside else None


def _timeline(outcome: ChildOutcome, phases: dict[str, float]) -> dict[str, Any]:
    """Sampled tree RSS (downsampled) and the worker's phase marks, in seconds since spawn."""
    points = outcome.timeline
    step = max(1, math.ceil(len(points) / TIMELINE_MAX_POINTS))
    kept = points[::step]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    t0 = outcome.started_at
    return {"t_s": [round(t - t0, 3) for t, _ in kept], "rss_mb": [round(r, 1) for _, r in kept],
            "sampled_peak_rss_mb": round(max((r for _, r in points), default=0.0), 1),
            "phases": {name: round(t - t0, 3) for name, t in phases.items()},
            "cap_crossed_s": None if outcome.cap_crossed_at is None else round(outcome.cap_crossed_at - t0, 3),
            "ended_s": round(outcome.ended_at - t0, 3)}
