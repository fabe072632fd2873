"""CTranslate2 Whisper `model.bin` -> openai-whisper checkpoint (`{"dims": ..., "model_state_dict": ...}`).

The offline packs hold CTranslate2 conversions of the original Whisper weights; this inverts the
conversion so openai-whisper runs on exactly the same weights as faster-whisper. The `model.bin`
layout (little endian): u32 binary version, string spec name, u32 revision, u32 variable count; per
variable: string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, raw bytes; then u32
alias count and (alias, target) string pairs. A string is a u16 length (with its trailing NUL), then
the bytes. dtype ids follow CTranslate2's `DataType` enum.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

# CTranslate2 DataType: FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16 (bfloat16 has no numpy type).
DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                               4: np.dtype("<f2")}
SUPPORTED_BINARY_VERSIONS = (5, 6)


class ConversionError(Exception):
    """The CTranslate2 model cannot be converted; the message names the file and the problem."""


class _Reader:
    def __init__(self, path: Path, buf: bytes) -> None:
        self.path, self.buf, self.pos = path, buf, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ConversionError(f"{self.path}: truncated at byte {self.pos} while reading {what} "
                                  f"(needs {n} bytes, the file has {len(self.buf)})")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        raw = bytes(self.take(length, what))
        if not raw.endswith(b"\0"):
            raise ConversionError(f"{self.path}: byte {self.pos - length}: {what} is not NUL-terminated; "
                                  "not a CTranslate2 model.bin")
        return raw[:-1].decode("utf-8", errors="replace")


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and every variable (aliases resolved) as numpy arrays (read-only views of the file's bytes)."""
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read: {exc.strerror or exc}") from None
    r = _Reader(path, buf)
    (version,) = r.unpack("I", "the binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ConversionError(f"{path}: binary version {version} is not supported "
                              f"(this converter reads {SUPPORTED_BINARY_VERSIONS}); not a CTranslate2 model.bin?")
    spec = r.string("the spec name")
    r.unpack("I", "the spec revision")
    (count,) = r.unpack("I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string("a variable name")
        (rank,) = r.unpack("B", f"the rank of {name}")
        dims = r.unpack("I" * rank, f"the shape of {name}")
        (dtype_id,) = r.unpack("B", f"the dtype of {name}")
        (nbytes,) = r.unpack("I", f"the size of {name}")
        data = r.take(nbytes, f"the values of {name}")
        if dtype_id not in DTYPES:
            raise ConversionError(f"{path}: variable {name} has dtype id {dtype_id} (bfloat16 or unknown); "
                                  "convert from a float16 or float32 CTranslate2 model")
        dtype = DTYPES[dtype_id]
        if nbytes != dtype.itemsize * int(np.prod(dims, dtype=np.int64)):
            raise ConversionError(f"{path}: variable {name}: {nbytes} bytes do not fit shape {dims} of {dtype}")
        variables[name] = np.frombuffer(data, dtype=dtype).reshape(dims)
    (aliases,) = r.unpack("I", "the alias count")
    for _ in range(aliases):
        alias, target = r.string("an alias"), r.string("an alias target")
        if target in variables:
            variables[alias] = variables[target]
    return spec, variables


def _layer_count(variables: dict[str, np.ndarray], stack: str) -> int:
    # `layer_\d+` only: `layer_norm` is not a layer.
    return len({m.group(1) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def _heads(variables: dict[str, np.ndarray], stack: str, width: int) -> int:
    stored = variables.get(f"{stack}/num_heads")
    return int(stored) if stored is not None and stored.size == 1 else width // 64


def to_openai(spec: str, variables: dict[str, np.ndarray], source: Path) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """openai-whisper's ModelDimensions and state dict (numpy, float16/float32 as stored)."""
    if spec != "WhisperSpec":
        raise ConversionError(f"{source}: spec {spec!r} is not a Whisper model (expected WhisperSpec)")
    quantized = sorted(n for n, a in variables.items() if n.endswith("/weight") and a.dtype == np.int8)
    if quantized:
        raise ConversionError(f"{source}: weights are int8-quantized (e.g. {quantized[0]}); convert from a "
                              "float16 or float32 CTranslate2 model")
    try:
        return _map(variables)
    except KeyError as exc:
        raise ConversionError(f"{source}: variable {exc.args[0]} is missing; not a complete Whisper model") from None


def _map(v: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    audio_state, n_mels, _ = v["encoder/conv1/weight"].shape
    vocab, text_state = v["decoder/embeddings/weight"].shape
    dims = {
        "n_mels": int(n_mels), "n_vocab": int(vocab),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]), "n_audio_state": int(audio_state),
        "n_audio_head": _heads(v, "encoder", audio_state), "n_audio_layer": _layer_count(v, "encoder"),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]), "n_text_state": int(text_state),
        "n_text_head": _heads(v, "decoder", text_state), "n_text_layer": _layer_count(v, "decoder"),
    }
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        # Fused projections along dim 0; openai-whisper's key projection has no bias.
        weights = np.split(v[f"{src}/weight"], len(names))
        biases = np.split(v[f"{src}/bias"], len(names))
        for name, w, b in zip(names, weights, biases):
            sd[f"{dst}.{name}.weight"] = w
            if name != "key":
                sd[f"{dst}.{name}.bias"] = b

    for stack, n_layers in (("encoder", dims["n_audio_layer"]), ("decoder", dims["n_text_layer"])):
        for i in range(n_layers):
            src, dst = f"{stack}/layer_{i}", f"{stack}.blocks.{i}"
            fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
            linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
            norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
            if stack == "decoder":
                linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
                fused(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
                linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
                norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
            linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
            norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    norm("decoder.ln", "decoder/layer_norm")
    return dims, sd


def convert(model_dir: Path, target: Path) -> Path:
    """Write the openai-whisper checkpoint of a CTranslate2 Whisper directory to `target` (atomically)."""
    import torch  # only the writer needs PyTorch

    source = model_dir / "model.bin"
    dims, state = to_openai(*read_model_bin(source), source)
    checkpoint: dict[str, Any] = {"dims": dims,
                                  "model_state_dict": {k: torch.from_numpy(a.copy()) for k, a in state.items()}}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, target)
    return target
