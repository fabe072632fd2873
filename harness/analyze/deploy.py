"""A deployment snippet for a measured configuration: Kubernetes resources, environment, Python."""

from __future__ import annotations

import math
from typing import Any

from harness import backends

DEFAULT_HEADROOM = 0.15
MAX_HEADROOM = 10.0  # 1000 % over the peak: more is a typo (15 meant as 0.15), not a deployment


def snippet(row_summary: dict[str, Any], headroom: float = DEFAULT_HEADROOM) -> dict[str, Any]:
    """From a recommendation's `recommended` entry (README "Sizing a pod"):
    - limits.memory = the fitted limit (`harness fit`) + headroom, or the peak RSS + headroom when no fit
      was measured, rounded up to MiB; never above the memory cap the configuration was measured under,
      nor below the figure it is sized from (either conflict is a warning saying which figure was used);
    - requests.memory = the peak working set (what the kubelet counts) + headroom, at most the limit;
    - CPU = the `cpu_limit` the configuration was measured under, else its threads; requests = limits.
    A pinned configuration asks for requests = limits for memory too: Guaranteed QoS, which the kubelet's
    static CPU manager needs to give it exclusive cores."""
    config, metrics = row_summary["config"], row_summary["metrics"]
    limit, basis, warnings = _memory_limit(config, metrics, headroom)
    pinned = config["cpu_pinning"]["requested"] != "none"
    working_set = metrics.get("working_set_peak_mb")
    seen = ("peak working set", working_set) if working_set is not None else ("peak RSS", metrics["peak_rss_mb"])
    request = limit if pinned else min(limit, _mib(seen[1] * (1 + headroom)))
    threads = config["threads"]
    cpu = config.get("cpu_limit") or str(threads)
    backend = backends.info(config["backend"])
    env = backend.deploy_env(threads)
    valid = row_summary.get("envelope") or {}  # harness.analyze.envelope: the longest request measured
    resources = (
        (f"# {valid['valid_for']} of audio\n" if valid.get("valid_for") else "")
        + "resources:\n"
        "  requests:\n"
        f"    memory: \"{request}Mi\"\n"
        f"    cpu: \"{cpu}\"\n"
        "  limits:\n"
        f"    memory: \"{limit}Mi\"\n"
        f"    cpu: \"{cpu}\"\n"
    )
    env_yaml = "env:\n" + "".join(f"  - name: {k}\n    value: \"{v}\"\n" for k, v in env.items())
    python = backend.deploy_python(config["model"], config["quantization"], threads, config.get("model_source"))
    notes = [basis, *([valid["text"]] if valid.get("text") else [])]
    if pinned:
        notes.append(f"requests = limits for memory and CPU: it was measured pinned to dedicated cores, which needs "
                     f"Guaranteed QoS and the kubelet's static CPU manager policy (or taskset) to reproduce; its "
                     f"{seen[0]} was {seen[1]:.1f} MiB")
    else:
        source = ("what the kubelet, kubectl top and the HPA count: usage minus inactive page cache"
                  if working_set is not None else "no working set was measured")
        notes.append(f"requests.memory = {seen[0]} {seen[1]:.1f} MiB ({source}) + {headroom:.0%} headroom, "
                     "rounded up to MiB, at most the limit: " + ("requests = limits, Guaranteed QoS" if request == limit
                                                                 else "Burstable QoS (it was measured unpinned)"))
    notes.append(f"cpu = the CPU limit it was measured under (cpu_limit {cpu}: a CFS quota, as the kubelet sets it), "
                 "requests = limits" if config.get("cpu_limit") else "cpu = threads, requests = limits")
    return {"memory_limit_mib": limit, "memory_request_mib": request, "cpu": cpu, "headroom": headroom,
            "kubernetes": resources + env_yaml, "env": env, "python": python, "notes": notes, "warnings": warnings}


def _memory_limit(config: dict[str, Any], metrics: dict[str, Any], headroom: float) -> tuple[int, str, list[str]]:
    """limits.memory (MiB), the note saying what it is, and the warnings when the headroom would pass the
    memory cap or the cap is below the measured figure."""
    peak, fitted = metrics["peak_rss_mb"], metrics.get("min_limit_mb")
    if fitted is not None:
        name, figure = "fitted limit", fitted
        basis = (f"limits.memory = fitted limit {fitted:.1f} MiB (harness fit: the smallest kernel-enforced limit "
                 f"with no OOM kill and p95 within 10 %) + {headroom:.0%} headroom, rounded up to MiB")
        if fitted < peak:
            basis += (f"; below the peak RSS {peak:.1f} MiB because under a limit the kernel reclaims clean page "
                      "cache (the model file, the libraries) before it OOM-kills")
    else:
        name, figure = "peak RSS", peak
        basis = (f"limits.memory = measured peak RSS {peak:.1f} MiB + {headroom:.0%} headroom, rounded up to MiB "
                 "(no fit was measured: `harness fit` finds the smallest limit that really works)")
    wanted, floor = _mib(figure * (1 + headroom)), _mib(figure)
    cap = config.get("memory_cap_mb")
    if cap is None or wanted <= cap:
        return wanted, basis, []
    if floor > cap:
        return floor, f"{basis}; no headroom: the {name} alone is above the memory cap", [
            f"the {name} {figure:.1f} MiB is above the memory cap {cap:g} MiB the configuration was measured under: "
            f"the snippet's limit {floor} MiB uses the {name} with no headroom (it does not fit the cap)"]
    limit = math.floor(cap)
    return limit, f"{basis}; cut to the memory cap {cap:g} MiB", [
        f"{name} {figure:.1f} MiB + {headroom:.0%} headroom = {wanted} MiB is above the memory cap {cap:g} MiB the "
        f"configuration was measured under: the snippet's limit is the cap, {limit} MiB ({limit / figure - 1:.0%} "
        f"headroom over the {name})"]


def _mib(value: float) -> int:
    """Rounded up to MiB, ignoring float noise (350 x 2.2 is 770.0000000000001, not 771 MiB)."""
    return math.ceil(round(value, 6))
