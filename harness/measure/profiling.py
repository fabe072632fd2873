"""Profiling one configuration: the same isolated worker, started under memray or scalene.

A profiled run is a separate run of the configuration (one timed repetition), never the measured one,
so profiler overhead cannot reach the benchmark figures; its row carries `profiler` and `profile_of`
and is left out of recommendations and comparisons. Artifacts go to RUN_DIR/profiles/<run id>/:

- memray (native traces): the capture, its flamegraph HTML (memory live at the high-water mark, by
  stack), `memray stats` JSON, and a summary: the peak, the moment it happened (which phase of the
  worker) and the allocation sites holding the most memory at that moment.
- scalene: its JSON and standalone HTML profiles (CPU time in Python vs native code vs system, memory
  by line), and a summary: the shares of CPU time and the lines with the most time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import backends
from harness.catalog import PROFILERS  # noqa: F401 - the profilers this module runs

TOP_SITES = 10
MEMRAY_CAPTURE = "memray.bin"
PROFILES_DIR = "profiles"  # in the run directory; one folder per profiled run
SUMMARY = "summary.json"  # what the report shows, also kept as a file
WORKER_TIMES = "worker-phases.json"  # the worker's phase marks, to place the memory peak in one
# Frames of the allocator itself, skipped when naming where an allocation comes from.
ALLOCATOR_FRAMES = ("malloc", "calloc", "realloc", "memalign", "aligned_alloc", "posix_memalign", "mmap",
                    "operator new", "_Znwm", "_Znam", "PyMem_", "PyObject_Malloc", "_PyObject_", "PyDataMem",
                    "default_malloc", "alloc_mmap", "pymalloc", "new_arena", "allocate_from_new_pool")


def worker_command(profiler: str, folder: Path, backend: str) -> list[str]:
    """The worker's command line under `profiler` (the job and result paths are appended)."""
    if profiler == "memray":
        return [sys.executable, "-m", "memray", "run", "--native", "--quiet", "--force",
                "--output", str(folder / MEMRAY_CAPTURE), "-m", "harness.child.worker"]
    if profiler == "scalene":
        # scalene runs a script, not a module: a two-line one here (running harness/worker.py itself would
        # put harness/ first on sys.path, where profiling.py, datasets.py ... shadow other modules).
        launcher = folder / "worker_main.py"
        launcher.write_text("import sys\nfrom harness.child.worker import main\nsys.exit(main(sys.argv[1:]))\n")
        # --profile-all: the backend's library's Python layers too, not only the harness. Some backends
        # crash under scalene's memory profiling (its malloc interposer): CPU time only for those.
        cpu_only = ["--cpu-only"] if backends.info(backend).scalene_cpu_only else []
        return [sys.executable, "-m", "scalene", "run", "--profile-all", *cpu_only,
                "--outfile", str(folder / "scalene.json"), str(launcher), "---"]
    raise ValueError(profiler)


def artifacts(profiler: str, folder: Path, result: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Render the profiler's reports next to its capture; return ({name: path}, summary). Done in a
    child process (`python -m harness.measure.profiling`): reading a capture of a PyTorch run takes gigabytes,
    which the harness, going on to measure, must not keep."""
    (folder / WORKER_TIMES).write_text(json.dumps({k: (result or {}).get(k) for k in ("phases", "wall_minus_monotonic")}))
    problem = _run([sys.executable, "-m", "harness.measure.profiling", profiler, str(folder)], folder)
    if not (folder / SUMMARY).is_file():
        return {}, {"error": f"could not read the {profiler} profile: {problem}"}
    done = json.loads((folder / SUMMARY).read_text())
    return {**done["files"], SUMMARY: f"{PROFILES_DIR}/{folder.name}/{SUMMARY}"}, done["summary"]


def main(argv: list[str]) -> int:
    profiler, folder = argv[0], Path(argv[1])
    worker_times = json.loads((folder / WORKER_TIMES).read_text())
    files, summary = _memray(folder, worker_times) if profiler == "memray" else _scalene(folder)
    (folder / SUMMARY).write_text(json.dumps({"files": files, "summary": summary}, indent=2))
    return 0


def _run(argv: list[str], folder: Path) -> str | None:
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip().splitlines()[-1]


def _memray(folder: Path, worker_times: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    from memray import FileReader

    capture = folder / MEMRAY_CAPTURE
    if not capture.is_file():
        return {}, {"error": "memray wrote no capture (the worker ended before tracking started)"}
    memray = [sys.executable, "-m", "memray"]
    problems = [p for p in (_run([*memray, "flamegraph", "--force", "-o", "memray-flamegraph.html", capture.name], folder),
                            _run([*memray, "stats", "--json", "--force", "-o", "memray-stats.json", capture.name], folder)) if p]
    reader = FileReader(str(capture))
    peak = reader.metadata.peak_memory
    sites: dict[str, dict[str, Any]] = defaultdict(lambda: {"bytes": 0, "allocations": 0})
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        key = allocation_site(record.hybrid_stack_trace())
        sites[key]["bytes"] += record.size
        sites[key]["allocations"] += record.n_allocations
    top = sorted(sites.items(), key=lambda kv: kv[1]["bytes"], reverse=True)[:TOP_SITES]
    snapshots = list(reader.get_memory_snapshots())
    summary: dict[str, Any] = {
        "peak_heap_mb": round(peak / 2**20, 1),
        "top_sites_at_peak": [{"site": site, "mb": round(v["bytes"] / 2**20, 1), "share": round(v["bytes"] / peak, 3),
                               "allocations": v["allocations"]} for site, v in top],
    }
    if snapshots:
        at_peak = max(snapshots, key=lambda s: s.heap)
        summary["peak_at_s"] = round((at_peak.time - snapshots[0].time) / 1000, 2)
        summary["peak_phase"] = _phase_at(at_peak.time / 1000, worker_times)
    if problems:
        summary["warnings"] = problems
    files = {name: f"{PROFILES_DIR}/{folder.name}/{name}" for name in ("memray-flamegraph.html", "memray-stats.json", MEMRAY_CAPTURE)
             if (folder / name).is_file()}
    return files, summary


def allocation_site(stack: list[tuple[str, str, int]]) -> str:
    """Where an allocation comes from, leaf first: the first Python frame (the harness's or a
    library's line that asked for it) and the first native frame that is not the allocator."""
    native = next((func for func, filename, _ in stack
                   if not filename.endswith(".py") and not any(a in func for a in ALLOCATOR_FRAMES)), None)
    python = next((f"{func} ({_short_path(filename)}:{line})" for func, filename, line in stack if filename.endswith(".py")), None)
    return " <- ".join(part for part in (native, python) if part) or "unknown"


def _short_path(filename: str) -> str:
    """site-packages/faster_whisper/transcribe.py -> faster_whisper/transcribe.py"""
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return "/".join(parts[-2:])


def _phase_at(wall_s: float, worker_times: dict[str, Any]) -> str:
    """Which phase of the worker was running at wall-clock second `wall_s`."""
    if not worker_times.get("phases") or worker_times.get("wall_minus_monotonic") is None:
        return "unknown"
    t = wall_s - worker_times["wall_minus_monotonic"]
    names = {"start": "importing libraries", "imported": "decoding audio", "audio_decoded": "loading the model",
             "loaded": "cold transcription and warm-up", "measure_start": "timed transcriptions", "done": "finishing"}
    marks = sorted((v, k) for k, v in worker_times["phases"].items() if k in names)
    current = "starting"
    for moment, name in marks:
        if t >= moment:
            current = names[name]
    return current


def _scalene(folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
    profile = folder / "scalene.json"
    if not profile.is_file():
        return {}, {"error": "scalene wrote no profile"}
    problem = _run([sys.executable, "-m", "scalene", "view", "--standalone", profile.name], folder)
    data = json.loads(profile.read_text())
    python = native = system = 0.0
    lines = []
    for filename, info in data.get("files", {}).items():
        for line in info.get("lines", []):
            py, c, sys_ = line["n_cpu_percent_python"], line["n_cpu_percent_c"], line["n_sys_percent"]
            python, native, system = python + py, native + c, system + sys_
            if py + c + sys_ > 0:
                lines.append({"line": f"{_short_path(filename)}:{line['lineno']}", "code": line["line"].strip(),
                              "cpu_percent": round(py + c + sys_, 1), "native_percent": round(c, 1),
                              "peak_mb": round(line.get("n_peak_mb", 0.0), 1)})
    total = python + native + system
    summary: dict[str, Any] = {
        "elapsed_s": round(data.get("elapsed_time_sec", 0.0), 1),
        "cpu_share": {"python": round(python / total, 3), "native": round(native / total, 3),
                      "system": round(system / total, 3)} if total else {},
        "top_lines": sorted(lines, key=lambda x: x["cpu_percent"], reverse=True)[:TOP_SITES],
        "max_footprint_mb": round(data.get("max_footprint_mb", 0.0), 1),
    }
    if problem:
        summary["warnings"] = [problem]
    html = folder / "scalene-profile.html"
    files = {"scalene-profile.html": html, "scalene.json": profile}
    return {name: f"{PROFILES_DIR}/{folder.name}/{name}" for name, path in files.items() if path.is_file()}, summary


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
