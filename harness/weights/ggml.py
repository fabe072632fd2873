"""CTranslate2 Whisper `model.bin` -> whisper.cpp's legacy ggml model file (float16, q8_0, q5_0).

whisper.cpp (`src/whisper.cpp`, `whisper_model_load`) reads, all little endian:

- u32 magic 0x67676d6c ("ggml");
- 11 x i32 hyper-parameters: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
  n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype. ftype is ggml's `ggml_ftype`
  (0 all f32, 1 mostly f16, 7 mostly q8_0, 8 mostly q5_0) plus 1000 x the quantization version (2)
  for quantized files, as whisper.cpp's `quantize` tool writes it (the loader takes ftype % 1000);
- the mel filter bank: i32 n_mel, i32 n_fft (201), n_mel x n_fft f32 (openai-whisper's
  `mel_filters.npz`);
- the vocabulary: i32 count, then per token u32 length + its raw bytes. Only the ordinary
  (byte-level BPE) tokens are written, the ones before `<|endoftext|>`: 50256 for English-only models,
  50257 for multilingual ones (id 50256 is the empty token there); the loader names the special
  tokens itself and derives the ids of `<|endoftext|>`, `<|startoftranscript|>`, ... from n_vocab
  (multilingual when n_vocab >= 51865);
- the tensors until the end of the file, each: i32 n_dims, i32 name length, i32 ggml type
  (0 f32, 1 f16, 6 q5_0, 8 q8_0), i32 ne[n_dims] (the numpy shape reversed: ne[0] is the row length),
  the name (openai-whisper's state-dict name), the data (rows of ne[0] values; a quantized row is
  ne[0] / 32 blocks). No alignment padding.

The loader allocates every tensor with a fixed type and refuses a file whose tensor has another size:
positional embeddings, conv biases (stored as [n_state, 1]), layer norms and biases are f32; the
two conv weights are f16 (f32 in an all-f32 file); every other 2-D matrix, the token embedding
included, has the file's weight type. Every tensor must be present, and no other.
`examples/quantize` quantizes exactly those 2-D matrices (all 2-D tensors but the conv biases and
the positional embeddings), with ggml's reference quantizers reproduced here with numpy:

- q8_0, 34-byte blocks of 32 weights: fp16 d = amax / 127, then int8 q = roundf(x / d) (halves away
  from zero); x' = q * d.
- q5_0, 22-byte blocks: fp16 d = max / -16 where max is the weight of largest magnitude (the first
  one, sign kept), q = min(31, trunc(x / d + 16.5)) in 0..31; the low nibbles of weights j and j + 16
  share byte j of qs (j low, j + 16 high), the fifth bits go to bit j of the little-endian u32 qh;
  x' = (q - 16) * d. The weight of largest magnitude maps to q = 0 (exactly -16 d); one of the
  opposite sign and the same magnitude would need +16 and is clipped to +15.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.weights.convert import ConversionError, read_model_bin, to_openai

if TYPE_CHECKING:
    from harness.weights.models import LocalModel

__all__ = ["QUANTIZATIONS", "ConversionError", "GgmlFile", "cached_path", "convert", "convert_cached",
           "dequantize", "local_model", "quantize", "read", "source_sha256", "tensor_type"]

MAGIC = 0x67676D6C
QNT_VERSION = 2  # ggml's GGML_QNT_VERSION, written into the ftype of quantized files
QNT_VERSION_FACTOR = 1000

# ggml_type ids
F32, F16, Q5_0, Q8_0 = 0, 1, 6, 8
TYPE_NAMES = {F32: "f32", F16: "f16", Q5_0: "q5_0", Q8_0: "q8_0"}
# No all-f32 file: whisper.cpp would then want f32 conv weights, and the CPU backend of the ggml that
# pywhispercpp 1.5.1 bundles (0.13.1) aborts the process on them (im2col: GGML_ASSERT(src0->type == F16)).
QUANTIZATIONS = ("float16", "q8_0", "q5_0")
WEIGHT_TYPE = {"float16": F16, "q8_0": Q8_0, "q5_0": Q5_0}
FTYPE = {"float16": 1,
         "q8_0": QNT_VERSION * QNT_VERSION_FACTOR + 7, "q5_0": QNT_VERSION * QNT_VERSION_FACTOR + 8}

QK = 32  # weights per block, both formats
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])  # 34 bytes
Q5_0_BLOCK = np.dtype([("d", "<f2"), ("qh", "u1", (4,)), ("qs", "u1", (QK // 2,))])  # 22 bytes
BLOCKS = {Q8_0: Q8_0_BLOCK, Q5_0: Q5_0_BLOCK}
CHUNK_BLOCKS = 1 << 16  # quantize this many blocks at a time (bounds the converter's memory)

# 2-D tensors that stay f32 (whisper.cpp's loader wants them so; its quantize tool skips them).
F32_2D = frozenset({"encoder.conv1.bias", "encoder.conv2.bias",
                    "encoder.positional_embedding", "decoder.positional_embedding"})
EOT = "<|endoftext|>"


def tensor_type(name: str, ndim: int, quantization: str) -> int:
    """The ggml type whisper.cpp expects for a tensor of a file of this quantization."""
    if ndim < 2 or name in F32_2D:
        return F32
    if ndim == 3:  # the two conv weights: f16 in f16 and quantized files (whisper.cpp's `vtype`)
        return F16
    return WEIGHT_TYPE[quantization]


# ---------------------------------------------------------------------------------------------------
# Quantization (ggml's reference quantizers, vectorized)


def _as_blocks(values: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if x.size % QK:
        raise ValueError(f"{x.size} values are not a whole number of {QK}-value blocks")
    return x.reshape(-1, QK)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d in float32, 0 where d is 0 (as ggml: `id = d ? 1.0f/d : 0.0f`)."""
    out = np.zeros_like(d)
    np.divide(np.float32(1.0), d, out=out, where=d != 0)
    return out


def _quantize_q8_0(x: np.ndarray) -> np.ndarray:
    blocks = np.empty(len(x), dtype=Q8_0_BLOCK)
    d = np.abs(x).max(axis=1) / np.float32(127)
    v = x * _reciprocal(d)[:, None]  # float32, like the C code
    # roundf: halves away from zero. |v| + 0.5 is exact in float64 for a float32 |v| <= 128.
    q = np.copysign(np.floor(np.abs(v).astype(np.float64) + 0.5), v)
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = q.astype(np.int8)
    return blocks


def _quantize_q5_0(x: np.ndarray) -> np.ndarray:
    blocks = np.empty(len(x), dtype=Q5_0_BLOCK)
    first_largest = np.abs(x).argmax(axis=1)  # argmax keeps the first of equal magnitudes, as ggml's `<`
    d = x[np.arange(len(x)), first_largest] / np.float32(-16)
    v = x * _reciprocal(d)[:, None] + np.float32(16.5)  # float32; >= 0.5 since |x| <= |max|
    q = np.minimum(v.astype(np.int32), 31).astype(np.uint8)  # C's (int8_t) cast truncates: floor here
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = (q[:, : QK // 2] & 0x0F) | ((q[:, QK // 2:] & 0x0F) << 4)
    blocks["qh"] = np.packbits((q >> 4) & 1, axis=1, bitorder="little")  # bit j of the LE u32 = weight j
    return blocks


def _quantizer(ggml_type: int) -> Callable[[np.ndarray], np.ndarray]:
    try:
        return {Q8_0: _quantize_q8_0, Q5_0: _quantize_q5_0}[ggml_type]
    except KeyError:
        raise ValueError(f"ggml type {ggml_type} is not a quantized type this module writes") from None


def _type_id(kind: str | int) -> int:
    if isinstance(kind, int):
        return kind
    ids = {"q8_0": Q8_0, "q5_0": Q5_0}
    if kind not in ids:
        raise ValueError(f"unknown quantized type {kind!r}; expected q8_0 or q5_0")
    return ids[kind]


def quantize(values: np.ndarray, kind: str | int) -> bytes:
    """The q8_0 / q5_0 blocks of `values` (any shape, size a multiple of 32, quantized in C order),
    byte for byte what ggml's reference quantizer writes."""
    quantize_one = _quantizer(_type_id(kind))
    x = _as_blocks(values)
    return b"".join(quantize_one(x[i:i + CHUNK_BLOCKS]).tobytes() for i in range(0, len(x), CHUNK_BLOCKS))


def dequantize(block_bytes: bytes | bytearray | memoryview | np.ndarray, kind: str | int) -> np.ndarray:
    """Decode q8_0 / q5_0 blocks back to float32 values (flat, 32 per block)."""
    dtype = BLOCKS[_type_id(kind)]
    raw = np.frombuffer(block_bytes, dtype=np.uint8) if not isinstance(block_bytes, np.ndarray) else block_bytes.view(np.uint8).reshape(-1)
    if raw.size % dtype.itemsize:
        raise ValueError(f"{raw.size} bytes are not a whole number of {dtype.itemsize}-byte blocks")
    blocks = raw.view(dtype)
    d = blocks["d"].astype(np.float32)[:, None]
    if dtype is Q8_0_BLOCK:
        return (blocks["qs"].astype(np.float32) * d).reshape(-1)
    qs, high = blocks["qs"], np.unpackbits(blocks["qh"], axis=1, bitorder="little")
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1) | (high << 4)
    return ((q.astype(np.float32) - 16) * d).reshape(-1)


# ---------------------------------------------------------------------------------------------------
# Mel filters and vocabulary


def _mel_filters(n_mels: int) -> np.ndarray:
    """openai-whisper's filter bank (the file whisper.cpp's converter copies), or the same librosa
    formula computed here when openai-whisper is not installed (equal to 1 float32 ulp)."""
    spec = importlib.util.find_spec("whisper")  # finds the package without importing it (and PyTorch)
    if spec is not None and spec.origin is not None:
        assets = Path(spec.origin).parent / "assets" / "mel_filters.npz"
        if assets.is_file():
            with np.load(assets) as f:
                if f"mel_{n_mels}" in f:
                    return np.asarray(f[f"mel_{n_mels}"], dtype=np.float32)
    return mel_filters(n_mels)


def mel_filters(n_mels: int, sample_rate: int = 16000, n_fft: int = 400) -> np.ndarray:
    """Slaney-style mel filter bank (librosa.filters.mel defaults), float32 [n_mels, n_fft // 2 + 1]."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return min_log_mel + np.log(hz / min_log_hz) / logstep if hz >= min_log_hz else hz / f_sp

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    ramps = hz[:, None] - np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[None, :]
    widths = np.diff(hz)
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]))
    return (weights * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable bytes stand for themselves, the other 68
    bytes for the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


def _token_strings(ct2_dir: Path) -> list[str]:
    """Every token of the CTranslate2 directory by id (vocabulary.json, vocabulary.txt or tokenizer.json)."""
    try:
        if (path := ct2_dir / "vocabulary.json").is_file():
            return list(json.loads(path.read_text(encoding="utf-8")))
        if (path := ct2_dir / "vocabulary.txt").is_file():
            text = path.read_text(encoding="utf-8")
            # One token per line; split on \n only (a byte-level token never holds one), and keep empty
            # lines: the multilingual vocabulary's token 50256 is the empty string.
            return text.removesuffix("\n").split("\n")
        if (path := ct2_dir / "tokenizer.json").is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            by_id = {int(i): t for t, i in doc["model"]["vocab"].items()}
            by_id.update({int(t["id"]): t["content"] for t in doc.get("added_tokens", [])})
            if sorted(by_id) != list(range(len(by_id))):
                raise ConversionError(f"{path}: token ids are not 0..{len(by_id) - 1}")
            return [by_id[i] for i in range(len(by_id))]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{path}: cannot read the vocabulary ({type(exc).__name__}: {exc})") from None
    raise ConversionError(f"{ct2_dir}: no vocabulary.txt, vocabulary.json or tokenizer.json; "
                          "a CTranslate2 Whisper directory has one beside model.bin")


def _vocabulary(ct2_dir: Path, n_vocab: int) -> list[bytes]:
    """The ordinary tokens' bytes, in id order, as whisper.cpp's converter writes them."""
    tokens = _token_strings(ct2_dir)
    if len(tokens) != n_vocab:
        raise ConversionError(f"{ct2_dir}: the vocabulary has {len(tokens)} tokens but the model's token "
                              f"embedding has {n_vocab} rows")
    if EOT not in tokens:
        raise ConversionError(f"{ct2_dir}: the vocabulary has no {EOT} token; not a Whisper vocabulary")
    eot = tokens.index(EOT)
    # whisper.cpp derives the special tokens' ids from n_vocab alone: <|endoftext|> must sit there.
    expected = 50257 if n_vocab >= 51865 else 50256
    if eot != expected:
        raise ConversionError(f"{ct2_dir}: {EOT} has id {eot}, but whisper.cpp expects {expected} for a "
                              f"vocabulary of {n_vocab} tokens; not a Whisper vocabulary")
    decoder = _byte_decoder()
    out = []
    for i, token in enumerate(tokens[:eot]):
        try:
            out.append(bytes(decoder[c] for c in token))
        except KeyError as exc:
            raise ConversionError(f"{ct2_dir}: token {i} {token!r} has the character {exc.args[0]!r}, outside "
                                  "GPT-2's byte-level alphabet; not a Whisper vocabulary") from None
    return out


# ---------------------------------------------------------------------------------------------------
# The converter


@dataclass(frozen=True)
class _Tensor:
    name: str
    array: np.ndarray  # float16 or float32, in the shape written
    ggml_type: int


def _plan(state: dict[str, np.ndarray], quantization: str, source: Path) -> list[_Tensor]:
    tensors = []
    for name, array in state.items():
        if array.dtype not in (np.float16, np.float32):
            raise ConversionError(f"{source}: tensor {name} has dtype {array.dtype}; whisper.cpp's converter "
                                  "takes float16 or float32 weights")
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            array = array.reshape(-1, 1)  # whisper.cpp wants [n_state, 1] (ne = 1 x n_state)
        kind = tensor_type(name, array.ndim, quantization)
        if kind in BLOCKS and array.shape[-1] % QK:
            raise ConversionError(f"{source}: tensor {name} has rows of {array.shape[-1]} values, not a multiple "
                                  f"of {QK}; ggml cannot store it as {quantization} (use float16)")
        if not np.isfinite(array).all():
            raise ConversionError(f"{source}: tensor {name} holds NaN or infinite values; the model is corrupt")
        if kind == F16 and array.dtype == np.float32 and array.size and np.abs(array).max() > np.finfo(np.float16).max:
            raise ConversionError(f"{source}: tensor {name} has values beyond float16's range (65504); "
                                  "whisper.cpp cannot load it without overflow")
        tensors.append(_Tensor(name, array, kind))
    return tensors


def _check_dims(dims: dict[str, int], source: Path) -> None:
    if dims["n_audio_state"] != dims["n_text_state"]:
        raise ConversionError(f"{source}: encoder width {dims['n_audio_state']} differs from decoder width "
                              f"{dims['n_text_state']}; whisper.cpp needs them equal")
    for stack in ("audio", "text"):
        if (dims[f"n_{stack}_layer"] < 1 or dims[f"n_{stack}_head"] < 1
                or dims[f"n_{stack}_state"] % dims[f"n_{stack}_head"]):
            raise ConversionError(f"{source}: {stack} stack has {dims[f'n_{stack}_layer']} layers of width "
                                  f"{dims[f'n_{stack}_state']} and {dims[f'n_{stack}_head']} heads; not a Whisper model")


def _tensor_bytes(t: _Tensor) -> Iterator[bytes | memoryview]:
    header = struct.pack(f"<3i{t.array.ndim}i", t.array.ndim, len(t.name.encode()), t.ggml_type, *t.array.shape[::-1])
    yield header + t.name.encode()
    if t.ggml_type == F32:
        yield np.ascontiguousarray(t.array, dtype="<f4").data
    elif t.ggml_type == F16:
        yield np.ascontiguousarray(t.array, dtype="<f2").data
    else:
        quantize_one = _quantizer(t.ggml_type)
        flat = t.array.reshape(-1, QK)
        for i in range(0, len(flat), CHUNK_BLOCKS):
            yield quantize_one(flat[i:i + CHUNK_BLOCKS].astype(np.float32)).data


def convert(ct2_dir: Path, target: Path, quantization: str) -> Path:
    """Write whisper.cpp's ggml model file of a CTranslate2 Whisper directory to `target` (atomically:
    a temporary file renamed into place). `quantization`: float16, q8_0 or q5_0."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r} for whisper.cpp; expected one of {', '.join(QUANTIZATIONS)}")
    ct2_dir, target = Path(ct2_dir), Path(target)
    source = ct2_dir / "model.bin"
    dims, state = to_openai(*read_model_bin(source), source)
    _check_dims(dims, source)
    tensors = _plan(state, quantization, source)  # every check before anything is written
    vocab = _vocabulary(ct2_dir, dims["n_vocab"])
    mel = _mel_filters(dims["n_mels"])

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<I", MAGIC))
            f.write(struct.pack("<11i", dims["n_vocab"], dims["n_audio_ctx"], dims["n_audio_state"],
                                dims["n_audio_head"], dims["n_audio_layer"], dims["n_text_ctx"],
                                dims["n_text_state"], dims["n_text_head"], dims["n_text_layer"],
                                dims["n_mels"], FTYPE[quantization]))
            f.write(struct.pack("<2i", *mel.shape) + np.ascontiguousarray(mel, dtype="<f4").tobytes())
            f.write(struct.pack("<i", len(vocab)))
            f.write(b"".join(struct.pack("<I", len(token)) + token for token in vocab))
            for tensor in tensors:
                for piece in _tensor_bytes(tensor):
                    f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------------------------------------------
# Reading a ggml file back (tests, checks before loading)


@dataclass
class GgmlFile:
    hparams: dict[str, int]
    mel_filters: np.ndarray
    vocab: list[bytes]
    # name -> (ggml type, numpy-order shape, raw data)
    tensors: dict[str, tuple[int, tuple[int, ...], memoryview]] = field(default_factory=dict)

    @property
    def multilingual(self) -> bool:
        return self.hparams["n_vocab"] >= 51865

    def array(self, name: str) -> np.ndarray:
        """A tensor's values as float32 (dequantized when quantized)."""
        kind, shape, data = self.tensors[name]
        if kind == F32:
            return np.frombuffer(data, dtype="<f4").reshape(shape)
        if kind == F16:
            return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(shape)
        return dequantize(data, kind).reshape(shape)


HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
           "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")


def _type_size(kind: int, count: int, where: str) -> int:
    if kind == F32:
        return 4 * count
    if kind == F16:
        return 2 * count
    if kind in BLOCKS:
        return BLOCKS[kind].itemsize * (count // QK)
    raise ValueError(f"{where}: ggml type {kind} is not one this reader knows (f32, f16, q8_0, q5_0)")


def read(path: Path, tensors: bool = True) -> GgmlFile:
    """Parse a legacy whisper.cpp ggml file (header, mel filters, vocabulary, and the tensors unless
    `tensors` is False). Raises ValueError naming the byte offset of anything malformed."""
    with open(path, "rb") as f:
        buf = f.read() if tensors else f.read(64 << 20)
    pos = 0

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if pos + n > len(buf):
            raise ValueError(f"{path}: truncated at byte {pos} while reading {what}")
        view = memoryview(buf)[pos:pos + n]
        pos += n
        return view

    (magic,) = struct.unpack("<I", take(4, "the magic"))
    if magic != MAGIC:
        raise ValueError(f"{path}: bad magic {magic:#x}; not a ggml model file")
    hparams = dict(zip(HPARAMS, struct.unpack("<11i", take(44, "the hyper-parameters"))))
    n_mel, n_fft = struct.unpack("<2i", take(8, "the mel filter shape"))
    mel = np.frombuffer(take(4 * n_mel * n_fft, "the mel filters"), dtype="<f4").reshape(n_mel, n_fft)
    (count,) = struct.unpack("<i", take(4, "the vocabulary size"))
    vocab = []
    for i in range(count):
        (length,) = struct.unpack("<I", take(4, f"the length of token {i}"))
        vocab.append(bytes(take(length, f"token {i}")))
    out = GgmlFile(hparams, mel, vocab)
    while tensors and pos < len(buf):
        n_dims, length, kind = struct.unpack("<3i", take(12, "a tensor header"))
        if not 0 <= n_dims <= 4:
            raise ValueError(f"{path}: byte {pos - 12}: tensor with {n_dims} dimensions")
        ne = struct.unpack(f"<{n_dims}i", take(4 * n_dims, "a tensor shape"))
        name = bytes(take(length, "a tensor name")).decode()
        count_values = int(np.prod(ne, dtype=np.int64))
        data = take(_type_size(kind, count_values, name), f"the data of {name}")
        out.tensors[name] = (kind, tuple(ne[::-1]), data)
    return out


# ---------------------------------------------------------------------------------------------------
# The cache


def _cache_folder() -> Path:
    from harness.weights.models import cache_dir

    return cache_dir() / "models" / "whisper.cpp"


def source_sha256(model_bin: Path) -> str:
    """sha256 of a file's content, computed once and remembered (keyed by its path, size and mtime)
    in a small sidecar in the cache."""
    model_bin = Path(model_bin).resolve()
    stat = model_bin.stat()
    sidecar = _cache_folder() / ".sources" / (hashlib.sha256(str(model_bin).encode()).hexdigest()[:20] + ".json")
    identity = {"path": str(model_bin), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        memo = json.loads(sidecar.read_text())
        if {k: memo.get(k) for k in identity} == identity and re.fullmatch(r"[0-9a-f]{64}", memo.get("sha256", "")):
            return str(memo["sha256"])
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    with open(model_bin, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**identity, "sha256": digest.hexdigest()}))
    os.replace(tmp, sidecar)
    return digest.hexdigest()


def _source(model: str | Path, allow_download: bool) -> tuple[str, Path, str]:
    """(name, CTranslate2 directory, where it came from) of a model name or directory."""
    from harness.weights.models import resolve

    path = Path(model).expanduser()
    if (path / "model.bin").is_file():
        return path.resolve().name, path, "directory"
    found = resolve(str(model), allow_download=allow_download)
    return Path(found.name).name, found.path, found.source


def _cached(name: str, ct2_dir: Path, quantization: str) -> Path:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r} for whisper.cpp; expected one of {', '.join(QUANTIZATIONS)}")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return _cache_folder() / f"{safe}-{quantization}-{source_sha256(ct2_dir / 'model.bin')[:16]}.bin"


def cached_path(model: str | Path, quantization: str, allow_download: bool = True) -> Path:
    """Where the conversion of a model (a name or a CTranslate2 directory) is cached:
    `<cache>/models/whisper.cpp/<name>-<quantization>-<sha256 of model.bin, 16 hex>.bin`."""
    name, ct2_dir, _ = _source(model, allow_download)
    return _cached(name, ct2_dir, quantization)


def convert_cached(model: str | Path, quantization: str, allow_download: bool = True) -> Path:
    """The ggml file of a model in this quantization: converted into the cache once, then reused."""
    name, ct2_dir, _ = _source(model, allow_download)
    target = _cached(name, ct2_dir, quantization)
    if not target.is_file():
        convert(ct2_dir, target, quantization)
    return target


def local_model(model: str, quantization: str, allow_download: bool = True) -> LocalModel:
    """`models.LocalModel` of the converted file, for the sweep (which reports ModelUnavailable as an
    error row): a conversion problem becomes ModelUnavailable naming the model."""
    from harness.weights.models import LocalModel, ModelUnavailable

    name, ct2_dir, source = _source(model, allow_download)
    try:
        target = _cached(name, ct2_dir, quantization)
        if not target.is_file():
            convert(ct2_dir, target, quantization)
    except ConversionError as exc:
        raise ModelUnavailable(f"cannot convert {model!r} for whisper.cpp: {exc}") from None
    return LocalModel(model, target, f"converted to ggml {quantization} from {source}")
