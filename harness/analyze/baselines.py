"""Baselines: saved run results in the repository, keyed by machine class (CPU model, cores), so a
baseline from one machine is never compared with a run from another by accident.

Layout: `baselines/<machine-class-slug>/<name>/{results.jsonl, environment.json}` (a run directory
without the bulky memory timelines), committed so nightly CI can compare against it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from harness import store
from harness.analyze.compare import load_side
from harness.contract import machine_class
from harness.errors import UserError

BASELINES_DIR = Path("baselines")


class NoBaseline(UserError):
    """No baseline of that name was saved for this machine class."""
PREFIX = "baseline:"


def slug(machine: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", machine.lower()).strip("-")


def save(run_dir: Path, name: str, root: Path = BASELINES_DIR) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    rows, env = load_side(run_dir)
    target = root / slug(machine_class(env)) / name
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for row in rows:
        row.pop("timeline", None)
        store.append_row(tmp / store.RESULTS_FILE, row)
    (tmp / "environment.json").write_text(json.dumps(env, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve(spec: str, current: Path, root: Path = BASELINES_DIR) -> Path:
    """A path as is; `baseline:NAME` -> the baseline NAME saved for the current run's machine class."""
    if not spec.startswith(PREFIX):
        return Path(spec)
    name = spec[len(PREFIX):]
    _, env = load_side(current)
    machine = machine_class(env)
    path = root / slug(machine) / name
    if not (path / store.RESULTS_FILE).is_file():
        known = sorted(str(p.relative_to(root)) for p in root.glob(f"*/*/{store.RESULTS_FILE}"))
        raise NoBaseline(f"no baseline {name!r} for this machine class ('{machine}', looked in {path}); saved "
                        f"baselines: {', '.join(known) or 'none'}. Save one: harness baseline save RUN_DIR --name {name}")
    return path
