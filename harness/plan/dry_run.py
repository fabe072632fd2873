"""`harness run --dry-run`: what a run checks before it measures, the configurations, and how long it
would take; nothing is measured and no run directory is made.

By the time `report` is called the command line has checked the scenario, the budgets and the options,
and read the datasets as a real run does (every manifest line, every audio file probed: a missing
manifest is exit 2). The estimate is the audio each configuration transcribes (the cold run and the
rest of the warm-up on its first sample, `repeats` timed runs of every sample, the max_audio_s probe
once per language; an English-only model only the English samples) times the configurations, at the
pace of earlier runs of this machine class (the same CPU model and core count): the run directories
beside the new one (the parent of --out, by default reports/). The pace of an earlier row is its wall
time (worker start and model load included) per second of audio it transcribed; a configuration takes
that of its own earlier rows (same run id), else of the same backend, model and quantization, else of
every earlier row of the machine class (the median). Without earlier runs the estimate is the audio
time itself (a real-time factor of 1), and says so.
"""

from __future__ import annotations

import os
import statistics
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import backends, store
from harness.contract import machine_class
from harness.data.datasets import Sample
from harness.errors import HarnessError
from harness.plan.scenario import RunSpec, Scenario

if TYPE_CHECKING:
    from rich.console import Console


def this_machine_class() -> str:
    from harness.measure.environment import cpu_model

    return machine_class({"cpu": cpu_model(), "logical_cores": os.cpu_count()})


def transcribed_audio_s(spec: RunSpec, samples: list[Sample], max_audio_s: float | None) -> float:
    """Seconds of audio one configuration transcribes."""
    if backends.info(spec.backend).english_only(spec.model):
        samples = [s for s in samples if s.lang == "en"]
    if not samples:
        return 0.0
    probes = len({s.lang for s in samples}) * (max_audio_s or 0.0)
    return spec.repeats * sum(s.duration_s or 0.0 for s in samples) + spec.warmup * (samples[0].duration_s or 0.0) + probes


def row_pace(row: dict[str, Any]) -> float | None:
    """Wall seconds per second of audio an earlier `ok` row transcribed (cold run and probes included)."""
    samples = row.get("samples") or []
    seconds = row["metrics"].get("run_seconds")
    audio = (sum((s.get("audio_s") or 0) * len(s.get("latency_s") or []) for s in [*samples, *(row.get("probes") or [])])
             + ((samples[0].get("audio_s") or 0) if samples else 0))
    return seconds / audio if row["status"] == "ok" and seconds and audio else None


def earlier_rows(reports_dir: Path, machine: str) -> list[dict[str, Any]]:
    """The measured rows of this machine class in the run directories under `reports_dir` (one that
    cannot be read is passed over: the estimate is a guide, not a check)."""
    rows = []
    for results in sorted(reports_dir.glob(f"*/{store.RESULTS_FILE}")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = store.read_rows(results)
        except (HarnessError, OSError):
            continue
        rows += [r for r in found if not r.get("profiler") and machine_class(r.get("environment") or {}) == machine]
    return rows


def pace(spec: RunSpec, earlier: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The pace for `spec` and what it came from, or None without earlier rows."""
    def same(r: dict[str, Any]) -> bool:
        c = r["config"]
        return (c["backend"], c["model"], c["quantization"]) == (spec.backend, spec.model, spec.quantization)

    for label, match in (("its own earlier runs", lambda r: r["run_id"] == spec.run_id),
                         ("the same model", same), ("every earlier configuration", lambda r: True)):
        paces = [p for r in earlier if match(r) and (p := row_pace(r)) is not None]
        if paces:
            return statistics.median(paces), label
    return None


def report(scenario: Scenario, specs: list[RunSpec], samples: list[Sample], reports_dir: Path, console: Console) -> int:
    """Print the run ids (stdout) and what the run would be (stderr); the exit status (0)."""
    for spec in specs:
        print(spec.run_id)
    sys.stdout.flush()
    per_lang = {lang: [s for s in samples if s.lang == lang] for lang in dict.fromkeys(s.lang for s in samples)}
    console.print("datasets: " + ", ".join(f"{lang} {len(ss)} samples, {sum(s.duration_s or 0 for s in ss):.0f} s"
                                           for lang, ss in per_lang.items())
                  + (f"; max_audio_s {scenario.max_audio_s:g}: a probe per language" if scenario.max_audio_s else ""))
    machine = this_machine_class()
    earlier = earlier_rows(reports_dir, machine)
    audio = seconds = 0.0
    sources: dict[str, int] = {}
    for spec in specs:
        spec_audio = transcribed_audio_s(spec, samples, scenario.max_audio_s)
        found = pace(spec, earlier)
        audio += spec_audio
        seconds += spec_audio * (found[0] if found else 1.0)
        sources[found[1] if found else "real time"] = sources.get(found[1] if found else "real time", 0) + 1
    if earlier:
        basis = (f"at the pace of {len(earlier)} earlier row(s) of this machine class ({machine}) in {reports_dir}/ ("
                 + ", ".join(f"{n} configuration(s) by {label}" for label, n in sources.items()) + ")")
    else:
        basis = (f"no earlier run of this machine class ({machine}) in {reports_dir}/ to scale it by: at real-time "
                 "speed (RTF 1; Whisper on CPU is often faster, model loads add to it)")
    console.print(f"{len(specs)} configurations in {scenario.path}; estimate: about {_duration(seconds)} for "
                  f"{audio:.0f} audio-seconds transcribed, {basis}", soft_wrap=True)
    return 0


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"
