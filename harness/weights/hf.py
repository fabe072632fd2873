"""CTranslate2 Whisper directory -> a local Hugging Face transformers Whisper folder, with no hub call.

The transformers backend runs exactly the weights faster-whisper and openai-whisper run: `model.bin` is
read with `harness.weights.convert` (which names the variables as openai-whisper does), renamed the way
transformers' own `convert_openai_to_hf.py` does (that script is not shipped in the wheel, and it fetches
its generation config and tokenizer from the hub), and written as safetensors in the stored precision.

Everything else comes from local data:
- `config.json`: a WhisperConfig from the dimensions of the weights;
- `tokenizer.json`: the CTranslate2 directory's own file (it is the Hugging Face tokenizer), with the 1501
  timestamp tokens `<|0.00|>`..`<|30.00|>` added as the hub's tokenizers have them, and a
  `tokenizer_config.json` naming the special tokens;
- `preprocessor_config.json`: WhisperFeatureExtractor (n_mels bins, 16 kHz, 30 s windows);
- `generation_config.json`: the start, end and timestamp tokens, language and task ids, the tokens
  openai-whisper suppresses (its non-speech symbols computed from the tokenizer, plus the control tokens)
  and suppresses at the start (blank, end of text), its 1 s limit on the first timestamp, and the
  alignment heads when the CTranslate2 `config.json` records them.

The folder is written next to its target and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.weights.convert import ConversionError, read_model_bin, to_openai

__all__ = ["ConversionError", "SpecialTokens", "cached_path", "convert", "convert_cached", "generation_config", "hf_name",
           "non_speech_tokens", "special_tokens", "suppress_tokens"]

# Bump when the written folder changes: it is part of the cache key, so old conversions are not reused.
FORMAT_VERSION = 1
ENGLISH_ONLY_VOCAB = 51864  # openai-whisper: n_vocab >= 51865 is multilingual
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
TIME_PRECISION = 0.02
MAX_INITIAL_TIMESTAMP_S = 1.0  # openai-whisper's DecodingOptions.max_initial_timestamp
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
MARKER_FILE = "harness_conversion.json"

# openai-whisper state-dict names -> transformers names, in this order (transformers'
# convert_openai_to_hf.WHISPER_MAPPING); the transformers model nests them under `model.`.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("blocks", "layers"),
    ("mlp.0", "fc1"),
    ("mlp.2", "fc2"),
    ("mlp_ln", "final_layer_norm"),
    (".attn.query", ".self_attn.q_proj"),
    (".attn.key", ".self_attn.k_proj"),
    (".attn.value", ".self_attn.v_proj"),
    (".attn_ln", ".self_attn_layer_norm"),
    (".attn.out", ".self_attn.out_proj"),
    (".cross_attn.query", ".encoder_attn.q_proj"),
    (".cross_attn.key", ".encoder_attn.k_proj"),
    (".cross_attn.value", ".encoder_attn.v_proj"),
    (".cross_attn_ln", ".encoder_attn_layer_norm"),
    (".cross_attn.out", ".encoder_attn.out_proj"),
    ("decoder.ln.", "decoder.layer_norm."),
    ("encoder.ln.", "encoder.layer_norm."),
    ("token_embedding", "embed_tokens"),
    ("encoder.positional_embedding", "encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "decoder.embed_positions.weight"),
    ("ln_post", "layer_norm"),
)

_CONTROL = {
    "eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "translate": "<|translate|>",
    "transcribe": "<|transcribe|>", "sot_lm": "<|startoflm|>", "sot_prev": "<|startofprev|>",
    "no_timestamps": "<|notimestamps|>",
}
_NO_SPEECH = ("<|nospeech|>", "<|nocaptions|>")  # newer and older name of the same token


def hf_name(openai_name: str) -> str:
    """The transformers WhisperForConditionalGeneration name of an openai-whisper state-dict entry."""
    name = openai_name
    for old, new in _RENAMES:
        if old in openai_name:
            name = name.replace(old, new)
    return "model." + name


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    languages: dict[str, int]  # "<|en|>" -> id, in id order
    specials: tuple[str, ...]  # every special token's text, in id order

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1


def special_tokens(tokenizer: dict[str, Any], source: Path) -> SpecialTokens:
    """Whisper's control and language tokens, from the added tokens of a tokenizer.json."""
    added = {t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", [])}
    missing = [text for text in _CONTROL.values() if text not in added]
    no_speech = next((added[t] for t in _NO_SPEECH if t in added), None)
    if missing or no_speech is None:
        raise ConversionError(f"{source}: not a Whisper tokenizer (no {', '.join(missing) or ' or '.join(_NO_SPEECH)})")
    ids = {key: added[text] for key, text in _CONTROL.items()}
    languages = {text: i for text, i in sorted(added.items(), key=lambda kv: kv[1]) if ids["sot"] < i < ids["translate"]}
    specials = tuple(t["content"] for t in sorted(tokenizer["added_tokens"], key=lambda t: t["id"]) if t.get("special"))
    return SpecialTokens(no_speech=no_speech, languages=languages, specials=specials, **ids)


def non_speech_tokens(encode: Any) -> list[int]:
    """openai-whisper's `Tokenizer.non_speech_tokens` (speaker tags, music symbols, brackets), computed
    with `encode(text) -> ids` (the same byte-level BPE as openai-whisper's tiktoken files)."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")  # multi-token in some vocabularies: their first token is suppressed
    result = {encode(" -")[0], encode(" '")[0]}
    for symbol in symbols + sorted(miscellaneous):
        for tokens in (encode(symbol), encode(" " + symbol)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    return sorted(result)


def suppress_tokens(encode: Any, tokens: SpecialTokens) -> list[int]:
    """What openai-whisper suppresses with its default `suppress_tokens="-1"`: the non-speech tokens and
    the control tokens (transcribe, translate, start of transcript/previous/LM, no speech)."""
    control = [tokens.transcribe, tokens.translate, tokens.sot, tokens.sot_prev, tokens.sot_lm, tokens.no_speech]
    return sorted(set(non_speech_tokens(encode)) | set(control))


def generation_config(dims: dict[str, int], tokens: SpecialTokens, suppress: list[int], blank: int,
                      alignment_heads: list[list[int]] | None) -> dict[str, Any]:
    """The fields WhisperForConditionalGeneration.generate reads, as the hub's Whisper checkpoints have them
    (without the deprecated `forced_decoder_ids`: generate builds the prompt from language and task)."""
    config: dict[str, Any] = {
        "decoder_start_token_id": tokens.sot, "bos_token_id": tokens.eot, "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot, "max_length": dims["n_text_ctx"],
        "suppress_tokens": suppress, "begin_suppress_tokens": [blank, tokens.eot],
        "no_timestamps_token_id": tokens.no_timestamps, "prev_sot_token_id": tokens.sot_prev,
        "max_initial_timestamp_index": round(MAX_INITIAL_TIMESTAMP_S / TIME_PRECISION),
        "is_multilingual": is_multilingual(dims),
    }
    if config["is_multilingual"]:
        # English-only checkpoints have language tokens in their vocabulary too, but generate must not
        # use them (it detects the language whenever lang_to_id exists).
        config["lang_to_id"] = dict(tokens.languages)
        config["task_to_id"] = {"translate": tokens.translate, "transcribe": tokens.transcribe}
    if alignment_heads:
        config["alignment_heads"] = alignment_heads
    return config


def is_multilingual(dims: dict[str, int]) -> bool:
    return dims["n_vocab"] > ENGLISH_ONLY_VOCAB


def _timestamp_tokens(first_id: int) -> list[dict[str, Any]]:
    return [{"id": first_id + i, "content": f"<|{i * TIME_PRECISION:.2f}|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False} for i in range(N_TIMESTAMPS)]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConversionError(f"{path}: the {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: the {what} is not a JSON object")
    return data


def _alignment_heads(ct2_config: dict[str, Any]) -> list[list[int]] | None:
    heads = ct2_config.get("alignment_heads")
    if isinstance(heads, list) and heads and all(isinstance(h, list) and len(h) == 2 for h in heads):
        return [[int(layer), int(head)] for layer, head in heads]
    return None


def _model_config(dims: dict[str, int], state: dict[str, np.ndarray], tokens: SpecialTokens, suppress: list[int],
                  blank: int, source: Path) -> Any:
    from transformers import WhisperConfig

    if dims["n_audio_state"] != dims["n_text_state"]:
        raise ConversionError(f"{source}: encoder width {dims['n_audio_state']} differs from decoder width "
                              f"{dims['n_text_state']}; transformers' Whisper has one d_model")
    ffn = int(state["decoder.blocks.0.mlp.0.weight"].shape[0]) if dims["n_text_layer"] else 4 * dims["n_text_state"]
    stored = state["decoder.token_embedding.weight"].dtype
    return WhisperConfig(
        vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"], encoder_attention_heads=dims["n_audio_head"],
        decoder_layers=dims["n_text_layer"], decoder_attention_heads=dims["n_text_head"],
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_source_positions=dims["n_audio_ctx"], max_target_positions=dims["n_text_ctx"],
        bos_token_id=tokens.eot, eos_token_id=tokens.eot, pad_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot, suppress_tokens=suppress, begin_suppress_tokens=[blank, tokens.eot],
        tie_word_embeddings=True, dtype="float16" if stored == np.float16 else "float32",
        architectures=["WhisperForConditionalGeneration"],
    )


def _write_weights(state: dict[str, np.ndarray], folder: Path) -> str:
    # The output projection is tied to the token embedding (tie_word_embeddings): not written twice.
    tensors = {hf_name(name): np.ascontiguousarray(array) for name, array in state.items()}
    try:
        from safetensors.numpy import save_file
    except ImportError:
        import torch

        torch.save({k: torch.from_numpy(a.copy()) for k, a in tensors.items()}, folder / TORCH_FILE)
        return TORCH_FILE
    save_file(tensors, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
    os.chmod(folder / SAFETENSORS_FILE, 0o644)  # safetensors creates it owner-only; a shared cache is read by all
    return SAFETENSORS_FILE


def convert(ct2_dir: Path, target_dir: Path, *, replace: bool = True) -> Path:
    """Write the transformers Whisper folder of a CTranslate2 Whisper directory to `target_dir`, atomically;
    `ConversionError` when the input is not a Whisper model. An existing `target_dir` is replaced, or with
    `replace=False` kept (another process converted the same model first)."""
    ct2_dir, target_dir = Path(ct2_dir), Path(target_dir)
    if not ct2_dir.is_dir():
        raise ConversionError(f"{ct2_dir}: not a directory (expected a CTranslate2 Whisper model directory)")
    for name in ("model.bin", "tokenizer.json"):
        if not (ct2_dir / name).is_file():
            raise ConversionError(f"{ct2_dir}: no {name}; not a CTranslate2 Whisper model directory "
                                  "(expected model.bin, config.json, tokenizer.json)")
    source = ct2_dir / "model.bin"
    dims, state = to_openai(*read_model_bin(source), source)
    tokenizer = _read_json(ct2_dir / "tokenizer.json", "tokenizer")
    tokens = special_tokens(tokenizer, ct2_dir / "tokenizer.json")
    if tokens.timestamp_begin + N_TIMESTAMPS != dims["n_vocab"]:
        raise ConversionError(
            f"{ct2_dir}: tokenizer.json does not belong to model.bin: <|notimestamps|> is {tokens.no_timestamps}, "
            f"so the vocabulary would have {tokens.timestamp_begin + N_TIMESTAMPS} entries, the weights have {dims['n_vocab']}")
    ct2_config = _read_json(ct2_dir / "config.json", "CTranslate2 config") if (ct2_dir / "config.json").is_file() else {}

    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(json.dumps(tokenizer))

    def encode(text: str) -> list[int]:
        return backend.encode(text, add_special_tokens=False).ids

    suppress = suppress_tokens(encode, tokens)
    blank = encode(" ")[0]

    tmp = target_dir.with_name(f".{target_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        weights = _write_weights(state, tmp)
        _model_config(dims, state, tokens, suppress, blank, source).save_pretrained(tmp)
        _write_json(tmp / "generation_config.json",
                    generation_config(dims, tokens, suppress, blank, _alignment_heads(ct2_config)))
        _write_tokenizer(tokenizer, tokens, dims, tmp)
        _write_json(tmp / "preprocessor_config.json", _preprocessor_config(dims["n_mels"]))
        stat = source.stat()
        _write_json(tmp / MARKER_FILE, {
            "format_version": FORMAT_VERSION, "source": str(ct2_dir.resolve()), "model_bin_bytes": stat.st_size,
            "weights": weights, "multilingual": is_multilingual(dims), "dims": dims,
        })
        if target_dir.exists():
            if not replace:
                return target_dir
            shutil.rmtree(target_dir)
        try:
            os.replace(tmp, target_dir)
        except OSError:
            if replace or not (target_dir / MARKER_FILE).is_file():
                raise  # else: another process published the same conversion in between
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left only after a failure or an interruption
    return target_dir


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_tokenizer(tokenizer: dict[str, Any], tokens: SpecialTokens, dims: dict[str, int], folder: Path) -> None:
    tokenizer = dict(tokenizer)
    known = {t["content"] for t in tokenizer["added_tokens"]}
    tokenizer["added_tokens"] = list(tokenizer["added_tokens"]) + [
        t for t in _timestamp_tokens(tokens.timestamp_begin) if t["content"] not in known]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    eot = "<|endoftext|>"
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "WhisperTokenizer", "processor_class": "WhisperProcessor",
        "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
        "extra_special_tokens": [t for t in tokens.specials if t != eot],
        "add_prefix_space": False,
        # openai-whisper's decode does no "clean-up" of spaces before punctuation: neither does this.
        "clean_up_tokenization_spaces": False,
        "model_max_length": dims["n_text_ctx"], "errors": "replace",
    })


def _preprocessor_config(n_mels: int) -> dict[str, Any]:
    # WhisperFeatureExtractor's settings, as openai-whisper hard-codes them (whisper/audio.py).
    return {
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "WhisperProcessor",
        "feature_size": n_mels, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
        "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False, "dither": 0.0,
    }


def cached_path(model: str, ct2_dir: Path) -> Path:
    """Where the conversion of a CTranslate2 directory is cached: keyed by its model.bin's identity and
    the format of the written folder."""
    stat = (ct2_dir / "model.bin").stat()
    key = hashlib.sha256(f"{FORMAT_VERSION}:{ct2_dir.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    from harness.weights.models import cache_dir

    return cache_dir() / "models" / "transformers" / f"{Path(model.rstrip('/')).name}-{key}"


def convert_cached(model_name_or_dir: str, *, allow_download: bool = False) -> Path:
    """The transformers folder of a model name (offline packs, faster-whisper's cache; its hub download
    when `allow_download` and online) or a CTranslate2 directory, converted once into the harness's cache
    and reused. `ModelUnavailable` (harness.weights.models) when the model is not on this machine or
    cannot be converted."""
    from harness.weights.models import ModelUnavailable, resolve

    ct2 = resolve(model_name_or_dir, allow_download=allow_download)
    target = cached_path(model_name_or_dir, ct2.path)
    if (target / MARKER_FILE).is_file():
        return target
    try:
        return convert(ct2.path, target, replace=False)
    except ConversionError as exc:
        raise ModelUnavailable(f"cannot convert {model_name_or_dir!r} for transformers: {exc}") from None
