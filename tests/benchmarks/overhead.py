"""How much the harness itself distorts what it measures. Prints figures; asserts nothing.

1. Warm latency measured by `harness run` / the same transcribe call timed by a bare script
   (target <= 1.03), and the harness's peak RSS beside the max RSS `/usr/bin/time -v` reports for
   that bare script (target: within 5 %).
2. The RSS sampler's CPU cost while it watches a child (target <= 1 % of one core).

Both sides transcribe the same samples (a manifest: by default the JFK clip of real-dev, else the
first bundled sample) with the same decoding settings and thread environment.

Usage: python tests/benchmarks/overhead.py [--dataset MANIFEST] [--model base] [--quantization int8]
       [--threads 2] [--repeats 5] [--rounds 3]      (or: nox -s overhead -- ...)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from harness.data.datasets import Sample, build_default, load_manifest
from harness.measure.environment import cpu_model
from harness.measure.memcap import Watchdog
from harness.measure.runner import child_environment
from harness.weights import models

REPO = Path(__file__).resolve().parents[2]
REAL_DEV = REPO.parent / "shared" / "datasets" / "real-dev" / "manifest.jsonl"

BARE_SCRIPT = """
import json, sys, time
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
model_path, samples_json, quantization, threads, repeats = sys.argv[1:6]
samples = [(s["lang"], decode_audio(s["audio"], sampling_rate=16000)) for s in json.loads(samples_json)]
model = WhisperModel(model_path, device="cpu", compute_type=quantization, cpu_threads=int(threads), num_workers=1)
def once(lang, audio):
    start = time.perf_counter()
    segments, _ = model.transcribe(audio, language=lang, beam_size=5, best_of=5,
                                   temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                   condition_on_previous_text=True, without_timestamps=False, vad_filter=False)
    "".join(s.text for s in segments)
    return time.perf_counter() - start
once(*samples[0])
print(json.dumps([once(lang, audio) for lang, audio in samples for _ in range(int(repeats))]))
"""


def bare(model_path: Path, samples: list[Sample], args: argparse.Namespace) -> tuple[list[float], float]:
    """Latencies of the bare script, and its max RSS (MiB) from GNU time."""
    env = child_environment(args.threads)  # the thread settings a harness child gets
    out = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", BARE_SCRIPT, str(model_path),
                          json.dumps([s.to_json() for s in samples]), args.quantization, str(args.threads),
                          str(args.repeats)], capture_output=True, text=True, check=True, env=env)
    kbytes = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return json.loads(out.stdout.strip().splitlines()[-1]), kbytes / 1024


def harness(manifest: Path, args: argparse.Namespace, tmp: Path) -> dict:
    (tmp / "s.yaml").write_text(f"""
name: overhead
repeats: {args.repeats}
warmup: 1
matrix: {{model: [{args.model}], quantization: [{args.quantization}], threads: [{args.threads}]}}
""")
    subprocess.run([sys.executable, "-m", "harness", "run", str(tmp / "s.yaml"), "--dataset", str(manifest),
                    "--out", str(tmp / "run")], check=True, capture_output=True)
    return json.loads((tmp / "run" / "results.jsonl").read_text().splitlines()[0])


def sampler_cpu_cost(seconds: float) -> float:
    """CPU seconds the watchdog thread uses per wall second while watching a live child."""
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 << 20); time.sleep(60)"],
                             start_new_session=True)
    try:
        time.sleep(0.5)
        watchdog = Watchdog(child.pid, cap_mb=None, timeout_s=seconds * 10)
        watchdog.start()
        time.sleep(seconds)
        thread = next(t for t in psutil.Process().threads() if t.id == watchdog.native_id)
        cpu = thread.user_time + thread.system_time
        watchdog.stop.set()
        watchdog.join()
        return cpu / seconds
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="manifest to transcribe (default: real-dev's JFK clip)")
    parser.add_argument("--model", default="base")
    parser.add_argument("--quantization", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="warm timings per sample per process")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/harness process pairs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        manifest = args.dataset or default_manifest(tmp)
        samples = load_manifest(manifest)
        model_path = models.resolve(args.model).path
        print(f"machine: {cpu_model()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
              f"{args.model} {args.quantization}, {args.threads} threads; {len(samples)} sample(s) from {manifest}; "
              f"{args.rounds} x {args.repeats} warm timings per sample per side")

        # Alternate bare and harness runs: on a shared machine neither side gets all the quiet minutes.
        bare_latencies, harness_latencies, bare_rss, rows = [], [], 0.0, []
        for i in range(args.rounds):
            latencies, rss = bare(model_path, samples, args)
            bare_latencies += latencies
            bare_rss = max(bare_rss, rss)
            (tmp / f"round{i}").mkdir()
            rows.append(harness(manifest, args, tmp / f"round{i}"))
            harness_latencies += [t for s in rows[-1]["samples"] for t in s["latency_s"]]
    h, b = statistics.median(harness_latencies), statistics.median(bare_latencies)
    print(f"warm latency median over {len(harness_latencies)} timings each: harness {h:.3f} s, "
          f"bare script {b:.3f} s, ratio {h / b:.3f} (target <= 1.03)")
    peak = max(r["metrics"]["peak_rss_mb"] for r in rows)
    print(f"peak RSS: harness {peak:.1f} MiB, /usr/bin/time -v max RSS {bare_rss:.1f} MiB, "
          f"difference {100 * (peak - bare_rss) / bare_rss:+.1f} % (target within 5 %)")
    for lang, stats in sorted(rows[-1]["metrics"]["languages"].items()):
        print(f"corpus WER {lang}: {stats['wer']:.1%} over {stats['words']} words, {stats['samples']} samples; "
              f"RTF {rows[-1]['metrics']['rtf']:.3f}")
    cost = sampler_cpu_cost(10.0)
    print(f"RSS sampler CPU cost: {100 * cost:.2f} % of one core (target <= 1 %)")


def default_manifest(tmp: Path) -> Path:
    """real-dev's JFK clip in a manifest of its own, else the first bundled synthetic sample."""
    if REAL_DEV.is_file():
        jfk = next(line for line in REAL_DEV.read_text().splitlines() if json.loads(line)["id"] == "en_jfk")
        (tmp / "audio").mkdir()
        shutil.copyfile(REAL_DEV.parent / json.loads(jfk)["audio"], tmp / "audio" / "en_jfk.flac")
        entry = {**json.loads(jfk), "audio": "audio/en_jfk.flac"}
    else:
        sample = load_manifest(build_default() / "manifest.jsonl")[0]
        shutil.copyfile(sample.audio, tmp / Path(sample.audio).name)
        entry = {"id": sample.id, "lang": sample.lang, "audio": Path(sample.audio).name, "text": sample.text}
    (tmp / "manifest.jsonl").write_text(json.dumps(entry) + "\n")
    return tmp / "manifest.jsonl"


if __name__ == "__main__":
    main()
