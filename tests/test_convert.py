"""The CTranslate2 -> openai-whisper converter on the real tiny.en pack and on model.bin files the tests write."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from harness.weights import convert, models

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    return models.resolve("tiny.en", allow_download=False).path


@pytest.fixture(scope="module")
def tiny_variables(tiny_en: Path) -> tuple[str, dict[str, np.ndarray]]:
    return convert.read_model_bin(tiny_en / "model.bin")


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec", version: int = 6) -> Path:
    """A model.bin in CTranslate2's layout (dtype ids: float32 0, int8 1, float16 4)."""
    ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 1, len(variables))
    for name, a in variables.items():
        out += _string(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        out += struct.pack("<BI", ids[a.dtype], a.nbytes) + a.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))
    return path


def test_tiny_en_maps_onto_openai_whispers_own_state_dict(tiny_variables: tuple[str, dict[str, np.ndarray]], tiny_en: Path) -> None:
    dims, state = convert.to_openai(*tiny_variables, tiny_en)
    assert dims == {"n_mels": 80, "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                    "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}
    expected = whisper.model.Whisper(whisper.model.ModelDimensions(**dims)).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}


def test_fused_projections_are_split_in_order_and_the_key_has_no_bias(
        tiny_variables: tuple[str, dict[str, np.ndarray]], tiny_en: Path) -> None:
    _, v = tiny_variables
    _, state = convert.to_openai(*tiny_variables, tiny_en)
    qkv = v["encoder/layer_2/self_attention/linear_0/weight"]
    assert np.array_equal(state["encoder.blocks.2.attn.query.weight"], qkv[:384])
    assert np.array_equal(state["encoder.blocks.2.attn.key.weight"], qkv[384:768])
    assert np.array_equal(state["encoder.blocks.2.attn.value.weight"], qkv[768:])
    assert np.array_equal(state["encoder.blocks.2.attn.value.bias"], v["encoder/layer_2/self_attention/linear_0/bias"][768:])
    kv = v["decoder/layer_3/attention/linear_1/weight"]
    assert np.array_equal(state["decoder.blocks.3.cross_attn.value.weight"], kv[384:])
    assert "decoder.blocks.3.cross_attn.key.bias" not in state and "encoder.blocks.0.attn.key.bias" not in state
    assert np.array_equal(state["decoder.blocks.1.mlp_ln.weight"], v["decoder/layer_1/ffn/layer_norm/gamma"])
    assert np.array_equal(state["decoder.token_embedding.weight"], v["decoder/embeddings/weight"])


def test_converted_checkpoint_loads_in_openai_whisper_with_the_same_values(tiny_en: Path, tmp_path: Path,
                                                                           tiny_variables: tuple[str, dict[str, np.ndarray]]) -> None:
    target = convert.convert(tiny_en, tmp_path / "tiny.en.pt")
    model = whisper.load_model(str(target), device="cpu")
    assert not model.is_multilingual and model.dims.n_text_layer == 4
    conv1 = tiny_variables[1]["encoder/conv1/weight"].astype(np.float32)
    assert np.array_equal(model.encoder.conv1.weight.detach().numpy(), conv1)
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_converts_into_the_cache_runs_look_in(tmp_path: Path) -> None:
    result = run_cli("models", "convert", "tiny.en", "--out", str(tmp_path / "t.pt"))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "t.pt" and (tmp_path / "t.pt").stat().st_size > 70e6


def test_truncated_model_bin_names_the_file_the_byte_and_the_variable(tiny_en: Path, tmp_path: Path) -> None:
    data = (tiny_en / "model.bin").read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(data[:300_000])
    with pytest.raises(convert.ConversionError, match=rf"{bad}: truncated at byte \d+ while reading the values of decoder/"):
        convert.read_model_bin(bad)


@pytest.mark.parametrize(("content", "message"), [
    (b"", r"truncated at byte 0 while reading the binary version"),
    (struct.pack("<I", 99) + b"rest", r"binary version 99 is not supported"),
    (struct.pack("<I", 6) + struct.pack("<H", 4) + b"abcd", r"spec name is not NUL-terminated"),
])
def test_garbage_is_not_mistaken_for_a_model(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(content)
    with pytest.raises(convert.ConversionError, match=message):
        convert.read_model_bin(bad)


def test_other_specs_quantized_weights_and_missing_variables_are_refused(tmp_path: Path) -> None:
    weights = {"encoder/conv1/weight": np.zeros((8, 80, 3), np.float16)}
    with pytest.raises(convert.ConversionError, match="spec 'TransformerSpec' is not a Whisper model"):
        convert.to_openai(*convert.read_model_bin(write_model_bin(tmp_path / "a.bin", weights, spec="TransformerSpec")), tmp_path)
    with pytest.raises(convert.ConversionError, match="variable decoder/embeddings/weight is missing"):
        convert.to_openai(*convert.read_model_bin(write_model_bin(tmp_path / "b.bin", weights)), tmp_path)
    int8 = {"encoder/conv1/weight": np.zeros((8, 80, 3), np.int8)}
    with pytest.raises(convert.ConversionError, match="int8-quantized"):
        convert.to_openai(*convert.read_model_bin(write_model_bin(tmp_path / "c.bin", int8)), tmp_path)


def test_int8_quantizes_every_linear_layer_of_openai_whisper(tiny_en: Path, tmp_path: Path) -> None:
    from harness.backends.openai_whisper import quantize_int8

    model = whisper.load_model(str(convert.convert(tiny_en, tmp_path / "t.pt")), device="cpu")
    linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    quantized = quantize_int8(model)
    kinds = [type(m).__module__ + "." + type(m).__name__ for m in quantized.modules()]
    assert kinds.count("torch.ao.nn.quantized.dynamic.modules.linear.Linear") == linear == 4 * 6 + 4 * 10
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
