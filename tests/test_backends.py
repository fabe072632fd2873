"""The backend registry and each backend's description (fast), and faster-whisper and openai-whisper
side by side on the same converted weights, audio and decoding (slow)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_rows, run_cli, worker_processes, write_scenario

from harness import backends
from harness.analyze import deploy
from harness.backends.base import BackendInfo
from harness.weights import models


@pytest.mark.slow
def test_both_backends_agree_on_real_english_with_the_same_weights(tmp_path: Path, small_manifest: Path) -> None:
    pytest.importorskip("whisper")
    scenario = write_scenario(tmp_path / "backends.yaml", """
name: backends
languages: [en]
repeats: 1
matrix: {backend: [faster-whisper, openai-whisper], model: [base], quantization: [float32, float16],
         threads: [2], cpu_pinning: [auto]}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    rows = {(r["config"]["backend"], r["config"]["quantization"]): r for r in read_rows(run_dir)}

    faster, openai = rows["faster-whisper", "float32"], rows["openai-whisper", "float32"]
    assert faster["status"] == openai["status"] == "ok", (faster["reason"], openai["reason"])
    assert openai["config"]["model_source"].startswith("converted from offline pack")
    assert openai["config"]["compute_type_effective"] == "float32"
    wer = {name: r["metrics"]["languages"]["en"]["wer"] for name, r in (("faster", faster), ("openai", openai))}
    assert abs(wer["faster"] - wer["openai"]) <= 0.01, wer
    # PyTorch and its float32 activations: openai-whisper needs more memory (the ordering in DESIGN.md).
    assert openai["metrics"]["peak_rss_mb"] > faster["metrics"]["peak_rss_mb"]
    assert openai["config"]["threads_effective"]

    # float16 on the CPU: faster-whisper tries and fails (an error row); openai-whisper is skipped up front.
    assert rows["openai-whisper", "float16"]["status"] == "skipped"
    assert "CUDA" in rows["openai-whisper", "float16"]["reason"]
    assert not worker_processes()


@pytest.mark.slow
def test_without_openai_whisper_its_configurations_are_skipped_and_the_rest_runs(tmp_path: Path, small_manifest: Path) -> None:
    # `sys.modules[name] = None` is how Python marks a module as absent: find_spec -> None, import -> ImportError.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['whisper'] = None\n")
    scenario = write_scenario(tmp_path / "s.yaml", """
name: absent
languages: [en]
repeats: 1
matrix: {backend: [openai-whisper, faster-whisper], model: [tiny.en], quantization: [int8], threads: [1]}
""")
    run_dir = tmp_path / "run"
    result = run_cli("run", str(scenario), "--dataset", str(small_manifest), "--out", str(run_dir),
                     env={"PYTHONPATH": str(hide)})
    assert result.returncode == 0, result.stderr
    openai, faster = read_rows(run_dir)
    assert openai["status"] == "skipped" and "openai-whisper is not installed (no module whisper)" in openai["reason"]
    assert faster["status"] == "ok"


def test_unsupported_reason_is_none_for_what_runs_on_this_machine() -> None:
    pytest.importorskip("whisper")
    assert backends.info("openai-whisper").unavailable("int8") is None
    assert backends.info("faster-whisper").unavailable("float16") is None  # CTranslate2 decides, at load


# ---------------------------------------------------------------------------------------------
# The registry and the backends' descriptions (no model, no subprocess but one `python -c`).

HEAVY = ("faster_whisper", "ctranslate2", "whisper", "torch")  # the libraries of the two first backends


def test_the_registry_lists_each_backend_and_info_returns_the_modules_own_description() -> None:
    assert {"faster-whisper", "openai-whisper"} <= set(backends.names())
    assert backends.DEFAULT in backends.names()
    for name in backends.names():
        info = backends.info(name)
        assert isinstance(info, BackendInfo) and info.name == name
        assert info is sys.modules[backends._REGISTRY[name]].BACKEND
        assert "whole" in info.chunking and "stream" in info.runs()
        assert set(info.bytes_per_weight) >= set(info.quantizations)
        assert set(info.cpu_unsupported) <= set(info.quantizations)
        assert info.modules and info.packages and info.install_hint
    assert backends.all_quantizations() == tuple(sorted({q for n in backends.names() for q in backends.info(n).quantizations}))
    with pytest.raises(KeyError, match="unknown backend 'whisperx'"):
        backends.info("whisperx")


def test_reading_every_description_imports_no_backend_library() -> None:
    code = ("import sys\nfrom harness import backends\n"
            "for name in backends.names():\n    backends.info(name).unavailable('int8')\n"
            "print(' '.join(sorted({m.partition('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    imported = set(done.stdout.split())
    libraries = set(HEAVY) | {m.partition(".")[0] for n in backends.names() for m in backends.info(n).modules}
    assert not imported & libraries, sorted(imported & libraries)


def test_unavailable_says_what_to_install_why_not_on_a_cpu_and_which_modes_run() -> None:
    openai, faster = backends.info("openai-whisper"), backends.info("faster-whisper")
    assert openai.unavailable("float16") == ("openai-whisper float16 needs a CUDA GPU; the harness measures on the CPU "
                                             "(use float32 or int8)")
    assert openai.unavailable("float32", "vad") == ("openai-whisper has no 'vad' mode (Silero VAD drops silence before "
                                                   "decoding); it runs whole and stream")
    assert openai.unavailable("float32", "stream") is None or openai.missing_modules()  # the harness streams every backend
    assert faster.unavailable("int8", "batched") is None and faster.unavailable("int8", "stream") is None
    absent = BackendInfo(name="absent", quantizations=("int8",), chunking=("whole",), modules=("no_such_module_xyz",),
                         install_hint="pip install 'whisper-harness[absent]'", packages=("absent",),
                         bytes_per_weight={"int8": 1}, resolve_model=models.resolve, deploy_python=lambda m, q, t: "",
                         adapter="nowhere:Nothing")
    assert absent.unavailable("int8") == ("absent is not installed (no module no_such_module_xyz); "
                                          "pip install 'whisper-harness[absent]'")


def test_a_description_that_contradicts_itself_is_refused_at_import() -> None:
    common = dict(name="bad", modules=("x",), install_hint="", packages=(), resolve_model=models.resolve,
                  deploy_python=lambda m, q, t: "", adapter="x:Y")
    with pytest.raises(ValueError, match="bytes_per_weight lacks int4"):
        BackendInfo(quantizations=("int8", "int4"), chunking=("whole",), bytes_per_weight={"int8": 1}, **common)
    with pytest.raises(ValueError, match="chunking lists stream"):
        BackendInfo(quantizations=("int8",), chunking=("whole", "stream"), bytes_per_weight={"int8": 1}, **common)
    with pytest.raises(ValueError, match="cpu_unsupported names unknown quantizations float16"):
        BackendInfo(quantizations=("int8",), chunking=("whole",), bytes_per_weight={"int8": 1},
                    cpu_unsupported={"float16": "no"}, **common)


def test_english_only_deploy_env_and_scalene_defaults() -> None:
    faster, openai = backends.info("faster-whisper"), backends.info("openai-whisper")
    assert faster.english_only("tiny.en") and faster.english_only("models/base.en/") and not faster.english_only("base")
    assert faster.deploy_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}
    assert openai.scalene_cpu_only and not faster.scalene_cpu_only


def test_adapter_returns_the_backends_adapter_without_loading_a_model() -> None:
    pytest.importorskip("faster_whisper")
    adapter = backends.adapter("faster-whisper")
    assert type(adapter).__name__ == "FasterWhisperBackend" and adapter.model is None
    assert backends.get is backends.adapter  # the worker child's name for it


def test_static_hub_tables_match_the_installed_libraries() -> None:
    from harness.backends import faster_whisper as fw
    from harness.backends import openai_whisper as ow

    assert fw.HUB_REPOS == pytest.importorskip("faster_whisper.utils")._MODELS
    assert ow.OFFICIAL_MODELS == tuple(pytest.importorskip("whisper")._MODELS)


@pytest.mark.parametrize("model", ["base", "/models/base-ct2"])
def test_deployment_python_is_the_backends_own_and_names_the_hub_model(model: str) -> None:
    row = {"config": {"backend": "openai-whisper", "model": model, "quantization": "int8", "threads": 2,
                      "cpu_pinning": {"requested": "none"}},
           "metrics": {"peak_rss_mb": 300.0}}
    python = deploy.snippet(row)["python"]
    assert "torch.set_num_threads(2)" in python and "model = quantize_int8(model)" in python
    if model == "base":
        assert "whisper.load_model('base', device=\"cpu\")" in python and "OpenAI's base.pt" in python
    else:  # a CTranslate2 directory was measured through a conversion: say how to make the same .pt
        assert "harness models convert /models/base-ct2 --out base-ct2.pt" in python
    compile(python, "<snippet>", "exec")


def test_model_paths_accept_the_files_some_backend_loads(tmp_path: Path) -> None:
    from harness.plan.scenario import UserError, load_scenario

    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "m.txt").write_bytes(b"")
    path = tmp_path / "s.yaml"
    path.write_text(f"name: p\nmatrix: {{model: ['{tmp_path / 'm.pt'}']}}\n")
    assert load_scenario(path).matrix["model"] == (str(tmp_path / "m.pt"),)
    path.write_text(f"name: p\nmatrix: {{model: ['{tmp_path / 'm.txt'}']}}\n")
    with pytest.raises(UserError, match=r"or a model file \(\.pt\)"):
        load_scenario(path)


# ---------------------------------------------------------------------------------------------
# Nothing outside harness/backends/ names a backend or imports a backend's library.

HARNESS = REPO / "harness"
# Weight-format utilities: each reads or writes one library's file format (a CTranslate2 directory, an
# OpenAI .pt checkpoint, a transformers folder, a ggml file) and is named after it. Allowed by design:
# the backends' `resolve_model` call them.
FORMAT_MODULES = ("harness/weights/",)
def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _backend_mentions(path: Path, names: tuple[str, ...], libraries: set[str], label: str) -> list[str]:
    """Where a module names a backend (in a string other than a docstring; comments are not code) or
    uses a backend's library (an import, a name, a module name in a string)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    # A library's module name in a string: "torch", "whisper.audio" (not "whisper-english", "whisper.cpp").
    library_text = re.compile(r"(?<![\w.-])(%s)(?:\.(?!cpp\b)\w|(?![\w.-]))" % "|".join(map(re.escape, sorted(libraries))))
    found = []
    for node in ast.walk(tree):
        where = f"{label}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.partition(".")[0] in libraries]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").partition(".")[0] in libraries:
            found.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.Name) and node.id in libraries:
            found.append(f"{where}: name {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{where}: {n!r} in {node.value!r}" for n in names if n in node.value]
            found += [f"{where}: {m.group(1)!r} in {node.value!r}" for m in library_text.finditer(node.value)]
    return sorted(found, key=lambda f: int(f.split(":")[1]) if f.split(":")[1].isdigit() else 0)


def test_no_module_outside_the_backends_names_a_backend() -> None:
    names = backends.names()
    libraries = set(HEAVY) | {m.partition(".")[0] for n in names for m in backends.info(n).modules}
    found = []
    for path in sorted(HARNESS.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(("harness/backends/", *FORMAT_MODULES)):
            continue
        found += _backend_mentions(path, names, libraries, relative)
    assert not found, "backend knowledge outside harness/backends/:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may name faster-whisper."""\n'
                      "import torch  # comments may name openai-whisper\n"
                      "BACKEND = 'openai-whisper'\n"
                      "x = f\"{BACKEND} ok\"\n"
                      "from whisper.audio import load_audio\n"
                      "SPEC = 'faster_whisper'\n"
                      "FORMAT = 'a ggml file for whisper.cpp'\n"
                      "NORMALIZER = 'whisper-english'\n"
                      "CALL = 'whisper.load_model(...)'\n")
    found = _backend_mentions(sample, ("faster-whisper", "openai-whisper"), set(HEAVY), "sample.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "import torch", "'openai-whisper' in 'openai-whisper'", "from whisper.audio import",
        "'faster_whisper' in 'faster_whisper'", "'whisper' in 'whisper.load_model(...)'"], found


