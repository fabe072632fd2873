"""whisper.cpp adapter (pywhispercpp's bindings to libwhisper, CPU only).

`load` takes a ggml model file the parent has already written (`harness.weights.ggml`). The adapter
calls pywhispercpp's low-level module `_pywhispercpp` (shipped in the same wheel) rather than its
`Model` class, because `Model` ignores `whisper_full`'s return code (a failed run is an empty
transcript), cannot tell a failed load (a NULL context that crashes the next call) and keeps the
sampling strategy of its constructor; here every failure raises and every call gets fresh parameters.

Decoding settings map one for one where whisper.cpp has them:
- beam_size > 1: beam search with `beam_search.beam_size`; beam_size 1: greedy;
- best_of: `greedy.best_of` (the candidates sampled at temperatures > 0, in both strategies);
- temperature [t0, t0 + inc, ..., 1.0]: `temperature` = t0, `temperature_inc` = inc (whisper.cpp
  always climbs to 1.0; a list that is not evenly spaced or stops earlier is run as the nearest
  schedule and listed in `unmapped`); a single temperature: `temperature_inc` = 0 (no fallback);
- condition_on_previous_text: whisper.cpp always prompts each 30-second window with the text of the
  previous ones, up to `n_max_text_ctx` tokens; False sets `n_max_text_ctx` = 0. `no_context` is not
  the same thing: it only drops the text carried over from the previous `whisper_full` call, i.e. the
  previous request; it is always True here (requests are independent, as in the other backends);
- without_timestamps: `no_timestamps`.
Beam search is not openai-whisper's: for each beam whisper.cpp draws `beam_size` candidates from the
softmax (std::discrete_distribution) instead of taking the top k, with a random generator whose state
for the first decoder lives as long as the context (the others are re-seeded at every call). So with
beam_size > 1 repeated transcriptions of the same audio can differ (punctuation, casing, now and then a
word) and so can their timings; greedy decoding at temperature 0 is repeatable.
Fallback thresholds: whisper.cpp's `logprob_thold` (-1.0) and `no_speech_thold` (0.6) are the other
backends' defaults; its `entropy_thold` (2.4, on token entropy) stands where they use a gzip
compression-ratio threshold (2.4): the same role, not the same number.
"""

from __future__ import annotations

import atexit
import collections
import os
import struct
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendInfo

if TYPE_CHECKING:
    import numpy as np

    from harness.weights.models import LocalModel

NAME = "whisper.cpp"
QUANTIZATIONS = ("float16", "q8_0", "q5_0")  # harness.weights.ggml writes the file in this format


def resolve_model(model: str, quantization: str) -> LocalModel:
    """A ggml file of the model in `quantization`, converted once from its CTranslate2 weights (the same
    weights as the other backends: offline packs, a directory, faster-whisper's hub cache) and cached
    by the source's content hash (harness.weights.ggml)."""
    from harness.weights import ggml

    return ggml.local_model(model, quantization)


def deploy_python(model: str, quantization: str, threads: int, source: str | None = None) -> str:
    """`source` changes nothing: this backend always loads a local file of its own format."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return "\n".join([
        f"# the ggml file that was measured: `harness models convert {model} --to whisper.cpp --quantization "
        f"{quantization}` writes it (online, whisper.cpp's models/download-ggml-model.sh fetches ggml-{name}"
        f"{'' if quantization == 'float16' else '-' + quantization}.bin)",
        "from pywhispercpp.model import Model",
        f"model = Model(\"ggml-{name}-{quantization}.bin\", n_threads={threads}, print_progress=False, print_realtime=False)",
    ])


BACKEND = BackendInfo(
    name=NAME,
    quantizations=QUANTIZATIONS,
    chunking=("whole",),  # whisper.cpp's own 30-second windows; stream comes from the harness
    modules=("_pywhispercpp",),
    install_hint="pip install 'whisper-harness[whisper-cpp]' (pywhispercpp; its wheel bundles libwhisper and ggml)",
    packages=("pywhispercpp",),
    # ggml blocks of 32 weights: q8_0 = 32 int8 + an fp16 scale (34 bytes), q5_0 = 16 nibbles + 4 bytes of
    # fifth bits + an fp16 scale (22 bytes).
    bytes_per_weight={"float16": 2, "q8_0": 34 / 32, "q5_0": 22 / 32},
    resolve_model=resolve_model,
    deploy_python=deploy_python,
    adapter="harness.backends.whisper_cpp:WhisperCppBackend",
)

MAX_DECODERS = 8  # WHISPER_MAX_DECODERS: more beams or candidates make whisper_full fail (-4)
MIN_SAMPLES = 16000  # shorter audio is padded with silence (whisper.cpp returns nothing under 100 ms)
GGML_MAGIC = 0x67676D6C
# The ftype in a ggml file's header (% 1000) for each quantization harness.weights.ggml writes.
FTYPES = {"float16": 1, "q8_0": 7, "q5_0": 8}
LOG_ERROR = 4  # ggml_log_level: DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def _temperatures(start: float, increment: float) -> list[float]:
    """whisper.cpp's schedule: t0, t0 + inc, ... while < 1.0 + 1e-6 (float32 steps); [t0] if inc <= 0."""
    import numpy as np

    if increment <= 0:
        return [float(np.float32(start))]
    out, t = [], np.float32(start)
    while t < np.float32(1.0) + np.float32(1e-6):
        out.append(float(t))
        t = np.float32(t + np.float32(increment))
    return out


def map_decoding(beam_size: int, decoding: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """whisper.cpp's `whisper_full_params` values for the harness's decoding settings, and what of those
    settings has no whisper.cpp equivalent (plain data; no library needed)."""
    unmapped: list[str] = []
    best_of = int(decoding.get("best_of", 5))
    if beam_size > MAX_DECODERS or best_of > MAX_DECODERS:
        raise ValueError(f"whisper.cpp runs at most {MAX_DECODERS} decoders; beam_size {beam_size} / best_of "
                         f"{best_of} is more")
    raw = decoding.get("temperature", [0.0])
    temps = [float(t) for t in (raw if isinstance(raw, (list, tuple)) else [raw])]
    start = temps[0]
    increment = round(temps[1] - temps[0], 6) if len(temps) > 1 else 0.0
    schedule = _temperatures(start, increment)
    if len(schedule) != len(temps) or any(abs(a - b) > 1e-5 for a, b in zip(schedule, temps)):
        unmapped.append(f"temperature {temps}: whisper.cpp runs temperature={start:g} + k * temperature_inc="
                        f"{increment:g} up to 1.0, i.e. {[round(t, 6) for t in schedule]}")
    condition = bool(decoding.get("condition_on_previous_text", True))
    params = {
        "strategy": "beam_search" if beam_size > 1 else "greedy",
        "beam_size": beam_size if beam_size > 1 else -1,
        "best_of": best_of,
        "temperature": start,
        "temperature_inc": increment,
        "no_context": True,
        "n_max_text_ctx": 16384 if condition else 0,
        "no_timestamps": bool(decoding.get("without_timestamps", False)),
    }
    unmapped += [f"{key}: no whisper.cpp equivalent" for key in decoding
                 if key not in ("best_of", "temperature", "condition_on_previous_text", "without_timestamps")]
    return params, unmapped


class _Log:
    """whisper.cpp's log lines, kept (the last 200) instead of printed; errors are raised with them."""

    def __init__(self) -> None:
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=200)
        self.level = 0

    def __call__(self, level: int, text: str) -> None:
        if level != 5:  # GGML_LOG_LEVEL_CONT continues the previous line at its level
            self.level = level
        self.lines.append((self.level, text))

    def errors_since(self, mark: int) -> str:
        lines = list(self.lines)[mark:] if mark <= len(self.lines) else []
        return "".join(text for level, text in lines if level >= LOG_ERROR).strip()


_LOG = _Log()
_installed = False


def _install_log(pw: Any) -> None:
    global _installed
    if not _installed:
        pw.whisper_log_set(_LOG)
        # Reset before the interpreter finalizes: libggml's exit-time destructors may log, and the
        # Python callback would then run without the GIL and abort the process.
        atexit.register(pw.whisper_log_set, None)
        _installed = True


def _read_header(path: str) -> tuple[int, dict[str, int]]:
    with open(path, "rb") as f:
        head = f.read(48)
    if len(head) < 48:
        raise ValueError(f"{path}: {len(head)} bytes; not a whisper.cpp ggml model file")
    magic, *values = struct.unpack("<I11i", head)
    names = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
             "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
    return magic, dict(zip(names, values))


class WhisperCppBackend:
    def __init__(self) -> None:
        self._pw: Any = None
        self._ctx: Any = None
        self.model_path = ""
        self.quantization = ""
        self.threads = 1
        self.multilingual = False
        self.hparams: dict[str, int] = {}
        self.flash_attn: bool | None = None
        self.last: dict[str, Any] | None = None  # the settings of the last transcription
        self.unmapped: list[str] = []

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        # ggml's abort handler runs gdb for a backtrace when gdb is installed, which can hang the
        # process instead of ending it (seen here on a failed GGML_ASSERT): fail fast instead.
        os.environ.setdefault("GGML_NO_BACKTRACE", "1")
        import _pywhispercpp as pw  # pywhispercpp's extension module

        magic, hparams = _read_header(model_path)
        if magic != GGML_MAGIC:
            raise ValueError(f"{model_path}: bad magic {magic:#x}; not a whisper.cpp ggml model file")
        ftype = hparams["ftype"] % 1000
        if quantization in FTYPES and ftype != FTYPES[quantization]:
            raise ValueError(f"{model_path}: the file's ftype is {ftype}, not {quantization} ({FTYPES[quantization]})")
        _install_log(pw)
        params = pw.whisper_context_default_params()
        params.use_gpu = False
        mark = len(_LOG.lines)
        ctx = pw.whisper_init_from_file_with_params(str(model_path), params)
        # A failed load returns a NULL context the bindings do not expose: its error lines tell.
        if errors := _LOG.errors_since(mark):
            raise RuntimeError(f"whisper.cpp could not load {model_path}: {errors}")
        self._pw, self._ctx, self.model_path = pw, ctx, str(model_path)
        self.quantization, self.threads, self.hparams = quantization, int(threads), hparams
        self.multilingual = bool(pw.whisper_is_multilingual(ctx))
        self.flash_attn = bool(params.flash_attn)

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        import numpy as np

        pw, ctx = self._pw, self._ctx
        assert ctx is not None, "load() first"
        if chunking["mode"] != "whole":  # the only native mode; stream = whole on each piece
            raise ValueError(f"whisper.cpp has no '{chunking['mode']}' chunking mode (only whole)")
        if pw.whisper_lang_id(language) < 0:  # the bindings turn an unknown code into auto-detection
            raise ValueError(f"whisper.cpp does not know the language {language!r}")
        settings, self.unmapped = map_decoding(beam_size, decoding)
        strategy = (pw.whisper_sampling_strategy.WHISPER_SAMPLING_BEAM_SEARCH if settings["strategy"] == "beam_search"
                    else pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
        p = pw.whisper_full_default_params(strategy)
        p.n_threads = self.threads
        p.print_progress = p.print_realtime = p.print_timestamps = p.print_special = False
        p.language, p.detect_language, p.translate = language, False, False
        p.no_context, p.n_max_text_ctx = settings["no_context"], settings["n_max_text_ctx"]
        p.no_timestamps = settings["no_timestamps"]
        p.temperature, p.temperature_inc = settings["temperature"], settings["temperature_inc"]
        p.greedy = {"best_of": settings["best_of"]}
        if settings["strategy"] == "beam_search":
            p.beam_search = {"beam_size": settings["beam_size"], "patience": -1.0}

        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if samples.size < MIN_SAMPLES:
            samples = np.concatenate([samples, np.zeros(MIN_SAMPLES - samples.size, dtype=np.float32)])
        mark = len(_LOG.lines)
        rc = pw.whisper_full(ctx, p, samples, samples.size)
        if rc != 0:
            raise RuntimeError(f"whisper_full failed (return code {rc}): {_LOG.errors_since(mark) or 'no message'}")
        self.last = {**settings, "language": p.language, "n_threads": p.n_threads}
        # Join the bytes before decoding: a multi-byte character can straddle two segments.
        raw = b"".join(pw.whisper_full_get_segment_text(ctx, i) for i in range(pw.whisper_full_n_segments(ctx)))
        return raw.decode("utf-8", errors="replace").strip()

    def supports_language(self, language: str) -> bool:
        assert self._ctx is not None, "load() first"
        return self.multilingual or language == "en"

    def describe(self) -> dict[str, Any]:
        import importlib.metadata

        assert self._ctx is not None, "load() first"
        out: dict[str, Any] = {
            "compute_type": f"ggml {self.quantization}", "ggml_ftype": int(self._pw.whisper_model_ftype(self._ctx)),
            "multilingual": self.multilingual, "n_threads": self.threads, "flash_attn": self.flash_attn,
            "pywhispercpp": importlib.metadata.version("pywhispercpp"),
            "model_type": self._pw.whisper_model_type_readable(self._ctx),
            "unmapped": list(self.unmapped),
            "notes": ["beam search samples its candidates (not top-k): repeated runs can differ",
                      "entropy_thold 2.4 stands for the compression-ratio threshold 2.4 of the other backends"],
        }
        if self.last is not None:
            out["decoding_effective"] = dict(self.last)
        return out

    def close(self) -> None:
        """Free the context (the bindings never do)."""
        if self._ctx is not None:
            self._pw.whisper_free(self._ctx)
            self._ctx = None
