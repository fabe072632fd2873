"""Reports: `build` turns a run directory into plain data, `render` writes HTML / markdown / JSON."""

from __future__ import annotations

from pathlib import Path

from harness.analyze import deploy
from harness.report import build as _build
from harness.report import render


def generate(run_dir: Path, budget_overrides: list[str] | None = None,
             headroom: float = deploy.DEFAULT_HEADROOM) -> dict[str, Path]:
    return render.write(_build.build(run_dir, budget_overrides, headroom), run_dir)
