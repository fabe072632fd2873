"""Budget-aware search (`harness run --search`): measure the configurations most likely to win first,
stop a run as soon as it breaks the memory or latency budget, and skip configurations that cannot win
given what is already measured. It returns the same recommendation as the exhaustive sweep under two
monotonicity assumptions, stated where they are used:

- memory: at the same backend, threads, pinning, chunking and beam size, a larger model or a wider
  quantization never needs less peak memory;
- speed: at the same quantization and those settings, a larger model is never faster.
"""

from __future__ import annotations

from typing import Any

from harness import backends
from harness import metrics as registry
from harness.analyze.recommend import violations
from harness.plan.scenario import RunSpec

# Relative model size; a directory path (unknown size) ranks last and is never skipped by size rules.
MODEL_RANK = {"tiny": 0, "base": 1, "small": 2, "distil-small": 2, "medium": 3, "distil-medium": 3,
              "turbo": 3.5, "large-v3-turbo": 3.5, "distil-large-v2": 3.5, "distil-large-v3": 3.5,
              "distil-large-v3.5": 3.5, "large": 4, "large-v1": 4, "large-v2": 4, "large-v3": 4}
# The budgets each assumption covers (harness.metrics `search`).
MEMORY_BUDGETS = tuple(m.name for m in registry.searched(registry.SEARCH_MEMORY))
SPEED_BUDGETS = tuple(m.name for m in registry.searched(registry.SEARCH_SPEED))


def model_rank(model: str) -> float | None:
    return MODEL_RANK.get(model.removesuffix(".en"))


def bytes_per_weight(backend: str, quantization: str) -> float:
    """The backend's bytes per weight at this quantization (BackendInfo.bytes_per_weight; 4 if unknown)."""
    return backends.info(backend).bytes_per_weight.get(quantization, 4)


def _settings(config: dict[str, Any]) -> tuple[Any, ...]:
    return (config["backend"], config["threads"], config["cpu_pinning"]["requested"], str(config["chunking"]),
            config["beam_size"])


def order(specs: list[RunSpec]) -> list[RunSpec]:
    """Smallest expected memory first: model size, then bytes per weight, then threads."""
    def key(spec: RunSpec) -> tuple[float, float, int]:
        rank = model_rank(spec.model)
        return (rank if rank is not None else 99, bytes_per_weight(spec.backend, spec.quantization), spec.threads)
    return sorted(specs, key=key)


def _no_smaller(spec: RunSpec, row: dict[str, Any], same_quantization: bool) -> bool:
    """True when `row` measured a configuration no larger than `spec` with the same settings."""
    c = row["config"]
    mine, theirs = model_rank(spec.model), model_rank(c["model"])
    if mine is None or theirs is None or _settings(c) != _settings(spec.config()) or row["run_id"] == spec.run_id:
        return False
    if same_quantization and c["quantization"] != spec.quantization:
        return False
    return theirs <= mine and bytes_per_weight(c["backend"], c["quantization"]) <= bytes_per_weight(spec.backend, spec.quantization)


def _broke(row: dict[str, Any], budget_names: tuple[str, ...], budgets: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    if row["status"] == "over_budget":
        return row.get("budget_verdict", {}).get("budget") in budget_names
    if row["status"] == "oom" and any(name in budgets for name in budget_names if name in MEMORY_BUDGETS):
        return True  # it needed more memory than the cap: more than any memory budget the cap allows
    if row["status"] != "ok":
        return False
    return any(v.budget in budget_names and v.value is not None for v in violations(row, budgets, rows))


def cannot_win(spec: RunSpec, measured: list[dict[str, Any]], budgets: dict[str, Any],
               languages: set[str]) -> str | None:
    """Why `spec` cannot be the recommendation given the rows measured so far, or None."""
    budgeted = {lang for m in registry.budgetable(per_language=True) for lang in budgets.get(m.name, {})}
    missing = sorted(lang for lang in budgeted & languages if lang != "en")
    if backends.info(spec.backend).english_only(spec.model) and missing:
        return (f"cannot win: {spec.model} is English-only and the budgets include "
                f"{', '.join(missing)} (a budgeted language without data is not met)")
    for row in measured:
        if _no_smaller(spec, row, same_quantization=False):
            memory = [name for name in MEMORY_BUDGETS if name in budgets]
            if memory and _broke(row, tuple(memory), budgets, measured):
                return (f"cannot win: the smaller configuration {row['run_id']} already broke the "
                        f"{' or '.join(memory)} budget")
            if row["status"] == "ok" and not violations(row, budgets, measured):
                return (f"cannot win: {row['run_id']} already meets every budget with no more memory "
                        f"({row['metrics']['peak_rss_mb']:.0f} MiB)")
        if _no_smaller(spec, row, same_quantization=True) and _broke(row, SPEED_BUDGETS, budgets, measured):
            return f"cannot win: the smaller model {row['run_id']} at the same quantization already broke a latency budget"
    return None


def stop_rules(budgets: dict[str, Any]) -> dict[str, float]:
    """What the worker may stop a run for, as soon as the final figure is certain to break it (harness.metrics
    `stop=WORKER`; a memory budget is watched by the runner's sampler instead, like the memory cap)."""
    return {m.name: float(budgets[m.name]) for m in registry.stopped_by(registry.WORKER) if m.name in budgets}
