"""Report data -> files: index.html (self-contained), report.md, recommendation.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "-"
    return f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.1f} %"


def _mdcell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def environment() -> Environment:
    env = Environment(loader=PackageLoader("harness", "report/templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True),
                      trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    env.filters.update(num=_num, pct=_pct, mdcell=_mdcell)
    return env


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    env = environment()
    paths = {"html": out_dir / "index.html", "markdown": out_dir / "report.md",
             "recommendation": out_dir / "recommendation.json"}
    paths["html"].write_text(env.get_template("report.html.j2").render(**report), encoding="utf-8")
    # Markdown is not HTML: no entity escaping there (table cells escape pipes instead).
    md_env = environment()
    md_env.autoescape = False
    paths["markdown"].write_text(md_env.get_template("report.md.j2").render(**report), encoding="utf-8")
    recommendation = {**report["recommendation"], "deployment": report["deployment"], "answer": report["answer"],
                      "overrides": report["overrides"]}
    paths["recommendation"].write_text(json.dumps(recommendation, indent=2), encoding="utf-8")
    return paths
