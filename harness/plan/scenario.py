"""Scenario YAML -> validated `Scenario` -> expanded `RunSpec`s with stable ids.

Every rejection names the file, the field path, the offending value and what is allowed, so a user
can fix the YAML without reading this code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import backends
from harness import metrics as metric_registry
from harness.analyze.scoring import NORMALIZERS, NUMBER_MODES, Normalization, default_normalization, num2words_locale
from harness.catalog import CHUNKING_MODES, CHUNKING_SETTINGS, LANGUAGES, WHISPER_MODELS, chunking_label
from harness.child.stream import BUFFERS
from harness.errors import UserError, did_you_mean

AXES = ("backend", "model", "quantization", "threads", "cpu_pinning", "chunking", "beam_size", "cpu_limit")
AXIS_DEFAULTS: dict[str, Any] = {
    "backend": backends.DEFAULT,
    "quantization": "int8",
    "threads": 1,
    "cpu_pinning": "none",
    "chunking": {"mode": "whole"},
    "beam_size": 5,
    "cpu_limit": "none",  # a CFS quota as Kubernetes writes it: "250m", "1", "1.5"; none = unlimited
}
# Axes that entered the matrix later: at their default they are left out of the run id and its hash,
# so the run ids of scenarios written before them (resume, baselines) do not change.
LATE_AXES = ("cpu_limit",)
MIN_CPU_MILLIS = 10  # the kernel's smallest CFS quota: 1 ms per 100 ms period
PAGE_CACHE_MODES = ("cold", "warm")
TOP_LEVEL_KEYS = (
    "name", "description", "question", "datasets", "languages", "repeats", "warmup", "timeout_s",
    "memory_cap_mb", "matrix", "exclude", "include", "budgets", "decoding",
    "max_samples_per_language", "normalization", "page_cache", "max_audio_s", "fit",
)
MAX_AUDIO_S_LIMIT = 4 * 3600  # a probe recording is built and transcribed per language: more is a unit mistake
# The metrics a budget may name (harness.metrics: `budget=True`): one limit each, or per language.
BUDGET_SCALARS = tuple(m.name for m in metric_registry.budgetable(per_language=False))
BUDGET_PER_LANGUAGE = tuple(m.name for m in metric_registry.budgetable(per_language=True))
# {quantization: float32, max: 0.02}: WER may exceed that of the same configuration at the reference
# quantization by at most `max` (a fraction: 0.02 = 2 points), in every language measured.
BUDGET_WER_INCREASE = "wer_increase_vs"
# It is judged on the 95 % interval of the increase: met, failed, or insufficient data, which counts as
# not met unless `insufficient_data: met`.
WER_INCREASE_INSUFFICIENT = ("not-met", "met")
# Decoding settings change speed and WER, so they are part of every run's recorded config.
DECODING_DEFAULTS: dict[str, Any] = {
    "best_of": 5,
    "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "condition_on_previous_text": True,
    "without_timestamps": False,
}
MAX_YAML_ALIASES = 50


@dataclass(frozen=True)
class RunSpec:
    """One configuration to measure in its own subprocess. Plain data: serialized to the child."""

    run_id: str
    scenario: str
    backend: str
    model: str
    quantization: str
    threads: int
    cpu_pinning: str
    chunking: dict[str, Any]
    beam_size: int
    decoding: dict[str, Any]
    memory_cap_mb: float | None
    timeout_s: float
    repeats: int
    warmup: int
    cpu_limit: str | None = None  # canonical Kubernetes quantity ("250m", "1", "1500m"); None: unlimited
    page_cache: str = "cold"  # cold: the worker's files are evicted from the page cache first (a new pod)

    def config(self) -> dict[str, Any]:
        """The `config` object of a result row (before the runner adds what it observed)."""
        return {
            "backend": self.backend, "model": self.model, "quantization": self.quantization,
            "threads": self.threads, "cpu_pinning": {"requested": self.cpu_pinning},
            "chunking": dict(self.chunking), "beam_size": self.beam_size,
            "decoding": dict(self.decoding), "memory_cap_mb": self.memory_cap_mb,
            "cpu_limit": self.cpu_limit, "page_cache": self.page_cache,
        }

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str = ""
    question: str = ""  # the deployment question the report answers
    datasets: tuple[str, ...] = ("default",)
    languages: tuple[str, ...] | None = None
    repeats: int = 3
    warmup: int = 1
    timeout_s: float = 900.0
    memory_cap_mb: float | None = None
    page_cache: str = "cold"
    fit: bool = False  # `harness run` also fits the memory limit of every ok configuration (as --fit)
    max_samples_per_language: int | None = None
    max_audio_s: float | None = None  # the longest request the service accepts: a probe of it per language
    decoding: dict[str, Any] = field(default_factory=lambda: dict(DECODING_DEFAULTS))
    matrix: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()
    include: tuple[dict[str, Any], ...] = ()
    budgets: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Normalization] = field(default_factory=dict)  # languages not set: the default

    def normalization_for(self, lang: str) -> Normalization:
        return self.normalization.get(lang) or default_normalization(lang)

    def quick(self) -> Scenario:
        """The short version (`--quick`): one timed repetition, two samples per language."""
        limit = min(self.max_samples_per_language or 2, 2)
        return dataclasses.replace(self, repeats=1, warmup=1, max_samples_per_language=limit)

    def expand(self) -> list[RunSpec]:
        """The matrix minus `exclude`, plus `include`, in a stable order, without duplicates."""
        combos = [dict(zip(AXES, values)) for values in itertools.product(*(self.matrix[a] for a in AXES))]
        combos = [c for c in combos if not any(_matches(c, ex) for ex in self.exclude)]
        for extra in self.include:
            combos.append({a: extra.get(a, self.matrix[a][0]) for a in AXES})
        specs: dict[str, RunSpec] = {}
        for combo in combos:
            spec = self._spec(combo)
            specs.setdefault(spec.run_id, spec)
        return list(specs.values())

    def _spec(self, combo: dict[str, Any]) -> RunSpec:
        identity = {**{a: v for a, v in combo.items() if a not in LATE_AXES or v != AXIS_DEFAULTS[a]},
                    "decoding": self.decoding}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:6]
        chunk = chunking_label(combo["chunking"]).replace(" ", "-")
        pin = str(combo["cpu_pinning"]).replace(",", "_")
        cpu_limit = None if combo["cpu_limit"] == "none" else combo["cpu_limit"]
        slug = (f"{combo['backend']}-{Path(combo['model']).name}-{combo['quantization']}"
                f"-t{combo['threads']}-pin{pin}-{chunk}-b{combo['beam_size']}" + (f"-cpu{cpu_limit}" if cpu_limit else ""))
        return RunSpec(
            run_id=f"{slug}-{digest}", scenario=self.name, backend=combo["backend"],
            model=combo["model"], quantization=combo["quantization"], threads=combo["threads"],
            cpu_pinning=str(combo["cpu_pinning"]), chunking=dict(combo["chunking"]),
            beam_size=combo["beam_size"], decoding=dict(self.decoding),
            memory_cap_mb=self.memory_cap_mb, timeout_s=self.timeout_s,
            repeats=self.repeats, warmup=self.warmup, cpu_limit=cpu_limit, page_cache=self.page_cache,
        )


def _matches(combo: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(combo.get(k) == v for k, v in pattern.items())


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document using aliases many times (a 'billion laughs' bomb)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} alias references (refused: a YAML alias bomb?)")
        return super().compose_node(parent, index)


class _Checker:
    """Validates one file; every error names the file and the field path."""

    def __init__(self, path: Path, on_this_machine: bool = True) -> None:
        self.path = path
        # Checks against the machine that validates (CPUs that exist, model directories present): off
        # when reading a run directory measured elsewhere, so it renders and compares on any machine.
        self.on_this_machine = on_this_machine

    def fail(self, where: str, value: Any, allowed: str) -> UserError:
        if isinstance(value, float) and not math.isfinite(value):  # as written in YAML: .nan, .inf, -.inf
            shown = ".nan" if math.isnan(value) else ("-" if value < 0 else "") + ".inf"
        else:
            shown = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return UserError(f"{self.path}: field '{where}': invalid value {shown}; {allowed}")

    def mapping(self, value: Any, where: str, allowed_keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, value, "expected a mapping (key: value)")
        for key in value:
            if key not in allowed_keys:
                prefix = f"{where}." if where != "(top level)" else ""
                raise UserError(
                    f"{self.path}: unknown key '{prefix}{key}'{did_you_mean(key, allowed_keys)}; "
                    f"allowed keys: {', '.join(allowed_keys)}"
                )
        return value

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, value, f"expected an integer >= {minimum}")
        return value

    def number(self, value: Any, where: str, positive: bool = True) -> float:
        """A finite number: NaN or infinity would disable a timeout or a cap, and results.jsonl cannot hold them."""
        try:
            number = math.nan if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number) or (positive and number <= 0):
            raise self.fail(where, value, "expected a finite number > 0" if positive else "expected a finite number")
        return number

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, value, "expected a non-empty string")
        return value

    def string_list(self, value: Any, where: str) -> list[str]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(where, value, "expected a non-empty list")
        return [self.string(v, f"{where}[{i}]") for i, v in enumerate(items)]


def parse_cpu_list(text: str) -> list[int]:
    """'0' / '0,1' / '0-3' / '0-1,4' -> sorted CPU numbers; ValueError if malformed."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(part)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(part)
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def load_scenario(path: str | os.PathLike[str], on_this_machine: bool = True) -> Scenario:
    """Read and validate a scenario file; raises UserError naming file, field and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: scenario file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read scenario: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    return validate_scenario(raw, path, on_this_machine)


def validate_scenario(raw: Any, path: Path, on_this_machine: bool = True) -> Scenario:
    """`on_this_machine=False`: the scenario of a run measured elsewhere (report, compare): no check that
    its CPUs or model directories exist here."""
    c = _Checker(path, on_this_machine)
    if raw is None:
        raise UserError(f"{path}: the scenario is empty; it needs at least 'name' and 'matrix'")
    doc = c.mapping(raw, "(top level)", TOP_LEVEL_KEYS)
    for required in ("name", "matrix"):
        if required not in doc:
            raise UserError(f"{path}: missing required key '{required}'")
    name = c.string(doc["name"], "name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise c.fail("name", name, "use letters, digits, '.', '_' and '-' (it names the run directory)")

    languages = None
    if doc.get("languages") is not None:
        languages = tuple(c.string_list(doc["languages"], "languages"))
        for i, lang in enumerate(languages):
            if lang not in LANGUAGES:
                raise c.fail(f"languages[{i}]", lang, f"expected a Whisper language code such as en, pt{did_you_mean(lang, LANGUAGES)}")

    matrix = _validate_matrix(c, doc["matrix"])
    exclude = tuple(_validate_partial(c, e, f"exclude[{i}]") for i, e in enumerate(_as_list(c, doc.get("exclude"), "exclude")))
    include = tuple(_validate_partial(c, e, f"include[{i}]") for i, e in enumerate(_as_list(c, doc.get("include"), "include")))
    decoding = dict(DECODING_DEFAULTS)
    if doc.get("decoding") is not None:
        decoding.update(_validate_decoding(c, doc["decoding"]))

    scenario = Scenario(
        name=name,
        path=path,
        description=str(doc.get("description") or ""),
        question=str(doc.get("question") or ""),
        datasets=tuple(c.string_list(doc.get("datasets", ["default"]), "datasets")),
        languages=languages,
        repeats=c.integer(doc.get("repeats", 3), "repeats", 1),
        warmup=c.integer(doc.get("warmup", 1), "warmup", 1),
        timeout_s=c.number(doc.get("timeout_s", 900), "timeout_s"),
        memory_cap_mb=None if doc.get("memory_cap_mb") is None else c.number(doc["memory_cap_mb"], "memory_cap_mb"),
        page_cache=_validate_page_cache(c, doc.get("page_cache", "cold")),
        fit=_validate_fit(c, doc.get("fit", False)),
        max_samples_per_language=None if doc.get("max_samples_per_language") is None
        else c.integer(doc["max_samples_per_language"], "max_samples_per_language", 1),
        max_audio_s=None if doc.get("max_audio_s") is None else validate_max_audio_s(c, doc["max_audio_s"]),
        decoding=decoding,
        matrix=matrix,
        exclude=exclude,
        include=include,
        budgets=validate_budgets(c, doc.get("budgets") or {}, "budgets"),
        normalization=_validate_normalization(c, doc.get("normalization") or {}),
    )
    if not scenario.expand():
        raise UserError(f"{path}: field 'exclude': every configuration of the matrix is excluded; nothing to run")
    return scenario


def validate_max_audio_s(c: _Checker, value: Any, where: str = "max_audio_s") -> float:
    seconds = c.number(value, where)
    if seconds > MAX_AUDIO_S_LIMIT:
        raise c.fail(where, value, f"expected seconds of audio, at most {MAX_AUDIO_S_LIMIT} (4 hours)")
    return seconds


def _as_list(c: _Checker, value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise c.fail(where, value, "expected a list of mappings")
    return value


def _validate_matrix(c: _Checker, raw: Any) -> dict[str, tuple[Any, ...]]:
    doc = c.mapping(raw, "matrix", AXES)
    if "model" not in doc:
        raise UserError(f"{c.path}: field 'matrix.model' is required (e.g. [tiny.en, base])")
    matrix: dict[str, tuple[Any, ...]] = {}
    for axis in AXES:
        values = doc.get(axis, [AXIS_DEFAULTS.get(axis)])
        values = values if isinstance(values, list) else [values]
        if not values:
            raise c.fail(f"matrix.{axis}", values, "expected a non-empty list")
        matrix[axis] = tuple(_validate_axis_value(c, axis, v, f"matrix.{axis}[{i}]") for i, v in enumerate(values))
    for i, q in enumerate(matrix["quantization"]):
        for b in matrix["backend"]:
            accepted = backends.info(b).quantizations
            if q not in accepted:
                raise c.fail(f"matrix.quantization[{i}]", q, f"backend {b} accepts {', '.join(accepted)}{did_you_mean(q, accepted)}")
    return matrix


def _validate_partial(c: _Checker, raw: Any, where: str) -> dict[str, Any]:
    doc = c.mapping(raw, where, AXES)
    if not doc:
        raise c.fail(where, raw, f"expected at least one of {', '.join(AXES)}")
    return {axis: _validate_axis_value(c, axis, v, f"{where}.{axis}") for axis, v in doc.items()}


def _validate_axis_value(c: _Checker, axis: str, value: Any, where: str) -> Any:
    if axis == "backend":
        known = backends.names()
        if value not in known:
            raise c.fail(where, value, f"known backends: {', '.join(known)}{did_you_mean(value, known)}")
        return value
    if axis == "model":
        value = c.string(value, where)
        if value in WHISPER_MODELS:
            return value
        if "/" in value or value.startswith("."):
            path = Path(value).expanduser()
            # A file: a model file some backend loads (BackendInfo.model_files, e.g. a .pt checkpoint).
            suffixes = sorted({s for b in backends.names() for s in backends.info(b).model_files})
            if c.on_this_machine and not (path.is_dir() or (path.suffix in suffixes and path.is_file())):
                files = f" or a model file ({', '.join(suffixes)})" if suffixes else ""
                raise c.fail(where, value, "a model path must be an existing directory (a CTranslate2 model with "
                                           f"model.bin){files}")
            return str(path)
        raise c.fail(where, value, f"expected a Whisper model name ({', '.join(WHISPER_MODELS)}) "
                                   f"or a directory path{did_you_mean(value, WHISPER_MODELS)}")
    if axis == "quantization":
        allowed = backends.all_quantizations()
        if value not in allowed:
            raise c.fail(where, value, f"expected one of {', '.join(allowed)}{did_you_mean(value, allowed)}")
        return value
    if axis == "threads":
        threads = c.integer(value, where, 1)
        if c.on_this_machine and threads > len(available_cpus()):
            warnings.warn(f"{c.path}: {where} = {threads} is more than the {len(available_cpus())} CPUs available: "
                          "measured as an oversubscribed configuration", stacklevel=2)
        return threads
    if axis == "cpu_pinning":
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text in ("none", "auto"):
            return text
        try:
            cpus = parse_cpu_list(text) if text else None
        except ValueError:
            cpus = None
        if cpus is None:
            raise c.fail(where, value, 'expected none, auto, or a CPU list such as "0", "0,1", "0-3"')
        missing = sorted(set(cpus) - set(available_cpus())) if c.on_this_machine else []
        if missing:
            raise c.fail(where, value, f"CPU(s) {missing} do not exist or are not allowed here; available: {available_cpus()}")
        return text
    if axis == "chunking":
        return _validate_chunking(c, value, where)
    if axis == "beam_size":
        return c.integer(value, where, 1)
    if axis == "cpu_limit":
        try:
            millis = cpu_millis(value)
        except ValueError:
            raise c.fail(where, value, 'expected a CPU limit as Kubernetes writes it: millicores such as "250m", '
                                       'cores such as "1" or "1.5", or none (unlimited)') from None
        if millis is not None and millis < MIN_CPU_MILLIS:
            raise c.fail(where, value, f"expected at least {MIN_CPU_MILLIS}m (the kernel's smallest CFS quota is "
                                       "1 ms per 100 ms period)")
        return "none" if millis is None else cpu_quantity(millis)
    raise AssertionError(axis)


def cpu_millis(value: Any) -> int | None:
    """A Kubernetes CPU quantity ("250m", "1", "1.5", 2, 0.5) -> millicores; none (or None) -> None.
    ValueError for anything else, a fraction of a millicore included."""
    if value is None or value == "none":
        return None
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)m\s*", value)):
        millis = float(m.group(1))
    elif isinstance(value, str) and re.fullmatch(r"\s*(\d+(\.\d*)?|\.\d+)\s*", value):
        millis = float(value) * 1000
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        millis = float(value) * 1000
    else:
        raise ValueError(value)
    if not math.isfinite(millis) or millis <= 0 or abs(millis - round(millis)) > 1e-6:
        raise ValueError(value)
    return int(round(millis))


def cpu_quantity(millis: int) -> str:
    """Millicores in Kubernetes' canonical form: 1000 -> "1", 1500 -> "1500m", 250 -> "250m"."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _validate_fit(c: _Checker, value: Any) -> bool:
    if not isinstance(value, bool):
        raise c.fail("fit", value, "expected true (fit the memory limit of every ok configuration after measuring, "
                                   "as `harness run --fit`) or false")
    return value


def _validate_page_cache(c: _Checker, value: Any) -> str:
    if value not in PAGE_CACHE_MODES:
        raise c.fail("page_cache", value, "expected cold (the worker's files are evicted from the page cache "
                                          "first, as in a freshly started pod) or warm (left as previous runs left it)")
    return str(value)


def _validate_chunking(c: _Checker, value: Any, where: str) -> dict[str, Any]:
    """`whole`, `vad`, ... or {MODE: settings} (chunk_length: {chunk_length: 10} or chunk_length: 10)
    or {mode: MODE, setting: ...} -> {"mode": MODE, settings (stream and batched: defaults filled)}."""
    modes = tuple(CHUNKING_MODES)
    if isinstance(value, str):
        mode, settings = value, {}
    elif isinstance(value, dict) and "mode" in value:
        mode, settings = value["mode"], {k: v for k, v in value.items() if k != "mode"}
    elif isinstance(value, dict) and len(value) == 1:
        mode, settings = next(iter(value.items()))
        settings = {mode: settings} if mode == "chunk_length" and not isinstance(settings, dict) else (settings or {})
    else:
        raise c.fail(where, value, f"expected a mode ({', '.join(modes)}) or a mapping such as {{vad: {{min_silence_duration_ms: 500}}}}")
    if mode not in CHUNKING_MODES:
        raise c.fail(f"{where}.mode" if isinstance(value, dict) and "mode" in value else where, mode,
                     f"expected one of {', '.join(modes)}{did_you_mean(str(mode), modes)}")
    where = f"{where}.{mode}"
    settings = c.mapping(settings, where, tuple(CHUNKING_SETTINGS[mode]))
    out: dict[str, Any] = {"mode": mode}
    if mode in ("stream", "batched"):
        out.update(CHUNKING_SETTINGS[mode])
    for key, setting in settings.items():
        if key == "buffer":
            if setting not in BUFFERS:
                raise c.fail(f"{where}.buffer", setting, f"expected one of {', '.join(BUFFERS)}")
            out[key] = setting
        elif key in ("batch_size", "min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            out[key] = c.integer(setting, f"{where}.{key}", 1 if key == "batch_size" else 0)
        elif key == "chunk_length":
            out[key] = c.integer(setting, f"{where}.{key}", 1)
            if out[key] > 30:
                raise c.fail(f"{where}.{key}", setting, "expected at most 30 (seconds: Whisper's window)")
        else:
            out[key] = c.number(setting, f"{where}.{key}", positive=key != "overlap_s")
            if out[key] < 0:
                raise c.fail(f"{where}.{key}", setting, "expected a number >= 0")
    if mode == "chunk_length" and "chunk_length" not in out:
        raise c.fail(where, value, "needs a length in seconds, e.g. {chunk_length: 10}")
    if mode == "stream" and out["overlap_s"] >= out["chunk_s"]:
        raise c.fail(f"{where}.overlap_s", out["overlap_s"], f"expected less than chunk_s ({out['chunk_s']})")
    return out


def _validate_decoding(c: _Checker, raw: Any) -> dict[str, Any]:
    doc = c.mapping(raw, "decoding", tuple(DECODING_DEFAULTS))
    out: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"decoding.{key}"
        if key == "best_of":
            out[key] = c.integer(value, where, 1)
        elif key == "temperature":
            temps = value if isinstance(value, list) else [value]
            out[key] = [c.number(t, f"{where}[{i}]" if isinstance(value, list) else where, positive=False)
                        for i, t in enumerate(temps)]
        elif not isinstance(value, bool):
            raise c.fail(where, value, "expected true or false")
        else:
            out[key] = value
    return out


def _validate_normalization(c: _Checker, raw: Any) -> dict[str, Normalization]:
    """{LANG: {normalizer, remove_diacritics, numbers}}; unset fields take the language's default."""
    doc = c.mapping(raw, "normalization", LANGUAGES)
    out = {}
    for lang, settings in doc.items():
        where = f"normalization.{lang}"
        fields = c.mapping(settings, where, ("normalizer", "remove_diacritics", "numbers"))
        default = default_normalization(lang)
        normalizer = fields.get("normalizer", default.normalizer)
        if normalizer not in NORMALIZERS:
            raise c.fail(f"{where}.normalizer", normalizer,
                         f"expected one of {', '.join(NORMALIZERS)}{did_you_mean(normalizer, NORMALIZERS)}")
        remove_diacritics = fields.get("remove_diacritics", default.remove_diacritics)
        if not isinstance(remove_diacritics, bool):
            raise c.fail(f"{where}.remove_diacritics", remove_diacritics, "expected true or false")
        numbers = fields.get("numbers", default.numbers)
        if numbers not in NUMBER_MODES:
            raise c.fail(f"{where}.numbers", numbers, f"expected one of {', '.join(NUMBER_MODES)}")
        if numbers == "spell-out" and num2words_locale(lang) is None:
            raise c.fail(f"{where}.numbers", numbers, f"num2words cannot spell out numbers in {lang!r}; use keep")
        out[lang] = Normalization(normalizer, remove_diacritics, numbers)
    return out


def _budget_limit(c: _Checker, value: Any, where: str, name: str) -> float:
    metric = metric_registry.BY_NAME[name]
    if metric.unit != "fraction":
        return c.number(value, where)
    limit = c.number(value, where, positive=False)
    if not 0 <= limit <= 1:
        raise c.fail(where, limit, "expected a fraction between 0 and 1 (0.10 = 10 %)")
    return limit


def validate_budgets(c: _Checker, raw: Any, where: str) -> dict[str, Any]:
    doc = c.mapping(raw, where, (*BUDGET_SCALARS, *BUDGET_PER_LANGUAGE, BUDGET_WER_INCREASE))
    budgets: dict[str, Any] = {}
    for key, value in doc.items():
        if key == BUDGET_WER_INCREASE:
            spec = c.mapping(value, f"{where}.{key}", ("quantization", "max", "insufficient_data"))
            quantizations = backends.all_quantizations()
            if spec.get("quantization") not in quantizations:
                raise c.fail(f"{where}.{key}.quantization", spec.get("quantization"), f"expected one of {', '.join(quantizations)}")
            limit = c.number(spec.get("max"), f"{where}.{key}.max", positive=False)
            if not 0 <= limit <= 1:
                raise c.fail(f"{where}.{key}.max", limit, "expected a fraction between 0 and 1 (0.02 = 2 points)")
            insufficient = spec.get("insufficient_data", "not-met")
            if insufficient not in WER_INCREASE_INSUFFICIENT:
                raise c.fail(f"{where}.{key}.insufficient_data", insufficient,
                             f"expected one of {', '.join(WER_INCREASE_INSUFFICIENT)}")
            budgets[key] = {"quantization": spec["quantization"], "max": limit, "insufficient_data": insufficient}
        elif key in BUDGET_PER_LANGUAGE:
            per_lang = c.mapping(value, f"{where}.{key}", tuple(sorted(LANGUAGES)))
            budgets[key] = {lang: _budget_limit(c, v, f"{where}.{key}.{lang}", key) for lang, v in per_lang.items()}
        else:
            budgets[key] = _budget_limit(c, value, f"{where}.{key}", key)
    return budgets
