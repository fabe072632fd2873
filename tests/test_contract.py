"""The results contract: the JSON Schema checked into schemas/ is the one the code generates, rows of
every kind validate against it (by pydantic and by an independent JSON Schema validator), and rows
written before the typed contract (schema_version 1 golden files) still read."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness import store
from harness.contract import SCHEMAS, Row, Status, json_schemas
from harness.errors import UserError
from harness.measure import record, sweep
from harness.measure.runner import ChildOutcome
from harness.plan.scenario import validate_scenario

REPO = Path(__file__).resolve().parents[1]
GOLDEN = sorted((REPO / "tests" / "golden").rglob("*.jsonl"))


def test_the_checked_in_schemas_are_the_generated_ones() -> None:
    """`python -m harness.contract schemas` regenerates them after a change to harness/contract.py."""
    for name, schema in json_schemas().items():
        committed = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
        assert committed == schema, f"schemas/{name}.schema.json is stale: run `python -m harness.contract schemas`"
    assert {p.name for p in (REPO / "schemas").glob("*.schema.json")} == {f"{n}.schema.json" for n in SCHEMAS}


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: str(p.relative_to(REPO / "tests" / "golden")))
def test_golden_rows_written_before_the_typed_contract_still_read(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    schema = json_schemas()["row"]
    for row in rows:
        jsonschema.validate(row, schema)
        assert Row.model_validate(row).to_json() == json.loads(json.dumps(row))  # nothing added, nothing lost


def test_rows_built_by_the_measuring_side_follow_the_schema() -> None:
    scenario = validate_scenario({"name": "s", "matrix": {"model": ["base"]}}, Path("s.yaml"))
    spec = scenario.expand()[0]
    job = sweep.make_job(spec, [], {"normalization": {}})
    provenance = record.Provenance({"cpu": "x", "logical_cores": 2}, {"executor": "test"})
    skipped = record.not_run_row(job, Status.SKIPPED, "because", provenance)
    failed = record.build_row(job, ChildOutcome("oom", "killed", None, 300.0, 2.0), provenance)
    schema = json_schemas()["row"]
    for row in (skipped, failed):
        jsonschema.validate(row, schema)
        assert row["schema_version"] == 1 and row["node"] == {"executor": "test"}
    assert skipped["status"] == "skipped" and failed["status"] == "oom" and failed["metrics"]["peak_rss_mb"] == 300.0


def test_a_row_of_another_shape_is_an_error_naming_the_line_and_field(tmp_path: Path) -> None:
    row = json.loads(GOLDEN[0].read_text().splitlines()[0])
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "status": "fine"}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl:2: field 'status': invalid value \"fine\"; expected one of ok, oom, "):
        store.read_rows(path)
    path.write_text(json.dumps({**row, "config": {**row["config"], "threads": "two"}}) + "\n")
    with pytest.raises(UserError, match=r"results.jsonl:1: field 'config.threads': invalid value \"two\"; expected an integer"):
        store.read_rows(path)
