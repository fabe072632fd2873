"""The run history store: many runs kept small, indexed by machine class, date and commit, so a
nightly run is judged against the recent runs of its own machine class (`harness compare history:DIR`)
and the trend index shows them all. The store can be the published site itself (the gh-pages branch):

    STORE/runs/<machine class slug>/<YYYYmmdd-HHMMSS>-<commit>-<key>/
        entry.json      id, machine class, started_at, commit, scenario, run ids, sha256 of results.jsonl
        results.jsonl   the run's rows without their memory timelines; profiled rows left out
        environment.json, and the run's report files when it has them (index.html, report.md,
        recommendation.json, summary.csv, compare.txt/.md/.json)

Logs, profiles, timelines and the scenario copy stay out (the rows name their scenario; parsing its
copy costs more than reading the rows, and the trend index reads a year of entries). `key` names the
run (scenario, start time, host): adding the same run again is one entry (unchanged: nothing written;
re-reported: replaced). An entry is built in a hidden folder beside its place and renamed into it, so
a reader never sees half an entry. A folder under `runs/` that is not a whole entry (no or a bad
entry.json, a results file whose digest does not match) is reported by its path and skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import store
from harness.analyze.baselines import slug
from harness.analyze.compare import load_side
from harness.contract import machine_class
from harness.errors import UserError

RUNS = "runs"
ENTRY_FILE = "entry.json"
REPORT_FILES = ("index.html", "report.md", "recommendation.json", "summary.csv", "compare.txt", "compare.md", "compare.json")
FIELDS = ("id", "machine_class", "started_at", "commit", "scenario", "run_ids", "key", "results_sha256")


@dataclass(frozen=True)
class Entry:
    path: Path
    id: str
    machine_class: str
    started_at: str
    commit: str
    scenario: str
    run_ids: tuple[str, ...]
    key: str
    results_sha256: str

    def relative(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


def _identity(rows: list[dict[str, Any]], env: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(key, started_at, rows as stored) of a run: the key hashes scenario, start time and host."""
    started = env.get("started_at") or rows[0]["environment"].get("started_at") or ""
    kept = [{k: v for k, v in row.items() if k != "timeline"} for row in rows if not row.get("profiler")]
    if not kept:
        raise UserError("no measured rows to keep (only profiled ones)")
    name = json.dumps([rows[0]["scenario"], started, env.get("hostname")])
    return hashlib.sha256(name.encode()).hexdigest()[:8], started, kept


def add(run_dir: Path, root: Path) -> tuple[Entry, str]:
    """Add a run directory to the store: (its entry, "added" | "unchanged" | "replaced")."""
    rows, env = load_side(run_dir)
    key, started, kept = _identity(rows, env)
    results = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in kept).encode("utf-8")
    commit = env.get("git_commit") or rows[0]["environment"].get("git_commit") or "nocommit"
    machine = machine_class(env)
    try:
        stamp = datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")
    except ValueError:
        raise UserError(f"{run_dir}: the run has no valid start time (environment started_at {started!r})") from None
    name = f"{stamp}-{commit[:7]}-{key}"
    target = root / RUNS / slug(machine) / name
    meta = {"id": name, "machine_class": machine, "started_at": started, "commit": commit, "scenario": kept[0]["scenario"],
            "run_ids": [row["run_id"] for row in kept], "key": key, "results_sha256": hashlib.sha256(results).hexdigest()}
    status = "added"
    if target.exists():
        if _sha(target / ENTRY_FILE) == _sha_of(meta) and _same_files(run_dir, target):
            return _entry(target), "unchanged"
        status = "replaced"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write(tmp / store.RESULTS_FILE, results)
        _write(tmp / "environment.json", json.dumps(env, indent=2).encode())  # run_environment: maybe from the rows
        for file in REPORT_FILES:
            if (run_dir / file).is_file():
                _write(tmp / file, (run_dir / file).read_bytes())
        _write(tmp / ENTRY_FILE, _entry_bytes(meta))  # last: an entry.json means a whole entry
        if status == "replaced":
            old = target.with_name(f".old-{name}-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _entry(target), status


def _entry_bytes(meta: dict[str, Any]) -> bytes:
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _sha_of(meta: dict[str, Any]) -> str:
    return hashlib.sha256(_entry_bytes(meta)).hexdigest()


def _same_files(run_dir: Path, target: Path) -> bool:
    """The report files an entry copied are still those of the run directory."""
    return all(_sha(run_dir / f) == _sha(target / f) for f in REPORT_FILES)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _entry(path: Path) -> Entry:
    """An entry folder, checked: its entry.json holds every field, names this folder, and its
    results.jsonl is the file it was written with."""
    meta = store.read_json_object(path / ENTRY_FILE)
    for field in FIELDS:
        if field not in meta:
            raise store.invalid(str(path / ENTRY_FILE), field, store.MISSING, "a field of a history entry")
    if meta["id"] != path.name:
        raise store.invalid(str(path / ENTRY_FILE), "id", meta["id"], f"this folder's name, {path.name!r}")
    if _sha(path / store.RESULTS_FILE) != meta["results_sha256"]:
        raise UserError(f"{path / store.RESULTS_FILE}: missing or changed since it was added (sha256 differs)")
    return Entry(path, **{**{f: meta[f] for f in FIELDS}, "run_ids": tuple(meta["run_ids"])})


def entries(root: Path) -> list[Entry]:
    """Every whole entry of the store, oldest first; any other folder under runs/ is reported by its
    path (a warning) and skipped."""
    if not root.is_dir():
        raise UserError(f"{root}: no such history store (a folder; `harness history add` makes one)")
    found = []
    for path in sorted((root / RUNS).glob("*/*")):
        if path.name.startswith("."):
            continue  # an entry being written, or left by a crash (prune removes it)
        try:
            found.append(_entry(path))
        except UserError as exc:
            warnings.warn(f"{path}: not a history entry, skipped: {exc}", stacklevel=2)
    return sorted(found, key=lambda e: (e.started_at, e.id))


def prune(root: Path, keep: int) -> list[Entry]:
    """Keep the newest `keep` entries; returns the ones removed (and removes leftovers of crashed adds)."""
    if keep < 1:
        raise UserError(f"--keep: invalid value {keep}; expected an integer >= 1")
    every = entries(root)
    removed = every[:-keep]
    for entry in removed:
        shutil.rmtree(entry.path)
    for leftover in (root / RUNS).glob("*/.*-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def candidates(root: Path, current: Path) -> tuple[str, list[Entry]]:
    """(the current run's machine class, the entries a history compare may use, oldest first): the
    same machine class, started before the current run, other than it, and measuring every
    configuration it measured."""
    rows, env = load_side(current)
    key, started, kept = _identity(rows, env)
    machine = machine_class(env)
    ids = {row["run_id"] for row in kept}
    if not root.exists():  # the first night: no history yet
        return machine, []
    return machine, [e for e in entries(root) if e.machine_class == machine and e.key != key
                     and e.started_at < started and ids <= set(e.run_ids)]
