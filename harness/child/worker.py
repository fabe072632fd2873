"""The measured child: `python -m harness.child.worker JOB.json RESULT.json`.

Runs in a fresh process per configuration. Order matters: CPU affinity first, then (with the thread
environment the parent exported) the numeric libraries, then audio decoding outside any timed region,
then the timed model load, a cold transcription, warm-up, and `repeats` timed transcriptions of every
sample. Results go to RESULT.json (written whole, then renamed), never to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

MIB = 1 << 20


class BudgetBreach(Exception):
    """The final figure is already certain to break a budget (budget-aware search stops here)."""

    def __init__(self, budget: str, limit: float, value: float) -> None:
        super().__init__(f"stopped early: {budget} is certain to exceed its budget {limit:g} "
                         f"(already {value:.3g} after the timings so far)")
        self.verdict = {"budget": budget, "limit": limit, "value": value}


def check_stop_rules(rules: dict[str, float], timings: list[float], planned: int, planned_audio_s: float) -> None:
    """Raise BudgetBreach once the remaining timings cannot bring the final figure back in budget."""
    if "rtf" in rules and sum(timings) / planned_audio_s > rules["rtf"]:
        raise BudgetBreach("rtf", rules["rtf"], sum(timings) / planned_audio_s)
    if "latency_p95_s" in rules:
        limit = rules["latency_p95_s"]
        over = sum(t > limit for t in timings)
        # p95 interpolates at index 0.95 * (planned - 1); once that index (rounded down) falls among
        # the `over` largest timings, the final p95 is above the limit whatever comes next.
        if over and over >= planned - int(0.95 * (planned - 1)):
            raise BudgetBreach("latency_p95_s", limit, max(timings))


def _status_mib(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status given in kB (VmHWM, VmRSS, RssAnon, RssFile), in MiB, in one read."""
    with open("/proc/self/status") as f:
        found = {k: int(v.split()[0]) * 1024 / MIB for k, _, v in (line.partition(":") for line in f) if k in fields}
    if missing := set(fields) - set(found):
        raise RuntimeError(f"{', '.join(sorted(missing))} not in /proc/self/status")
    return found


def _write_result(path: str, result: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, path)


WHOLE = {"mode": "whole"}  # how each piece of a stream is transcribed


def measure(job: dict[str, Any], phases: dict[str, float]) -> dict[str, Any]:
    import threadpoolctl

    from harness import backends
    from harness.child import stream
    from harness.child.audio import decode

    spec = job["spec"]
    backend = backends.get(spec["backend"])
    phases["imported"] = time.monotonic()

    # A max_audio_s probe is decoded at its turn, after the timed samples: their figures stay their own.
    probes = [s for s in job["samples"] if s.get("probe")]
    audio = {s["id"]: decode(s["audio"]) for s in job["samples"] if s not in probes}
    phases["audio_decoded"] = time.monotonic()

    start = time.perf_counter()
    backend.load(job["model_path"], spec["quantization"], spec["threads"])
    load_s = time.perf_counter() - start
    phases["loaded"] = time.monotonic()
    # Anonymous (weights, buffers) vs file-backed (shared libraries, mapped files) pages: when the
    # peak of one configuration moves between runs, this split says which side moved.
    rss_after_load = _status_mib("VmRSS", "RssAnon", "RssFile")

    chunking = spec["chunking"]
    windows: dict[str, list[tuple[float, float]]] = {}  # when each sample was being transcribed
    piece_timings: dict[str, dict[str, Any]] = {}  # stream mode: per sample, compute seconds of every piece

    def transcribe(sample: dict[str, Any]) -> tuple[str, float]:
        t0, mono0 = time.perf_counter(), time.monotonic()
        if chunking["mode"] == "stream":
            text = transcribe_stream(sample)
        else:
            text = backend.transcribe(audio[sample["id"]], sample["lang"], spec["beam_size"], spec["decoding"], chunking)
        windows.setdefault(sample["id"], []).append((mono0, time.monotonic()))
        return text, time.perf_counter() - t0

    def transcribe_stream(sample: dict[str, Any]) -> str:
        samples = audio[sample["id"]]
        ranges = stream.pieces(len(samples), chunking["chunk_s"], chunking["overlap_s"], chunking["buffer"])
        texts, seconds = [], []
        for start, end in ranges:
            t0 = time.perf_counter()
            texts.append(backend.transcribe(samples[start:end], sample["lang"], spec["beam_size"], spec["decoding"], WHOLE))
            seconds.append(time.perf_counter() - t0)
        record = piece_timings.setdefault(sample["id"], {"chunk_ends_s": [end / 16000 for _, end in ranges], "chunks": []})
        record["chunks"].append(seconds)
        if chunking["buffer"] == "pieces":  # seams exist only between separately transcribed pieces
            record["pieces"] = texts
        return stream.merge(texts, chunking["buffer"])

    runnable = [s for s in job["samples"] if s not in probes and backend.supports_language(s["lang"])]
    results: list[dict[str, Any]] = [
        {"id": s["id"], "lang": s["lang"], "audio_s": len(audio[s["id"]]) / 16000,
         "skipped": f"model {spec['model']} is English-only; cannot transcribe {s['lang']}"}
        for s in job["samples"] if s not in runnable and s not in probes
    ]
    first_latency = None
    if runnable:
        # Cold: the first transcription after load. Then the rest of the warm-up, untimed.
        _, first_latency = transcribe(runnable[0])
        for _ in range(spec["warmup"] - 1):
            transcribe(runnable[0])
        phases["measure_start"] = time.monotonic()
        piece_timings.clear()  # the cold run is not a timed one
        rules = job.get("stop_when") or {}
        planned = len(runnable) * spec["repeats"]
        planned_audio_s = sum(len(audio[s["id"]]) for s in runnable) / 16000 * spec["repeats"]
        timings: list[float] = []
        for sample in runnable:
            latencies, text = [], ""
            for _ in range(spec["repeats"]):
                text, seconds = transcribe(sample)
                latencies.append(seconds)
                timings.append(seconds)
                check_stop_rules(rules, timings, planned, planned_audio_s)
            results.append({"id": sample["id"], "lang": sample["lang"],
                            "audio_s": len(audio[sample["id"]]) / 16000,
                            "latency_s": latencies, "hypothesis": text, "windows": windows[sample["id"]],
                            **piece_timings.get(sample["id"], {})})
        probes = [s for s in probes if backend.supports_language(s["lang"])]
        if probes:
            phases["probe_start"] = time.monotonic()
        for sample in probes:  # once each, untimed for the statistics: the longest request's memory
            audio[sample["id"]] = decode(sample["audio"])
            text, seconds = transcribe(sample)
            results.append({"id": sample["id"], "lang": sample["lang"], "audio_s": len(audio.pop(sample["id"])) / 16000,
                            "latency_s": [seconds], "hypothesis": text, "windows": windows[sample["id"]],
                            "probe": True})
    phases["done"] = time.monotonic()

    pools = threadpoolctl.threadpool_info()
    return {
        "ok": True,
        "load_s": load_s,
        "rss_after_load_mb": rss_after_load["VmRSS"],
        "rss_anon_after_load_mb": rss_after_load["RssAnon"],
        "rss_file_after_load_mb": rss_after_load["RssFile"],
        "vmhwm_mb": _status_mib("VmHWM")["VmHWM"],
        "first_latency_s": first_latency,
        "samples": results,
        "effective": {
            "cpus": sorted(os.sched_getaffinity(0)),
            "threads": {p["internal_api"]: p["num_threads"] for p in pools},
            **backend.describe(),
        },
    }


def die_with_parent(parent_pid: int, profiled: bool = False) -> None:
    """Ask the kernel to SIGKILL this process when the harness dies, even by SIGKILL (Linux)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    # The harness died before the request took effect. (Under a profiler that starts the worker in a
    # process of its own, the parent is the profiler: its process group is killed with the harness's.)
    if os.getppid() != parent_pid and not profiled:
        os._exit(1)


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    die_with_parent(job["parent_pid"], profiled=bool(job.get("profiler")))
    phases = {"start": time.monotonic()}
    if job["cpus"] is not None:
        os.sched_setaffinity(0, job["cpus"])
    try:
        result = measure(job, phases)
    except BudgetBreach as breach:
        _write_result(result_path, {"ok": False, "error": str(breach), "over_budget": breach.verdict,
                                    "phases": phases})
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes an `error` row
        _write_result(result_path, {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": traceback.format_exc(), "phases": phases})
        return 1
    result["phases"] = phases
    result["wall_minus_monotonic"] = time.time() - time.monotonic()  # places profiler timestamps in the phases
    if os.environ.get("HARNESS_RECORD_IMPORTS") == "1":  # tests: the top-level packages this child imported
        result["imported_modules"] = sorted({name.partition(".")[0] for name in sys.modules})
    _write_result(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
