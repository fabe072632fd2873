"""A deployment snippet for a measured configuration: Kubernetes resources, environment, Python."""

from __future__ import annotations

import math
from typing import Any

from harness import backends

DEFAULT_HEADROOM = 0.15
MAX_HEADROOM = 10.0  # 1000 % over the peak: more is a typo (15 meant as 0.15), not a deployment


def snippet(row_summary: dict[str, Any], headroom: float = DEFAULT_HEADROOM) -> dict[str, Any]:
    """From a recommendation's `recommended` entry: memory = measured peak + headroom (MiB, rounded
    up); CPU = threads, requests = limits (integer CPUs -> Guaranteed QoS, which the kubelet's static
    CPU manager needs to pin cores)."""
    config, metrics = row_summary["config"], row_summary["metrics"]
    memory_mib = math.ceil(metrics["peak_rss_mb"] * (1 + headroom))
    threads = config["threads"]
    pinned = config["cpu_pinning"]["requested"] != "none"
    backend = backends.info(config["backend"])
    env = backend.deploy_env(threads)
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
    python = backend.deploy_python(config["model"], config["quantization"], threads)
    notes = [
        f"memory = measured peak RSS {metrics['peak_rss_mb']:.1f} MiB + {headroom:.0%} headroom, rounded up to MiB",
        "integer CPU requests equal to limits give the pod Guaranteed QoS, which the kubelet's static CPU "
        "manager policy needs to give it exclusive (pinned) cores",
    ]
    if pinned:
        notes.append("this configuration was measured pinned to dedicated cores: deploy with the static CPU "
                     "manager policy (or taskset) to reproduce it")
    return {"memory_mib": memory_mib, "cpu": threads, "headroom": headroom, "kubernetes": resources + env_yaml,
            "env": env, "python": python, "notes": notes}

