"""Reports: `build` turns a run directory into plain data, `render` writes HTML / markdown / JSON."""

from __future__ import annotations

from pathlib import Path

from harness.analyze import deploy
from harness.report import build as _build
from harness.report import render


def generate(run_dir: Path, budget_overrides: list[str] | None = None,
             headroom: float = deploy.DEFAULT_HEADROOM, out_dir: Path | None = None) -> dict[str, Path]:
    """Render a run directory's report into `out_dir` (default: the run directory itself)."""
    data = _build.build(run_dir, budget_overrides, headroom, out_dir)  # bad input fails before a folder is made
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    return render.write(data, out_dir or run_dir)
