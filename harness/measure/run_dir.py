"""A run directory: created or reopened for a resume, held by one process at a time, and checked to
belong to the scenario being run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import store
from harness.errors import UserError
from harness.plan.scenario import Scenario

LOCK_FILE = ".lock"
SCENARIO_COPY = "scenario.yaml"
RESUME_SETTINGS = ("datasets", "languages", "memory_cap_mb", "normalization")  # besides the run ids


@contextlib.contextmanager
def prepare_run_dir(run_dir: Path, scenario: Scenario, resume: bool,
                    doing: str = "measuring") -> Iterator[list[dict[str, Any]]]:
    """Create (or reopen, with `resume`) the run directory and hold its lock while the caller measures
    into it; yield the rows already measured. On resume the scenario must be the one the directory
    was started with, and a torn last line is moved aside before anything is appended."""
    results_path = run_dir / store.RESULTS_FILE
    if resume and not results_path.exists():
        raise UserError(f"{run_dir}: nothing to resume (no {store.RESULTS_FILE})")
    with run_dir_lock(run_dir, doing):
        if results_path.exists() and not resume:
            raise UserError(f"{run_dir}: already holds results; use --resume {run_dir} to finish it, or another --out")
        try:
            (run_dir / "logs").mkdir(exist_ok=True)
            if not resume:
                shutil.copyfile(scenario.path, run_dir / SCENARIO_COPY)
        except OSError as exc:
            raise UserError(f"{run_dir}: output directory is not writable: {exc.strerror or exc}") from None
        if not resume:
            yield []
            return
        store.repair_tail(results_path)
        rows, started_with = store.read_run(run_dir)
        _check_same_scenario(run_dir, scenario, started_with, rows)
        yield rows


def _check_same_scenario(run_dir: Path, scenario: Scenario, started_with: Scenario | None,
                         rows: list[dict[str, Any]]) -> None:
    """Refuse to resume a run directory with another scenario (its rows would mix with the old ones):
    compares what the scenarios mean (name, run ids, settings that change the measurements), so a
    comment or a reformatted file is no difference."""
    copy = run_dir / SCENARIO_COPY
    if started_with is None:  # no copy: what the rows recorded
        named = {r["scenario"] for r in rows} - {scenario.name}
        if named:
            raise UserError(f"{run_dir}: cannot resume with {scenario.path}: the run directory holds results of "
                            f"scenario {sorted(named)[0]!r}, not {scenario.name!r}")
        return
    differences = []
    if started_with.name != scenario.name:
        differences.append(f"name {started_with.name!r} in {copy}, {scenario.name!r} in {scenario.path}")
    old, new = [s.run_id for s in started_with.expand()], [s.run_id for s in scenario.expand()]
    for where, ids in ((copy, [i for i in old if i not in new]), (scenario.path, [i for i in new if i not in old])):
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            differences.append(f"run ids only in {where}: {shown}")
    for setting in RESUME_SETTINGS:
        if getattr(started_with, setting) != getattr(scenario, setting):
            differences.append(f"{setting} {getattr(started_with, setting)!r} in {copy}, "
                               f"{getattr(scenario, setting)!r} in {scenario.path}")
    if differences:
        raise UserError(f"{run_dir}: cannot resume with {scenario.path}: it is not the scenario the run directory "
                        f"was started with ({'; '.join(differences)}). Resume with that scenario, or start a new "
                        "run directory (--out)")


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, doing: str) -> Iterator[None]:
    """Hold RUN_DIR/.lock (an exclusive flock, released by the kernel if the process dies) while measuring
    into or appending to the run directory: a second process is refused, naming the holder, instead of
    measuring the same configurations again. Creating the lock file is also the check that the
    directory is writable."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{run_dir}: output directory is not writable: {exc.strerror or exc}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process (just starting)"
            raise UserError(f"{run_dir}: in use by {holder}; wait until it has finished (or stop it), "
                            "then run again") from None
        except OSError as exc:  # a file system without flock (some network mounts): measure, unguarded
            warnings.warn(f"{run_dir}: cannot lock it ({exc.strerror or exc}); nothing stops a second harness "
                          "from measuring into it at the same time", stacklevel=2)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now().isoformat(timespec='seconds')}, "
                f"{doing}: {shlex.join(sys.argv)}")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
