"""Hugging Face transformers (WhisperForConditionalGeneration on PyTorch, CPU): its description and adapter.

It runs the same weights as the other two backends: a folder written by `harness.weights.hf` from the
CTranslate2 weights (`load` converts, into the cache, when given a model name or a CTranslate2
directory). Decoding settings are mapped one for one where transformers has them: beam size, the
temperature fallback with openai-whisper's thresholds (compression ratio 2.4, average log-probability
-1.0, no-speech 0.6), condition_on_previous_text, without_timestamps; `best_of` has no equivalent
(transformers draws one sample per fallback temperature) and is listed in `describe()["unmapped"]`.
Audio longer than 30 s goes through transformers' own long-form generation (sequential 30 s windows,
which needs timestamp tokens). Two flaws of transformers 5.x's window loop are corrected at load
(`_wrap_window_decoding`): beam search lost in the windows after a sampling fallback, and an English-only
model's no-speech check reading sampled logits as log-probabilities (and dropping the window's text).
torch and transformers are imported in `load`, after the thread settings; reading `BACKEND` costs nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.base import BackendInfo

if TYPE_CHECKING:
    import numpy as np

    from harness.weights.models import LocalModel

NAME = "transformers"
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # longer audio is long-form generation
# openai-whisper's and faster-whisper's defaults for the temperature fallback.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6

# transformers logs these on every transcription (its logger, not Python warnings); both are expected:
EXPECTED_LOG_MESSAGES = (
    # Whisper's generate calls the generic generate for each window with its own generation_config plus
    # suppress_tokens/begin_suppress_tokens (transformers' code, nothing a caller can change).
    "Passing `generation_config` together with generation-related arguments",
    # The folder's generation_config has max_length = n_text_ctx (448) as the hub's checkpoints do; the
    # adapter's max_new_tokens (openai-whisper's budget per window) is meant to take precedence.
    "Both `max_new_tokens`",
)


def is_transformers_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def resolve_model(model: str, quantization: str = "float32") -> LocalModel:
    """A transformers Whisper folder as is; a model name or a CTranslate2 directory converted (once, into
    the cache: harness.weights.hf.convert_cached) from the CTranslate2 weights the other backends run,
    which faster-whisper downloads when online and the model is not on this machine."""
    from harness.weights import hf, models

    path = Path(model).expanduser()
    if is_transformers_folder(path):
        return models.LocalModel(model, path, "transformers folder")
    ct2 = models.resolve(model)
    return models.LocalModel(model, hf.convert_cached(model, allow_download=True), f"converted from {ct2.source}")


def deploy_python(model: str, quantization: str, threads: int, source: str | None = None) -> str:
    """`source` changes nothing: this backend always loads a local file of its own format."""
    if is_transformers_folder(Path(model).expanduser()):
        folder, lines = model, ["# the transformers folder that was measured"]
    else:
        folder = f"whisper-{Path(model.rstrip('/')).name}-transformers"
        lines = [f"# measured on a transformers folder converted from the CTranslate2 weights of {model!r}:",
                 f"#   python -c 'from harness.weights.hf import convert_cached; print(convert_cached({model!r}))'",
                 f"# prints where it is; copy it to {folder}"]
    lines += ["import os", "os.environ.setdefault(\"TOKENIZERS_PARALLELISM\", \"false\")",
              "import torch", "from transformers import WhisperForConditionalGeneration, WhisperProcessor",
              f"torch.set_num_threads({threads})", "torch.set_num_interop_threads(1)",
              f"model = WhisperForConditionalGeneration.from_pretrained({folder!r}, dtype=torch.float32).eval()",
              f"processor = WhisperProcessor.from_pretrained({folder!r})"]
    if quantization == "int8":
        lines += ["# as measured: dynamic int8 of every Linear layer (the output projection included)",
                  "model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)"]
    lines += ["# as measured: features of the signal only, openai-whisper's fallback thresholds",
              "# features = processor(audio, sampling_rate=16000, return_tensors=\"pt\", truncation=False,",
              "#                      padding=\"longest\", return_attention_mask=True)",
              "# model.generate(features.input_features, attention_mask=features.attention_mask, num_beams=5,",
              "#     temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), compression_ratio_threshold=2.4, logprob_threshold=-1.0,",
              "#     no_speech_threshold=0.6, condition_on_prev_tokens=True, return_timestamps=True,",
              "#     language=..., task=\"transcribe\")  # no language/task for an English-only model",
              "# (the harness's adapter also corrects two long-form fallback bugs: harness.backends.transformers_whisper)"]
    return "\n".join(lines)


BACKEND = BackendInfo(
    name=NAME,
    # int8 = PyTorch dynamic quantization of every Linear layer (weights int8, activations per batch).
    quantizations=("float32", "int8"),
    chunking=("whole",),
    modules=("transformers", "torch"),
    install_hint="pip install 'whisper-harness[transformers]' (see the README for the CPU build of PyTorch)",
    packages=("transformers", "torch", "tokenizers", "safetensors"),
    bytes_per_weight={"float32": 4, "int8": 1},
    resolve_model=resolve_model,
    deploy_python=deploy_python,
    # As for openai-whisper (the same PyTorch): scalene's memory profiler is assumed unsafe; not tried here.
    scalene_cpu_only=True,
    adapter="harness.backends.transformers_whisper:TransformersBackend",
)


class _DropExpectedMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(EXPECTED_LOG_MESSAGES)


def quantize_int8(model: Any) -> tuple[Any, int]:
    """PyTorch dynamic int8 quantization of every Linear layer, in place; returns the model and how many
    Linear layers were quantized. transformers' Whisper uses plain nn.Linear (which `quantize_dynamic`
    matches by exact type), including the output projection tied to the token embedding."""
    import torch

    with warnings.catch_warnings():
        # PyTorch 2.13 announces that torch.ao.quantization moves to torchao on every call; it still works.
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    quantized = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    left = [name for name, m in model.named_modules() if type(m) is torch.nn.Linear]
    if quantized == 0 or left:
        raise RuntimeError(f"int8 dynamic quantization did not apply: {quantized} Linear layers quantized, "
                           f"{len(left)} left in float ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})")
    return model, quantized


def model_folder(model_path: str) -> Path:
    """A transformers Whisper folder as is; anything else (a model name, a CTranslate2 directory) is
    converted once into the harness's cache (harness.weights.hf.convert_cached, offline)."""
    path = Path(model_path).expanduser()
    if is_transformers_folder(path):
        return path
    from harness.weights.hf import convert_cached

    return convert_cached(model_path)


class TransformersBackend:
    def __init__(self) -> None:
        self.model: Any = None
        self.processor: Any = None
        self.folder: Path | None = None
        self.quantization = ""
        self.quantized_linear = 0
        self.multilingual = False
        self.long_form_calls = 0
        self.timestamps_forced = 0  # long-form calls asked without timestamps (transformers needs them)
        self._num_beams = 1  # the beam size of the running transcribe call (see _wrap_window_decoding)
        self._beams_restored = 0  # windows that would have lost beam search after a sampling fallback

    def load(self, model_path: str, quantization: str, threads: int) -> None:
        # The harness exports OMP_NUM_THREADS; tokenizers' own thread pool would only add idle threads.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        torch.set_num_threads(threads)
        try:
            # One op at a time, as in the openai-whisper adapter; PyTorch allows setting this once per
            # process, before any inter-op work (a second load in the same process keeps the first value).
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        import transformers
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on stderr
        generation_logger = logging.getLogger("transformers.generation.utils")
        if not any(isinstance(f, _DropExpectedMessages) for f in generation_logger.filters):
            generation_logger.addFilter(_DropExpectedMessages())
        if quantization not in ("float32", "int8"):
            raise ValueError(f"transformers quantization {quantization!r}: this adapter runs float32 or int8 (CPU)")
        self.folder = model_folder(model_path)
        # dtype: the folder stores the weights as the CTranslate2 model did (float16 for the offline
        # packs); transformers 5 would keep that dtype ("auto"), the CPU runs float32.
        model = WhisperForConditionalGeneration.from_pretrained(self.folder, local_files_only=True, dtype=torch.float32)
        self.processor = WhisperProcessor.from_pretrained(self.folder, local_files_only=True)
        model.eval()
        if quantization == "int8":
            model, self.quantized_linear = quantize_int8(model)
        self.model, self.quantization = model, quantization
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", model.config.vocab_size > 51864))
        _wrap_window_decoding(model, self)

    def transcribe(self, audio: np.ndarray, language: str, beam_size: int, decoding: dict[str, Any],
                   chunking: dict[str, Any]) -> str:
        assert self.model is not None
        assert chunking["mode"] == "whole", chunking  # the only native mode
        import torch

        long_form = audio.shape[0] > WINDOW_SAMPLES
        timestamps = not decoding["without_timestamps"]
        # The features of the signal only (not cut or padded to 30 s), for short audio too: generate then
        # pads each 30 s window with zeros in the log-mel domain, as openai-whisper's and faster-whisper's
        # transcribe do. (The processor's default pads the audio with silence to 30 s instead: other
        # features after the speech, and other transcripts.) Longer audio is long-form generation.
        inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                                padding="longest", return_attention_mask=True)
        if long_form:
            self.long_form_calls += 1
            if not timestamps:  # transformers refuses long-form generation without timestamp tokens
                self.timestamps_forced += 1
                timestamps = True
        options: dict[str, Any] = dict(
            num_beams=beam_size, temperature=tuple(decoding["temperature"]),
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD, logprob_threshold=LOGPROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            condition_on_prev_tokens=decoding["condition_on_previous_text"], return_timestamps=timestamps,
            max_new_tokens=self._max_new_tokens(timestamps),
        )
        if self.multilingual:
            # English-only checkpoints: generate refuses language and task (their prompt is <|startoftranscript|>).
            options.update(language=language, task="transcribe")
        self._num_beams = beam_size
        with torch.inference_mode():
            tokens = self.model.generate(inputs.input_features, attention_mask=inputs.get("attention_mask"), **options)
        texts = self.processor.batch_decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(texts[0]).strip()

    def _max_new_tokens(self, timestamps: bool) -> int:
        # openai-whisper samples at most n_text_ctx // 2 tokens per window after a prompt of at most
        # n_text_ctx // 2 tokens (<|startofprev|> + the previous text) and the start tokens. transformers
        # refuses max_new_tokens that could pass n_text_ctx with its longest prompt, so the start tokens come
        # off the budget; leaving max_new_tokens unset would allow up to n_text_ctx - prompt tokens (~445).
        half = self.model.config.max_target_positions // 2
        start = (3 if self.multilingual else 1) + (0 if timestamps else 1)
        return half - start

    def supports_language(self, language: str) -> bool:
        assert self.model is not None
        return self.multilingual or language == "en"

    def describe(self) -> dict[str, Any]:
        assert self.model is not None
        import torch
        import transformers

        return {
            "compute_type": "int8 dynamic (Linear layers)" if self.quantization == "int8" else "float32",
            "quantized_linear_layers": self.quantized_linear, "multilingual": self.multilingual,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "model_folder": str(self.folder),
            "thresholds": {"compression_ratio": COMPRESSION_RATIO_THRESHOLD, "logprob": LOGPROB_THRESHOLD,
                           "no_speech": NO_SPEECH_THRESHOLD},
            "unmapped": {"best_of": "transformers samples one sequence per fallback temperature "
                                    "(num_return_sequences transcribes the audio again instead of picking the best)"},
            "long_form_calls": self.long_form_calls,
            "long_form_timestamps_forced": self.timestamps_forced,
            "windows_beam_search_restored": self._beams_restored,
        }


def _wrap_window_decoding(model: Any, backend: TransformersBackend) -> None:
    """Two corrections to transformers' window loop (`generate_with_fallback`, one call per 30 s window),
    so that a sampling fallback behaves as in openai-whisper:

    - it sets `generation_config.num_beams = 1` for sampling and never restores it, and the same config
      serves the later windows of the call: after one fallback, the remaining windows would decode
      greedily. Each window starts again from the beam size asked for.
    - its no-speech detector is told once, from the starting beam size, whether it receives
      log-probabilities (beam search) or logits (greedy, sampling); on an English-only model with beam
      search it then reads a sampling fallback's logits as log-probabilities, gets "probabilities" far
      above 1 and drops the window's text whenever its average log-probability is below -1. It is asked
      at every step instead (multilingual models compute the probability apart and are not affected).
    """
    original = model.generate_with_fallback
    detector = _no_speech_detection_class()

    def generate_with_fallback(*args: Any, **kwargs: Any) -> Any:
        config = kwargs["generation_config"]
        if config.num_beams != backend._num_beams:
            backend._beams_restored += 1
            config.num_beams = backend._num_beams
        for processor in kwargs.get("logits_processor") or ():
            if isinstance(processor, detector.__bases__[0]):
                processor.__class__ = detector
                processor.generation_config = config
        return original(*args, **kwargs)

    model.generate_with_fallback = generate_with_fallback


@functools.cache
def _no_speech_detection_class() -> type:
    from transformers.generation.logits_process import WhisperNoSpeechDetection

    class NoSpeechDetection(WhisperNoSpeechDetection):
        generation_config: Any = None

        @property
        def is_scores_logprobs(self) -> bool:
            # Beam search hands log-probabilities to the logits processors; greedy search and sampling
            # (a fallback sets num_beams to 1) hand logits.
            return self.generation_config is not None and self.generation_config.num_beams > 1

        @is_scores_logprobs.setter
        def is_scores_logprobs(self, value: bool) -> None:
            pass  # transformers sets it once, from the beam size the call started with

    return NoSpeechDetection
