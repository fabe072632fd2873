"""whisper.cpp: the ggml converter (layout, quantization error bounds, bit-exactness against libggml,
the cache, bad inputs) and the adapter on real speech (slow)."""

from __future__ import annotations

import base64
import ctypes
import glob
import hashlib
import importlib.util
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.backends.whisper_cpp import WhisperCppBackend, map_decoding
from harness.weights import ggml, models
from harness.weights.convert import ConversionError, read_model_bin, to_openai

REAL_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "real-dev"
CLIPS = ("en_jfk", "en_picovoice_leopard_test")
DECODING = {"best_of": 5, "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "condition_on_previous_text": True,
            "without_timestamps": False}
WHOLE = {"mode": "whole"}


# ---------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    try:
        return models.resolve("tiny.en", allow_download=False).path
    except models.ModelUnavailable as exc:
        pytest.skip(f"the tiny.en offline pack is not installed: {exc}")


@pytest.fixture(scope="module")
def tiny_state(tiny_en: Path) -> dict[str, np.ndarray]:
    source = tiny_en / "model.bin"
    return to_openai(*read_model_bin(source), source)[1]


@pytest.fixture(scope="module")
def converted(tiny_en: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny.en in every quantization, converted once for the module."""
    folder = tmp_path_factory.mktemp("ggml")
    return {q: ggml.convert(tiny_en, folder / f"tiny.en-{q}.bin", q) for q in ggml.QUANTIZATIONS}


@pytest.fixture(scope="module")
def parsed(converted: dict[str, Path]) -> dict[str, ggml.GgmlFile]:
    return {q: ggml.read(path) for q, path in converted.items()}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


CT2_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}


def write_model_bin(path: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec",
                    dtype_ids: dict[str, int] | None = None) -> Path:
    """A model.bin in CTranslate2's layout; `dtype_ids` overrides the dtype id written for a variable."""
    out = struct.pack("<I", 6) + _string(spec) + struct.pack("<II", 1, len(variables))
    for name, a in variables.items():
        dtype_id = (dtype_ids or {}).get(name, CT2_IDS[a.dtype])
        out += _string(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        out += struct.pack("<BI", dtype_id, a.nbytes) + a.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))
    return path


def fake_whisper(folder: Path, width: int = 64, heads: int = 1, multilingual: bool = False,
                 dtype: type = np.float16, spec: str = "WhisperSpec", dtype_ids: dict[str, int] | None = None,
                 overrides: dict[str, np.ndarray] | None = None) -> Path:
    """A complete, small CTranslate2 Whisper directory (one layer per stack, random weights)."""
    rng = np.random.default_rng(1)
    vocab = 51865 if multilingual else 51864

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(dtype)

    v: dict[str, np.ndarray] = {
        "encoder/conv1/weight": w(width, 80, 3), "encoder/conv1/bias": w(width),
        "encoder/conv2/weight": w(width, width, 3), "encoder/conv2/bias": w(width),
        "encoder/position_encodings/encodings": w(8, width),
        "encoder/layer_norm/gamma": w(width), "encoder/layer_norm/beta": w(width),
        "decoder/embeddings/weight": w(vocab, width), "decoder/position_encodings/encodings": w(8, width),
        "decoder/layer_norm/gamma": w(width), "decoder/layer_norm/beta": w(width),
        "encoder/num_heads": np.array(heads, dtype=np.int32), "decoder/num_heads": np.array(heads, dtype=np.int32),
    }
    for stack in ("encoder", "decoder"):
        p = f"{stack}/layer_0"
        v |= {f"{p}/self_attention/linear_0/weight": w(3 * width, width), f"{p}/self_attention/linear_0/bias": w(3 * width),
              f"{p}/self_attention/linear_1/weight": w(width, width), f"{p}/self_attention/linear_1/bias": w(width),
              f"{p}/self_attention/layer_norm/gamma": w(width), f"{p}/self_attention/layer_norm/beta": w(width),
              f"{p}/ffn/linear_0/weight": w(4 * width, width), f"{p}/ffn/linear_0/bias": w(4 * width),
              f"{p}/ffn/linear_1/weight": w(width, 4 * width), f"{p}/ffn/linear_1/bias": w(width),
              f"{p}/ffn/layer_norm/gamma": w(width), f"{p}/ffn/layer_norm/beta": w(width)}
    p = "decoder/layer_0/attention"
    v |= {f"{p}/linear_0/weight": w(width, width), f"{p}/linear_0/bias": w(width),
          f"{p}/linear_1/weight": w(2 * width, width), f"{p}/linear_1/bias": w(2 * width),
          f"{p}/linear_2/weight": w(width, width), f"{p}/linear_2/bias": w(width),
          f"{p}/layer_norm/gamma": w(width), f"{p}/layer_norm/beta": w(width)}
    v |= overrides or {}
    folder.mkdir(parents=True, exist_ok=True)
    write_model_bin(folder / "model.bin", v, spec, dtype_ids)
    ordinary = [f"t{i}" for i in range(50257 if multilingual else 50256)]
    if multilingual:
        ordinary[50256] = ""  # as in Whisper's multilingual vocabulary
    ordinary[:3] = ["Ġthe", "Ċ", "Ã©"]  # " the", "\n", "é" in GPT-2's byte-level alphabet
    tokens = ordinary + ["<|endoftext|>"] + [f"<|s{i}|>" for i in range(vocab - len(ordinary) - 1)]
    (folder / "vocabulary.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder


def libggml() -> ctypes.CDLL | None:
    """ggml's own library as bundled by pywhispercpp, for its reference quantizer."""
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).parent
    found = sorted(glob.glob(str(site / "pywhispercpp.libs" / "libggml-base*.so*"))) or sorted(glob.glob(str(site / "libggml-base.so*")))
    if not found:
        return None
    lib = ctypes.CDLL(found[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_reference(lib: ctypes.CDLL, x: np.ndarray, kind: int) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.zeros(x.size * 2 + 64, dtype=np.uint8)  # q8_0 needs 34/32 bytes per value, q5_0 22/32
    n = lib.ggml_quantize_chunk(kind, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
    return out[:n].tobytes()


def check_within_bound(x: np.ndarray, decoded: np.ndarray, block_bytes: bytes, kind: str) -> None:
    """Every decoded value within the format's error bound, derived per block from the source values.

    q8_0: d = amax / 127 (float32), stored as fp16 d16; q = round(x / d), |q| <= 127, x' = q d16. So
    |x - x'| <= |x - q d| + |q| |d - d16| <= d / 2 + 127 |d - d16|, plus float32 rounding (a few ulps
    of x / d, i.e. well under d * 2^-15).
    q5_0: d = max / -16 (max: the value of largest magnitude), q = floor(x / d + 16.5) in 0..31,
    x' = (q - 16) d16. While x / d <= 15.5, |x - (q - 16) d| <= |d| / 2; a value of the sign opposite to
    max with x / d in (15.5, 16] needs q = 32 and is clipped to 31: its error is |d| (x / d - 15), at
    most |d|. The fp16 rounding of d adds |q - 16| |d - d16| <= 16 |d - d16|.
    """
    x = x.astype(np.float32).reshape(-1, 32)
    decoded = decoded.reshape(-1, 32).astype(np.float64)
    error = np.abs(x.astype(np.float64) - decoded)
    if kind == "q8_0":
        d = np.abs(x).max(axis=1) / np.float32(127)
        stored = np.frombuffer(block_bytes, dtype=ggml.Q8_0_BLOCK)["d"]
        d16 = d.astype(np.float16)
        bound = d / 2 + 127 * np.abs(d.astype(np.float64) - d16.astype(np.float64)) + d * 2.0 ** -15
        bound = bound[:, None]
    else:
        largest = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
        d = largest / np.float32(-16)
        stored = np.frombuffer(block_bytes, dtype=ggml.Q5_0_BLOCK)["d"]
        d16 = d.astype(np.float16)
        ratio = np.divide(x.astype(np.float64), d[:, None].astype(np.float64), out=np.zeros(x.shape), where=d[:, None] != 0)
        per_value = np.abs(d)[:, None] * np.maximum(0.5, ratio - 15)  # |d| / 2, or the clipped value's error
        bound = (per_value + 16 * np.abs(d.astype(np.float64) - d16.astype(np.float64))[:, None]
                 + np.abs(d)[:, None] * 2.0 ** -15)
        assert (ratio <= 16 + 1e-5).all()  # no value beyond the block's largest magnitude
    assert np.array_equal(stored.view(np.uint16), d16.view(np.uint16)), "the scale is not fp16(d)"
    worst = np.argmax(error - bound)
    assert (error <= bound).all(), (f"{kind}: value {x.flat[worst]} decoded as {decoded.flat[worst]}, error "
                                    f"{error.flat[worst]:.3g} > bound {np.broadcast_to(bound, error.shape).flat[worst]:.3g}")


def random_blocks(rng: np.random.Generator) -> np.ndarray:
    """Random rows over many magnitudes, plus the edge blocks."""
    x = rng.standard_normal((256, 256)) * 10.0 ** rng.uniform(-7, 3, size=(256, 1))
    x[0, :32] = 0  # all zero: d = 0
    x[1, :32] = 0.75  # all equal
    x[2, :32] = np.where(np.arange(32) % 2, 1.0, -1.0)  # +-max: q5_0 clips the opposite sign
    x[3, :32] = rng.standard_normal(32) * 1e-6  # scale in fp16's subnormal range
    x[4, :32] = (np.arange(32) - 16) * 0.3 + 0.15  # halfway values
    x[5, :32] = rng.uniform(-1, 1, 32) * 60000  # large
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# The file layout


def test_header_mel_filters_and_vocabulary(parsed: dict[str, ggml.GgmlFile], tiny_en: Path) -> None:
    f16 = parsed["float16"]
    assert f16.hparams == {"n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                           "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6,
                           "n_text_layer": 4, "n_mels": 80, "ftype": 1}
    assert parsed["q8_0"].hparams["ftype"] == 2007 and parsed["q5_0"].hparams["ftype"] == 2008
    assert not f16.multilingual
    assert f16.mel_filters.shape == (80, 201)
    assert np.allclose(f16.mel_filters, ggml.mel_filters(80), rtol=0, atol=1e-7)
    # The ordinary tokens only (the loader names the special ones), as bytes.
    assert len(f16.vocab) == 50256
    assert f16.vocab[220] == b" " and f16.vocab[262] == b" the" and f16.vocab[198] == b"\n"
    whisper = importlib.util.find_spec("whisper")
    tiktoken = Path(whisper.origin).parent / "assets" / "gpt2.tiktoken" if whisper and whisper.origin else None
    if tiktoken is not None and tiktoken.is_file():  # what whisper.cpp's own converter reads
        ranks = dict(line.split() for line in tiktoken.read_bytes().splitlines() if line)
        assert f16.vocab == [base64.b64decode(t) for t, _ in sorted(ranks.items(), key=lambda kv: int(kv[1]))]


def test_every_tensor_whisper_cpp_expects_with_its_type(parsed: dict[str, ggml.GgmlFile],
                                                        tiny_state: dict[str, np.ndarray]) -> None:
    for quantization, weight in (("float16", ggml.F16), ("q8_0", ggml.Q8_0), ("q5_0", ggml.Q5_0)):
        tensors = parsed[quantization].tensors
        assert set(tensors) == set(tiny_state)
        types = {name: kind for name, (kind, _, _) in tensors.items()}
        assert types["encoder.conv1.weight"] == types["encoder.conv2.weight"] == ggml.F16
        assert tensors["encoder.conv1.bias"][:2] == (ggml.F32, (384, 1))  # [n_state, 1], f32
        assert types["encoder.positional_embedding"] == types["decoder.positional_embedding"] == ggml.F32
        assert types["decoder.token_embedding.weight"] == weight
        assert types["encoder.blocks.0.mlp.0.weight"] == types["decoder.blocks.3.cross_attn.key.weight"] == weight
        assert all(kind == ggml.F32 for name, (kind, shape, _) in tensors.items() if len(shape) == 1)
        assert {name: shape for name, (_, shape, _) in tensors.items() if name != "encoder.conv1.bias"
                and name != "encoder.conv2.bias"} == {n: a.shape for n, a in tiny_state.items()
                                                       if n not in ("encoder.conv1.bias", "encoder.conv2.bias")}


def test_float16_tensors_are_the_source_values(parsed: dict[str, ggml.GgmlFile], tiny_state: dict[str, np.ndarray]) -> None:
    f16 = parsed["float16"]
    for name, source in tiny_state.items():
        assert np.array_equal(f16.array(name).reshape(source.shape), source.astype(np.float32)), name


# ---------------------------------------------------------------------------------------------------
# Quantization


@pytest.mark.parametrize("kind", ["q8_0", "q5_0"])
def test_random_data_decodes_within_the_bound(kind: str) -> None:
    x = random_blocks(np.random.default_rng(7))
    data = ggml.quantize(x, kind)
    assert len(data) == x.size // 32 * (34 if kind == "q8_0" else 22)
    check_within_bound(x, ggml.dequantize(data, kind), data, kind)


@pytest.mark.parametrize("kind", ["q8_0", "q5_0"])
def test_real_tensors_decode_within_the_bound(kind: str, parsed: dict[str, ggml.GgmlFile],
                                              tiny_state: dict[str, np.ndarray]) -> None:
    quantized = {name: entry for name, entry in parsed[kind].tensors.items() if entry[0] in ggml.BLOCKS}
    assert len(quantized) == 4 * 6 + 4 * 10 + 1  # per layer 6 (encoder) / 10 (decoder) matrices + the embedding
    for name, (_, _, data) in quantized.items():
        check_within_bound(tiny_state[name], ggml.dequantize(data, kind), bytes(data), kind)


@pytest.mark.parametrize("kind", ["q8_0", "q5_0"])
def test_bit_identical_to_ggmls_own_quantizer(kind: str, parsed: dict[str, ggml.GgmlFile],
                                              tiny_state: dict[str, np.ndarray]) -> None:
    lib = libggml()
    if lib is None:
        pytest.skip("pywhispercpp's libggml is not installed")
    type_id = ggml.Q8_0 if kind == "q8_0" else ggml.Q5_0
    x = random_blocks(np.random.default_rng(11))
    assert ggml.quantize(x, kind) == ggml_reference(lib, x, type_id)
    for name, (type_in_file, _, data) in parsed[kind].tensors.items():
        if type_in_file in ggml.BLOCKS:
            assert bytes(data) == ggml_reference(lib, tiny_state[name], type_id), name


def test_block_layouts_by_hand() -> None:
    # q8_0: d = amax / 127 = 1; halves round away from zero (numpy's round would give 2 and -2).
    x = np.zeros(32, dtype=np.float32)
    x[:6] = [127, 2.5, -2.5, 0.5, -0.5, -127]
    block = ggml.quantize(x, "q8_0")
    assert struct.unpack("<e", block[:2])[0] == 1.0
    assert list(struct.unpack("<6b", block[2:8])) == [127, 3, -3, 1, -1, -127]
    # q5_0: the value of largest magnitude is +2 (first), so d = 2 / -16 and q = x / d + 16 = 0..31.
    x = (-(np.arange(32) - 16) * 0.125).astype(np.float32)
    block = ggml.quantize(x, "q5_0")
    assert struct.unpack("<e", block[:2])[0] == -0.125
    assert block[2:6] == b"\x00\x00\xff\xff"  # fifth bits: bit j of the LE u32 for value j (16..31 set)
    assert block[6:] == bytes(j | (j << 4) for j in range(16))  # low nibble: value j, high: value j + 16
    assert np.array_equal(ggml.dequantize(block, "q5_0"), x)
    # q5_0 clips the opposite extreme: max = +1 -> d = -1/16; -1 needs q = 32, gets 31 (-15/16).
    x = np.zeros(32, dtype=np.float32)
    x[0], x[1] = 1.0, -1.0
    assert ggml.dequantize(ggml.quantize(x, "q5_0"), "q5_0")[:2].tolist() == [1.0, -0.9375]


# ---------------------------------------------------------------------------------------------------
# Bad inputs


def test_a_truncated_model_bin(tmp_path: Path) -> None:
    folder = fake_whisper(tmp_path / "m")
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[: len(data) * 3 // 5])
    with pytest.raises(ConversionError, match="truncated at byte"):
        ggml.convert(folder, tmp_path / "out.bin", "float16")
    assert not list(tmp_path.glob("out.bin*"))


def test_not_a_model_bin_or_not_whisper(tmp_path: Path) -> None:
    folder = fake_whisper(tmp_path / "m", spec="TransformerSpec")
    with pytest.raises(ConversionError, match="not a Whisper model"):
        ggml.convert(folder, tmp_path / "out.bin", "q8_0")
    (folder / "model.bin").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ConversionError, match="binary version"):
        ggml.convert(folder, tmp_path / "out.bin", "q8_0")


def test_unsupported_tensor_dtypes(tmp_path: Path) -> None:
    name = "decoder/layer_0/ffn/linear_0/weight"
    folder = fake_whisper(tmp_path / "int32", overrides={name: np.ones((256, 64), dtype=np.int32)})
    with pytest.raises(ConversionError, match=r"decoder\.blocks\.0\.mlp\.0\.weight has dtype int32"):
        ggml.convert(folder, tmp_path / "out.bin", "float16")
    folder = fake_whisper(tmp_path / "bf16", dtype_ids={name: 5})  # bfloat16: no numpy type
    with pytest.raises(ConversionError, match="dtype id 5"):
        ggml.convert(folder, tmp_path / "out.bin", "float16")
    folder = fake_whisper(tmp_path / "int8", overrides={name: np.ones((256, 64), dtype=np.int8)})
    with pytest.raises(ConversionError, match="int8-quantized"):
        ggml.convert(folder, tmp_path / "out.bin", "q5_0")
    assert not list(tmp_path.glob("out.bin*"))


def test_rows_that_are_not_a_multiple_of_32_cannot_be_quantized(tmp_path: Path) -> None:
    folder = fake_whisper(tmp_path / "m", width=40, heads=2)
    for quantization in ("q8_0", "q5_0"):
        with pytest.raises(ConversionError, match=rf"rows of 40 values, not a multiple of 32; .* as {quantization}"):
            ggml.convert(folder, tmp_path / "out.bin", quantization)
    assert not (tmp_path / "out.bin").exists()
    f16 = ggml.read(ggml.convert(folder, tmp_path / "out.bin", "float16"))  # float16 has no blocks
    assert f16.hparams["n_audio_state"] == 40 and f16.hparams["n_audio_head"] == 2


def test_vocabulary_problems(tmp_path: Path) -> None:
    folder = fake_whisper(tmp_path / "m")
    (folder / "vocabulary.txt").write_text("a\nb\n<|endoftext|>\n")
    with pytest.raises(ConversionError, match="3 tokens but the model's token embedding has 51864 rows"):
        ggml.convert(folder, tmp_path / "out.bin", "float16")
    (folder / "vocabulary.txt").unlink()
    with pytest.raises(ConversionError, match="no vocabulary.txt"):
        ggml.convert(folder, tmp_path / "out.bin", "float16")
    with pytest.raises(ValueError, match="unknown quantization 'q4_0'"):
        ggml.convert(folder, tmp_path / "out.bin", "q4_0")


def test_a_multilingual_vocabulary_keeps_its_empty_token(tmp_path: Path) -> None:
    folder = fake_whisper(tmp_path / "m", multilingual=True)
    out = ggml.read(ggml.convert(folder, tmp_path / "out.bin", "q8_0"))
    assert out.multilingual and len(out.vocab) == 50257 and out.vocab[50256] == b""
    assert out.vocab[:3] == [b" the", b"\n", "é".encode()]


# ---------------------------------------------------------------------------------------------------
# The cache


def test_conversions_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_en: Path) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    path = ggml.convert_cached("tiny.en", "q5_0")
    assert path == ggml.cached_path("tiny.en", "q5_0")
    assert path.parent == tmp_path / "cache" / "models" / "whisper.cpp"
    assert re.fullmatch(r"tiny\.en-q5_0-[0-9a-f]{16}\.bin", path.name)
    sha = hashlib.sha256((tiny_en / "model.bin").read_bytes()).hexdigest()
    assert path.name.endswith(f"-{sha[:16]}.bin")
    sidecars = list((path.parent / ".sources").glob("*.json"))
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["sha256"] == sha
    stamp = path.stat().st_mtime_ns
    assert ggml.convert_cached("tiny.en", "q5_0") == path and path.stat().st_mtime_ns == stamp  # reused
    # The same weights in another directory: the same content key under that directory's name.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_en.iterdir():
        (copy / f.name).symlink_to(f)
    assert ggml.cached_path(copy, "q5_0").name == f"copy-q5_0-{sha[:16]}.bin"
    found = ggml.local_model("tiny.en", "q5_0")
    assert found.path == path and "q5_0" in found.source


def test_local_model_reports_a_failed_conversion_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    folder = fake_whisper(tmp_path / "odd", width=40, heads=2)
    with pytest.raises(models.ModelUnavailable, match="cannot convert .* for whisper.cpp: .*not a multiple of 32"):
        ggml.local_model(str(folder), "q8_0")


# ---------------------------------------------------------------------------------------------------
# The adapter's decoding settings (no library needed)


def test_decoding_settings_map_to_whisper_cpp() -> None:
    params, unmapped = map_decoding(5, DECODING)
    assert params == {"strategy": "beam_search", "beam_size": 5, "best_of": 5, "temperature": 0.0,
                      "temperature_inc": 0.2, "no_context": True, "n_max_text_ctx": 16384, "no_timestamps": False}
    assert unmapped == []
    params, unmapped = map_decoding(1, {**DECODING, "temperature": [0.0], "condition_on_previous_text": False,
                                        "without_timestamps": True})
    assert (params["strategy"], params["temperature_inc"], params["n_max_text_ctx"], params["no_timestamps"]) == \
        ("greedy", 0.0, 0, True)
    assert unmapped == [] and params["no_context"]  # no_context is per request, not per window
    _, unmapped = map_decoding(5, {**DECODING, "temperature": [0.0, 0.5]})  # stops before 1.0
    assert len(unmapped) == 1 and "[0.0, 0.5, 1.0]" in unmapped[0]
    _, unmapped = map_decoding(5, {**DECODING, "temperature": [0.0, 0.1, 0.3]})  # uneven
    assert len(unmapped) == 1 and unmapped[0].startswith("temperature [0.0, 0.1, 0.3]")
    with pytest.raises(ValueError, match="at most 8 decoders"):
        map_decoding(10, DECODING)


# ---------------------------------------------------------------------------------------------------
# The adapter on real speech


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, str]]:
    manifest = REAL_DEV / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip(f"real speech not available ({REAL_DEV} is absent: a clone without ../shared)")
    from harness.child.audio import decode

    entries = {e["id"]: e for e in map(json.loads, manifest.read_text().splitlines())}
    return {i: (decode(str(REAL_DEV / entries[i]["audio"])), entries[i]["text"]) for i in CLIPS}


@pytest.fixture(scope="module")
def backends(converted: dict[str, Path]) -> Iterator[dict[str, WhisperCppBackend]]:
    pytest.importorskip("_pywhispercpp")
    loaded = {}
    for quantization, path in converted.items():
        backend = WhisperCppBackend()
        backend.load(str(path), quantization, 2)
        loaded[quantization] = backend
    yield loaded
    for backend in loaded.values():
        backend.close()


@pytest.fixture(scope="module")
def transcripts(backends: dict[str, WhisperCppBackend], clips: dict[str, tuple[np.ndarray, str]]) -> dict[str, list[str]]:
    return {q: [b.transcribe(clips[i][0], "en", 5, DECODING, WHOLE) for i in CLIPS] for q, b in backends.items()}


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["float16", "q8_0", "q5_0"])
def test_transcribes_real_english_speech(quantization: str, transcripts: dict[str, list[str]],
                                         clips: dict[str, tuple[np.ndarray, str]]) -> None:
    from harness.analyze.scoring import error_rates

    refs = [clips[i][1] for i in CLIPS]
    assert error_rates(refs, transcripts[quantization], "en")["wer"] < 0.25, transcripts[quantization]


@pytest.mark.slow
def test_float16_agrees_with_faster_whisper_float32(transcripts: dict[str, list[str]], tiny_en: Path,
                                                    clips: dict[str, tuple[np.ndarray, str]]) -> None:
    from harness.analyze.scoring import error_rates
    from harness.backends.faster_whisper import FasterWhisperBackend

    reference = FasterWhisperBackend()
    reference.load(str(tiny_en), "float32", 2)
    theirs = [reference.transcribe(clips[i][0], "en", 5, DECODING, WHOLE) for i in CLIPS]
    # The same weights and settings; the engines differ in beam search details and float order.
    assert error_rates(theirs, transcripts["float16"], "en")["wer"] <= 0.1, (theirs, transcripts["float16"])


@pytest.mark.slow
def test_adapter_contract(backends: dict[str, WhisperCppBackend], clips: dict[str, tuple[np.ndarray, str]],
                          converted: dict[str, Path], tmp_path: Path) -> None:
    backend = backends["q8_0"]
    assert backend.supports_language("en") and not backend.supports_language("pt")  # tiny.en
    audio = clips["en_jfk"][0]
    # A short piece, as stream mode sends (padded to 1 s), and a list-free single temperature.
    assert backend.transcribe(audio[:12000], "en", 1, {**DECODING, "temperature": [0.0]}, WHOLE).lower().startswith("and")
    described = backend.describe()
    assert described["ggml_ftype"] == 7 and described["multilingual"] is False and described["n_threads"] == 2
    assert described["decoding_effective"]["strategy"] == "greedy" and described["unmapped"] == []
    backend.transcribe(audio[:12000], "en", 1, {**DECODING, "temperature": [0.0, 0.5]}, WHOLE)
    assert len(backend.describe()["unmapped"]) == 1
    with pytest.raises(ValueError, match="no 'vad' chunking"):
        backend.transcribe(audio, "en", 1, DECODING, {"mode": "vad"})
    with pytest.raises(ValueError, match="does not know the language 'xx'"):
        backend.transcribe(audio, "xx", 1, DECODING, WHOLE)
    # Load failures raise with whisper.cpp's own message instead of crashing later.
    data = converted["q8_0"].read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="not all tensors loaded"):
        WhisperCppBackend().load(str(tmp_path / "cut.bin"), "q8_0", 2)
    with pytest.raises(ValueError, match="ftype is 7, not q5_0"):
        WhisperCppBackend().load(str(converted["q8_0"]), "q5_0", 2)
