"""The results contract: the typed shape of a result row, of the job an executor runs, and of the
worker child's reply. Field names are the contract users, CI and reports depend on (docs/results-contract.md);
renaming one is a breaking change that bumps SCHEMA_VERSION, adding one is not.

Every stage meets here: the measuring side builds rows with `Row` (once, in harness.measure.rows),
the store validates each line it reads with it, and `python -m harness.contract` writes the JSON
Schema checked into the repository (schemas/). The models allow extra fields, so a row written by a
newer harness, or an extra a user added, survives a read-modify-write (e.g. `harness baseline save`).

The worker child does not import this module (pydantic would add to the memory it measures): it
reads its job and writes its reply as plain JSON of exactly these shapes, validated in the parent.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import SCHEMA_VERSION


class Status(str, enum.Enum):
    """How a configuration's run ended. Failures are results, not exceptions."""

    OK = "ok"
    OOM = "oom"  # passed the memory cap (kernel OOM kill in a cgroup, or the watchdog)
    TIMEOUT = "timeout"
    ERROR = "error"  # crash, exception, missing model: `reason` says which
    SKIPPED = "skipped"  # cannot run here (English-only model, backend not installed, search proved it cannot win)
    OVER_BUDGET = "over_budget"  # --search stopped it once it was certain to break a budget


FAILED = (Status.OOM, Status.TIMEOUT, Status.ERROR)


class _Open(BaseModel):
    """A contract object: typed known fields, unknown ones kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class CpuPinning(_Open):
    requested: str
    effective: list[int] | None = None


class Config(_Open):
    backend: str
    model: str
    quantization: str
    threads: int = Field(ge=1)
    cpu_pinning: CpuPinning
    chunking: dict[str, Any] = Field(default_factory=lambda: {"mode": "whole"})
    beam_size: int | None = None
    decoding: dict[str, Any] | None = None
    memory_cap_mb: float | None = None
    threads_effective: dict[str, int] | None = None
    compute_type_effective: str | None = None
    memory_cap_mode: str | None = None
    model_source: str | None = None


class LanguageMetrics(_Open):
    wer: float | None = None
    cer: float | None = None
    words: int | None = None
    samples: int | None = None
    audio_s: float | None = None
    rtf: float | None = None
    synthetic: bool | None = None
    # 95 % bootstrap intervals [low, high] over utterances (harness.analyze.uncertainty); rows before
    # them have none.
    wer_ci: tuple[float, float] | None = None
    cer_ci: tuple[float, float] | None = None
    flagged: int | None = None  # utterances with a hallucination flag (harness.analyze.hallucination)
    flags: dict[str, int] | None = None  # per flag: how many utterances earned it


class Metrics(_Open):
    """Run-level figures (units in the names: _mb = MiB, _s = seconds; rtf and fractions unitless).
    Which ones exist, and what they mean, is the metric registry's business (harness.metrics)."""

    peak_rss_mb: float | None = None
    languages: dict[str, LanguageMetrics] = Field(default_factory=dict)


class SampleResult(_Open):
    id: str
    lang: str
    audio_s: float | None = None
    latency_s: list[float] = Field(default_factory=list)
    hypothesis: str | None = None
    reference: str | None = None
    wer: float | None = None
    flags: list[str] | None = None  # hallucination flags this transcript earned (harness.analyze.hallucination)


class Row(_Open):
    """One configuration's result: one line of results.jsonl."""

    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    run_id: str = Field(min_length=1)
    scenario: str
    status: Status
    reason: str = ""
    config: Config
    metrics: Metrics
    samples: list[SampleResult] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)
    skipped_languages: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    timeline: dict[str, Any] | None = None
    environment: dict[str, Any] = Field(default_factory=dict)  # the machine that measured it
    node: dict[str, Any] | None = None  # which node measured it: executor, host, machine class (Ray: node id)
    budget_verdict: dict[str, Any] | None = None
    profiler: str | None = None  # a profiled run (not a measurement)
    profile_of: str | None = None
    # The max_audio_s probes (harness.data.probe), one per language: transcribed once, after the timed
    # samples, inside the row's peak memory figures but outside its latency, RTF and WER statistics.
    probes: list[SampleResult] | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as JSON data, with exactly the fields that were given (none added as defaults)."""
        return self.model_dump(mode="json", exclude_unset=True)


class SampleRef(_Open):
    """A sample as a job carries it: enough for any node to find (or receive) the audio and score it."""

    id: str
    lang: str
    audio: str  # a path on the node that runs the job (the executor places the file there)
    text: str
    dataset: str
    synthetic: bool = False
    sha256: str | None = None  # content hash: the key under which the audio travels to other nodes
    duration_s: float | None = None
    probe: bool = False  # the max_audio_s probe recording: transcribed once, outside the statistics


class Job(_Open):
    """What an executor hands to a node: self-contained (no path of the driver's machine is needed
    beyond the audio, which travels by content hash). The node resolves the model itself."""

    schema_version: int = SCHEMA_VERSION
    spec: dict[str, Any]  # harness.plan.scenario.RunSpec.to_json()
    samples: list[SampleRef]
    data: dict[str, Any]  # what rows record about the data (datasets, normalization)
    stop_when: dict[str, float] = Field(default_factory=dict)
    memory_budget_mb: float | None = None
    profiler: str | None = None
    fit: bool = False  # bisect the configuration's memory limit on the node (harness.measure.fit), not measure it
    machine_class: str | None = None  # run only on a node of this machine class (contract.machine_class)


class WorkerJob(_Open):
    """The worker child's input (JOB.json), written by the node after it resolved the model."""

    spec: dict[str, Any]
    model_path: str
    cpus: list[int] | None
    samples: list[dict[str, Any]]
    stop_when: dict[str, float] = Field(default_factory=dict)
    profiler: str | None = None
    parent_pid: int


class WorkerReply(_Open):
    """The worker child's output (RESULT.json): `ok` with figures, or the error that stopped it."""

    ok: bool
    error: str | None = None
    traceback: str | None = None
    over_budget: dict[str, Any] | None = None
    phases: dict[str, float] = Field(default_factory=dict)
    load_s: float | None = None
    rss_after_load_mb: float | None = None
    rss_anon_after_load_mb: float | None = None
    rss_file_after_load_mb: float | None = None
    vmhwm_mb: float | None = None
    first_latency_s: float | None = None
    samples: list[dict[str, Any]] = Field(default_factory=list)
    effective: dict[str, Any] = Field(default_factory=dict)
    wall_minus_monotonic: float | None = None


def machine_class(environment: dict[str, Any]) -> str:
    """What makes timings comparable: the CPU model and the number of logical cores."""
    return f"{environment.get('cpu', 'unknown CPU')} x{environment.get('logical_cores', '?')}"


# pydantic's error types, in the words the harness uses for what a field should be
_EXPECTED = {"dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
             "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
             "string_type": "a string", "list_type": "a list", "bool_type": "true or false",
             "bool_parsing": "true or false", "string_too_short": "a non-empty string"}


def validation_message(exc: ValidationError) -> str:
    """The first problem of a failed validation as "field 'a.b': invalid value V; expected ..."."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if error["type"] == "missing":
        return f"field '{where}' is missing{more}"
    if error["type"] == "enum":
        expected = "one of " + error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
    else:
        expected = _EXPECTED.get(error["type"], error["msg"][0].lower() + error["msg"][1:])
    shown = json.dumps(error.get("input"), default=str, ensure_ascii=False)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"field '{where}': invalid value {shown}; expected {expected}{more}"


SCHEMAS = {"row": Row, "job": Job, "worker-job": WorkerJob, "worker-reply": WorkerReply}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in SCHEMAS.items()}


def main(argv: list[str]) -> int:
    """`python -m harness.contract DIR`: write DIR/<name>.schema.json for every contract model."""
    from pathlib import Path

    out = Path(argv[0] if argv else "schemas")
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
