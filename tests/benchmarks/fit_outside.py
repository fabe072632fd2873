"""Check a fitted memory limit outside the harness. Prints figures; asserts nothing.

For a configuration that `harness fit` fitted (a row with `metrics.fit`), run the same work in a plain
faster-whisper script (no harness code in the measured process) inside a cgroup v1/v2 memory limit made
here, with the same cold page cache: the fit's samples transcribed once to warm up and once timed. It
runs unconstrained once (the reference, with its VmHWM), then `--trials` times at `fit.min_limit_mb`,
at `--below` x that limit and at the deployment snippet's limit (the fit + 15 % headroom), and prints
per trial: completed or OOM-killed (the kernel's verdict), and the timed latency against the reference.
A fitted limit holds when every trial at it completes, and the
lower one is OOM-killed or more than 10 % slower.

Usage: python tests/benchmarks/fit_outside.py RUN_DIR --run RUN_ID --dataset MANIFEST [--trials 3] [--below 0.9]
Needs root (or a delegated cgroup v2 subtree); removes every cgroup it makes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import store
from harness.data.datasets import load_manifest
from harness.measure import memcap, page_cache
from harness.weights import models

PLAIN_SCRIPT = """
import json, sys, time
from faster_whisper import WhisperModel, decode_audio
path, compute_type, threads, audio = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
model = WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads)
timed = []
for repetition in range(2):  # a warm-up pass, then the timed one (as a fit step runs it)
    for file, lang in audio:
        start = time.perf_counter()
        list(model.transcribe(decode_audio(file), language=lang, beam_size=5)[0])
        if repetition:
            timed.append(time.perf_counter() - start)
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"latency_max_s": max(timed), "vmhwm_mb": int(hwm) / 1024}))
"""


def trial(limit_mb: float | None, args: list[str], files: list[Path], memory: memcap.Controller | None) -> dict:
    page_cache.evict_for_worker(Path(args[0]), files)  # cold, as each fit step starts
    group = memcap.RunCgroup.create(f"{memcap.CGROUP_PREFIX}{os.getpid()}-outside", memory, limit_mb) \
        if limit_mb is not None else None
    command = [sys.executable, "-c", PLAIN_SCRIPT, *args]
    try:
        start = time.perf_counter()
        done = subprocess.run(group.wrap(command) if group else command, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": args[2]})
        oom = bool(group and group.oom_kills())
        out = {"limit_mb": limit_mb, "seconds": round(time.perf_counter() - start, 1), "oom_killed": oom,
               "returncode": done.returncode}
        if done.returncode == 0:
            out.update(json.loads(done.stdout.strip().splitlines()[-1]))
        return out
    finally:
        if group:
            group.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--run", required=True, metavar="RUN_ID")
    parser.add_argument("--dataset", required=True, type=Path, help="the manifest the run measured")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--below", type=float, default=0.9)
    opts = parser.parse_args()
    rows, _ = store.read_run(opts.run_dir)
    row = next(r for r in rows if r["run_id"] == opts.run)
    fit, config = row["metrics"]["fit"], row["config"]
    if config["backend"] != "faster-whisper":
        raise SystemExit("the plain script is faster-whisper's; pick a faster-whisper configuration")
    memory = memcap.find_controller("memory")
    if memory is None:
        raise SystemExit(f"no cgroup can be made here: needs {memcap.cgroup_requirement()}")
    samples = {s.id: s for s in load_manifest(opts.dataset)}
    chosen = [samples[i] for i in fit["samples"] if samples[i].lang not in (row.get("skipped_languages") or {})]
    files = [Path(s.audio) for s in chosen]
    path = models.resolve(config["model"]).path
    args = [str(path), config["quantization"], str(config["threads"]),
            json.dumps([[str(f), s.lang] for f, s in zip(files, chosen)])]
    limit = fit["min_limit_mb"]
    print(f"{opts.run}: fit.min_limit_mb {limit} MiB; samples {', '.join(fit['samples'])}")
    reference = trial(None, args, files, memory)
    print(f"unconstrained: {reference}")
    for mb in (limit, round(limit * opts.below, 1), math.ceil(limit * 1.15)):
        for _ in range(opts.trials):
            t = trial(mb, args, files, memory)
            slower = t.get("latency_max_s", 0) / reference["latency_max_s"] - 1 if "latency_max_s" in t else None
            print(f"{mb} MiB: " + ("OOM-killed (kernel)" if t["oom_killed"] else
                                   f"exit {t['returncode']}" if t["returncode"] else
                                   f"completed, timed latency {t['latency_max_s']:.2f} s ({slower:+.0%} vs unconstrained)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
