"""A deployment snippet for a measured configuration: Kubernetes resources, environment, Python."""

from __future__ import annotations

import math
from typing import Any

DEFAULT_HEADROOM = 0.15


def snippet(row_summary: dict[str, Any], headroom: float = DEFAULT_HEADROOM) -> dict[str, Any]:
    """From a recommendation's `recommended` entry: memory = measured peak + headroom (MiB, rounded
    up); CPU = threads, requests = limits (integer CPUs -> Guaranteed QoS, which the kubelet's static
    CPU manager needs to pin cores)."""
    config, metrics = row_summary["config"], row_summary["metrics"]
    memory_mib = math.ceil(metrics["peak_rss_mb"] * (1 + headroom))
    threads = config["threads"]
    pinned = config["cpu_pinning"]["requested"] != "none"
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    resources = (
        "resources:\n"
        "  requests:\n"
        f"    memory: \"{memory_mib}Mi\"\n"
        f"    cpu: \"{threads}\"\n"
        "  limits:\n"
        f"    memory: \"{memory_mib}Mi\"\n"
        f"    cpu: \"{threads}\"\n"
    )
    env_yaml = "env:\n" + "".join(f"  - name: {k}\n    value: \"{v}\"\n" for k, v in env.items())
    model = config["model"]
    python = (f"model = WhisperModel({model!r}, device=\"cpu\", compute_type={config['quantization']!r}, "
              f"cpu_threads={threads}, num_workers=1)")
    notes = [
        f"memory = measured peak RSS {metrics['peak_rss_mb']:.1f} MiB + {headroom:.0%} headroom, rounded up to MiB",
        "integer CPU requests equal to limits give the pod Guaranteed QoS, which the kubelet's static CPU "
        "manager policy needs to give it exclusive (pinned) cores",
    ]
    if pinned:
        notes.append("this configuration was measured pinned to dedicated cores: deploy with the static CPU "
                     "manager policy (or taskset) to reproduce it")
    return {"memory_mib": memory_mib, "cpu": threads, "headroom": headroom, "kubernetes": resources + env_yaml,
            "env": env, "python": f"from faster_whisper import WhisperModel\n{python}", "notes": notes}
