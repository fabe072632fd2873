"""The nightly GitHub Actions workflow is valid (offline, against the vendored GitHub workflow schema)
and runs the same nox sessions a developer runs, with the run history kept in the published site."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "nightly.yml"


def test_workflow_matches_the_github_schema() -> None:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(exe).exists():
        pytest.skip("check-jsonschema is installed by `nox -s tests`")
    result = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_keeps_the_history_in_the_published_site() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "write"}  # it pushes gh-pages
    steps = workflow["jobs"]["bench"]["steps"]
    site = next(s for s in steps if s.get("with", {}).get("ref") == "gh-pages")
    assert site["uses"].startswith("actions/checkout@") and site["with"]["path"] == "site"
    runs = [step["run"] for step in steps if "run" in step]
    # the gate and the publishing are nox sessions (tested and run locally), not shell scripts here
    assert "nox -s nightly -- --store site" in runs and "nox -s publish -- --store site" in runs
    assert all("\n" not in run.strip() for run in runs)
    assert steps.index(site) < next(i for i, s in enumerate(steps) if s.get("run", "").startswith("nox -s nightly"))
    publish = next(s for s in steps if s.get("run", "").startswith("nox -s publish"))
    assert "!cancelled()" in publish["if"]  # a night with a regression is published too: its run is history
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("actions/cache@") for u in uses) and any(u.startswith("actions/upload-artifact@") for u in uses)
