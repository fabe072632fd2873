"""The run history store (`harness history`), `harness compare history:DIR`, and the nightly gate over a
simulated history: 3 real runs of scenarios/nightly.yaml (tests/golden/history, recorded on this
project's VM under foreign load, timelines stripped) plus 7 made by perturbing their rows within the
noise those 3 runs show, then one run with +30 % peak RSS and one with WER +3 points, and 2 runs of
another machine class. The trend index over that store is checked in a real browser."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_report import browser  # noqa: F401  (the fixture)

from harness import history, store
from harness.analyze import baselines, compare, history_baseline, scoring
from harness.cli import main
from harness.report.trend import _collect, chart, write_index

GOLDEN = Path(__file__).parent / "golden" / "history"
REAL = ("nightly-1", "nightly-2", "nightly-3")
AMD = "AMD EPYC x2"
HOSTED = "Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz"
START = datetime(2026, 11, 1, 3, 17, tzinfo=timezone.utc)
Edit = Callable[[dict], None]


def run_dir(path: Path, golden: str, started: datetime, edit: Edit | None = None, cpu: str | None = None) -> Path:
    """A run directory of the nightly scenario from a real recorded run, started at `started` (and on
    another CPU), each row edited; its report is a stub page naming the run."""
    path.mkdir(parents=True)
    env = json.loads((GOLDEN / golden / "environment.json").read_text())
    env.update(started_at=started.isoformat(timespec="seconds"), **({"cpu": cpu, "logical_cores": 4} if cpu else {}))
    for row in store.read_rows(GOLDEN / golden / store.RESULTS_FILE):
        row["environment"].update(started_at=env["started_at"], cpu=env["cpu"], logical_cores=env["logical_cores"])
        if edit:
            edit(row)
        store.append_row(path / store.RESULTS_FILE, row)
    (path / "environment.json").write_text(json.dumps(env))
    (path / "index.html").write_text(f"<!DOCTYPE html><title>{path.name}</title><h1>report of {path.name}</h1>")
    return path


def measured_range(metric: str) -> dict[str, tuple[float, float]]:
    """Per configuration, the lowest and highest value of a metric over the 3 real runs."""
    values: dict[str, list[float]] = {}
    for golden in REAL:
        for row in store.read_rows(GOLDEN / golden / store.RESULTS_FILE):
            values.setdefault(row["run_id"], []).append(row["metrics"][metric])
    return {run_id: (min(v), max(v)) for run_id, v in values.items()}


def within_noise(seed: int) -> Edit:
    """Peak RSS and working set drawn within the range the real runs measured; every warm timing (and
    p50, p95, RTF) scaled by one factor within +-5 %, as night-to-night drift. Transcripts unchanged:
    the decoding is deterministic, and the 3 real runs transcribed every utterance identically."""
    rng = random.Random(seed)
    ranges = {m: measured_range(m) for m in ("peak_rss_mb", "working_set_peak_mb")}

    def edit(row: dict) -> None:
        m = row["metrics"]
        for metric, by_id in ranges.items():
            m[metric] = round(rng.uniform(*by_id[row["run_id"]]), 1)
        factor = rng.uniform(0.95, 1.05)
        for sample in row["samples"]:
            sample["latency_s"] = [round(t * factor, 4) for t in sample["latency_s"]]
        for metric in ("latency_p50_s", "latency_p95_s", "rtf"):
            m[metric] = round(m[metric] * factor, 4)
    return edit


def more_peak_rss(row: dict) -> None:
    row["metrics"]["peak_rss_mb"] = round(row["metrics"]["peak_rss_mb"] * 1.30, 1)


def more_wer(row: dict) -> None:
    """WER +3 points per language: words of the transcripts replaced, one per utterance, until 2 more
    words of the 67-69 are wrong; the samples' and the language's WER and CER scored again."""
    for lang, figures in row["metrics"]["languages"].items():
        samples = [s for s in row["samples"] if s["lang"] == lang]
        for sample in samples:
            if scoring.error_rates([s["reference"] for s in samples], [s["hypothesis"] for s in samples], lang)["wer"] \
                    >= figures["wer"] + 0.028:
                break
            words = sample["hypothesis"].split()
            words[0] = "zzyzx"
            sample["hypothesis"] = " ".join(words)
            sample["wer"] = scoring.sample_wer(sample["reference"], sample["hypothesis"], lang)
        rates = scoring.error_rates([s["reference"] for s in samples], [s["hypothesis"] for s in samples], lang)
        figures.update(wer=rates["wer"], cer=rates["cer"])


def both(*edits: Edit) -> Edit:
    def edit(row: dict) -> None:
        for e in edits:
            e(row)
    return edit


NIGHTS: list[tuple[str, str, Edit | None]] = [
    *(("real", golden, None) for golden in REAL),
    *(("within noise", REAL[i % 3], within_noise(i)) for i in range(7)),
    ("peak RSS +30 %", "nightly-1", both(within_noise(7), more_peak_rss)),
    ("WER +3 points", "nightly-2", both(within_noise(8), more_wer)),
]


def worse(report: dict) -> dict[str, set[str]]:
    return {c["run_id"].split("-")[2]: {k for k, m in c["metrics"].items() if m["verdict"] == "worse"}
            for c in report["configs"] if c["regression"]}


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, dict]]]:
    """Every night as the nightly session does it: judge the run against the store, add it, and in the
    end rebuild the trend index over the whole store. Also 2 nights of a hosted runner's machine class."""
    base = tmp_path_factory.mktemp("nightly")
    site = base / "site"
    policy = compare.load_policy(None)
    nights = [(label, START + day * timedelta(days=1), golden, edit, None) for day, (label, golden, edit) in enumerate(NIGHTS)]
    nights += [(f"hosted runner {k + 1}", START + (5 + k) * timedelta(days=1, hours=1), "nightly-1", within_noise(20 + k), HOSTED)
               for k in range(2)]
    judged = []
    for label, started, golden, edit, cpu in nights:
        run = run_dir(base / f"nightly-{started:%m%d-%H}", golden, started, edit, cpu)
        report = history_baseline.compare(site, run, policy, window=7)
        compare.write_outputs(report, run)
        history.add(run, site)
        judged.append((label, report))
    write_index(site)
    return site, judged


def test_the_gate_flags_exactly_the_two_regressions_and_says_no_history(nightly) -> None:
    _, judged = nightly
    for label, report in judged:  # the closing note's table (pytest -s shows it)
        print(f"{label:18} {'REGRESSION' if report['regression'] else 'pass':10} {report.get('note') or worse(report) or ''}")
    notes = [report.get("note") for _, report in judged]
    assert notes[:3] == [f"no history for machine class {AMD}: {n} runs" for n in range(3)]
    assert notes[-2:] == [f"no history for machine class {HOSTED} x4: {n} runs" for n in range(2)]
    assert all(note is None for note in notes[3:-2])
    assert [label for label, report in judged if report["regression"]] == ["peak RSS +30 %", "WER +3 points"]
    by_label = dict(judged)
    assert worse(by_label["peak RSS +30 %"]) == {"tiny.en": {"peak_rss_mb"}, "base": {"peak_rss_mb"}}
    assert worse(by_label["WER +3 points"]) == {"tiny.en": {"wer.en"}, "base": {"wer.en", "wer.pt"}}
    base = next(c for c in by_label["WER +3 points"]["configs"] if "base" in c["run_id"])["metrics"]
    assert base["wer.en"]["detail"].startswith("+3.0 points over the median of 7 runs (spread 0.0 points; judged past 1.0)")
    assert base["wer.pt"]["detail"].startswith("+2.9 points over the median of 7 runs") and "paired with" in base["wer.pt"]["detail"]
    # The real runs were taken under 72-79 % foreign CPU load: their timings are not evidence.
    latency = next(c for c in by_label["within noise"]["configs"])["metrics"]["latency"]
    assert latency["verdict"] == "insufficient evidence" and "foreign CPU load" in latency["detail"]
    assert len(by_label["WER +3 points"]["window"]) == 7
    assert {m["verdict"] for c in by_label["within noise"]["configs"] for k, m in c["metrics"].items()
            if k.startswith("wer")} == {"within noise"}  # the same transcripts as every night before


def test_the_store_holds_every_night_and_lists_it(nightly, capsys) -> None:
    site, judged = nightly
    assert main(["history", "list", "--store", str(site)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(judged) == 14
    assert sum(AMD in line for line in lines) == 12 and sum(HOSTED in line for line in lines) == 2
    assert lines[0].startswith("2026-11-01T03:17:00+00:00") and "runs/amd-epyc-x2/20261101-031700-" in lines[0]


def test_the_trend_index_marks_the_flagged_points_and_shades_the_window(nightly) -> None:
    site, _ = nightly
    runs, columns = _collect(site)
    charts = {key: c for metric, lang, key in columns if (c := chart(runs, metric, lang, key))}
    assert set(charts) == {"peak_rss_mb", "working_set_peak_mb", "latency_p95_s", "rtf", "wer_en", "wer_pt"}
    flagged = {key: sum(m["flagged"] for s in c["series"] for m in s["marks"]) for key, c in charts.items()}
    assert flagged == {"peak_rss_mb": 2, "working_set_peak_mb": 0, "latency_p95_s": 0, "rtf": 0, "wer_en": 2, "wer_pt": 1}
    rss = charts["peak_rss_mb"]
    assert [s["label"] for s in rss["series"]] == [f"{AMD} · nightly: base int8 t2 pin=auto", f"{AMD} · nightly: tiny.en int8 t2 pin=auto",
                                                   f"{HOSTED} x4 · nightly: base int8 t2 pin=auto",
                                                   f"{HOSTED} x4 · nightly: tiny.en int8 t2 pin=auto"]
    assert [len(s["marks"]) for s in rss["series"]] == [12, 12, 2, 2]
    assert len(rss["bands"]) == 2  # the AMD lines: the window the newest judged run was held against
    assert all(m["href"].startswith("runs/") and m["href"].endswith("/index.html") for s in rss["series"] for m in s["marks"])


def test_the_trend_index_in_a_real_browser(nightly, browser, tmp_path: Path) -> None:  # noqa: F811
    site, _ = nightly
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto((site / "index.html").as_uri())
    charts = page.evaluate("Array.from(document.querySelectorAll('svg.trend')).map(s => [s.getAttribute('aria-label'), "
                           "s.getBoundingClientRect().width, s.querySelectorAll('polyline').length])")
    assert len(charts) == 6 and all(width == 560 and lines == (2 if "WER pt" in title else 4)  # pt: base only
                                    for title, width, lines in charts), charts
    assert page.evaluate("document.querySelectorAll('circle.flag').length") == 5
    assert page.evaluate("document.querySelectorAll('rect.band').length") == 11  # one per AMD line
    page.screenshot(path=str(tmp_path / "trend-index.png"), full_page=True)
    ringed = page.locator("svg.trend").first.locator("a:has(circle.flag)").first
    href = ringed.get_attribute("href")
    ringed.locator("circle").first.click()
    page.wait_for_url("**/index.html")
    assert page.url == (site / href).as_uri() and page.text_content("h1").startswith("report of nightly-1111")
    assert problems == []


# ---------------------------------------------------------------------------------------------
# The store


def add_cli(run: Path, site: Path, capsys) -> str:
    assert main(["history", "add", str(run), "--store", str(site)]) == 0
    return capsys.readouterr().err


def test_adding_is_idempotent_and_a_re_reported_run_replaces_its_entry(tmp_path: Path, capsys) -> None:
    run = run_dir(tmp_path / "run", "nightly-1", START)
    site = tmp_path / "site"
    assert add_cli(run, site, capsys).startswith("added: ")
    first = history.entries(site)
    assert add_cli(run, site, capsys).startswith("unchanged: ")
    assert history.entries(site) == first and len(first) == 1
    (run / "report.md").write_text("# again\n")
    assert add_cli(run, site, capsys).startswith("replaced: ")
    (entry,) = history.entries(site)
    assert entry.id == first[0].id and (entry.path / "report.md").read_text() == "# again\n"
    assert sorted(p.name for p in entry.path.parent.iterdir()) == [entry.id]  # no leftovers


def test_an_entry_keeps_rows_and_environment_not_timelines_logs_or_profiles(tmp_path: Path) -> None:
    def with_timeline(row: dict) -> None:
        row["timeline"] = {"t_s": [0.0, 0.1], "rss_mb": [10.0, 20.0], "phases": {}}
    run = run_dir(tmp_path / "run", "nightly-1", START, with_timeline)
    profiled = {**store.read_rows(run)[0], "run_id": "x-memray", "profiler": "memray",
                "profile_of": store.read_rows(run)[0]["run_id"]}
    store.append_row(run / store.RESULTS_FILE, profiled)
    for folder in ("logs", "profiles/x-memray"):
        (run / folder).mkdir(parents=True)
        (run / folder / "big.bin").write_bytes(b"0" * 1000)
    entry, status = history.add(run, tmp_path / "site")
    assert status == "added" and entry.run_ids == tuple(r["run_id"] for r in store.read_rows(GOLDEN / "nightly-1"))
    assert sorted(p.name for p in entry.path.iterdir()) == ["entry.json", "environment.json", "index.html", "results.jsonl"]
    assert all("timeline" not in row for row in store.read_rows(entry.path))
    assert entry.machine_class == AMD and entry.commit == "ffe15de31e4c2043fbf862feac25496c2336cfd7"
    assert entry.path.parent.name == "amd-epyc-x2" and entry.id.startswith("20261101-031700-ffe15de-")


def test_a_crash_while_adding_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    history.add(run_dir(tmp_path / "a", "nightly-1", START), site)
    real_write = history._write

    def write(path: Path, data: bytes) -> None:
        if path.name == history.ENTRY_FILE:
            raise OSError(28, "No space left on device")
        real_write(path, data)
    monkeypatch.setattr(history, "_write", write)
    with pytest.raises(OSError):
        history.add(run_dir(tmp_path / "b", "nightly-2", START + timedelta(days=1)), site)
    assert len(history.entries(site)) == 1 and not list(site.glob("runs/*/.*"))
    # a folder a killed adder left behind (it is hidden): readers skip it, prune removes it
    leftover = site / "runs" / "amd-epyc-x2" / ".tmp-20261102-x-123"
    leftover.mkdir()
    assert len(history.entries(site)) == 1
    history.prune(site, keep=5)
    assert not leftover.exists()


def test_corrupt_and_foreign_entries_are_named_and_skipped(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site"
    for day in range(3):
        history.add(run_dir(tmp_path / f"r{day}", REAL[day], START + timedelta(days=day)), site)
    first, second, third = history.entries(site)
    (first.path / store.RESULTS_FILE).write_text("{}\n")  # changed after it was added
    (second.path / history.ENTRY_FILE).write_text("{not json")
    foreign = site / "runs" / "assets" / "logo"
    foreign.mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")  # the site's own files are not entries
    assert main(["history", "list", "--store", str(site)]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and third.id in out
    err = " ".join(err.split())
    assert f"warning: {first.path}: not a history entry, skipped: {first.path}/results.jsonl: missing or changed" in err
    assert f"warning: {second.path}: not a history entry, skipped: {second.path}/entry.json:1:2: not valid JSON" in err
    assert f"warning: {foreign}: not a history entry, skipped: {foreign}/entry.json: cannot read" in err


def test_prune_keeps_the_newest(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site"
    for day in range(4):
        history.add(run_dir(tmp_path / f"r{day}", REAL[day % 3], START + timedelta(days=day)), site)
    assert main(["history", "prune", "--store", str(site), "--keep", "2"]) == 0
    assert "removed 2 entries; kept the newest 2" in capsys.readouterr().err
    assert [e.started_at[:10] for e in history.entries(site)] == ["2026-11-03", "2026-11-04"]
    assert main(["history", "prune", "--store", str(site), "--keep", "0"]) == 2


# ---------------------------------------------------------------------------------------------
# compare history:DIR and its policy


@pytest.mark.parametrize(("policy", "status"), [(None, 0), ({"history": {"no_history_is_regression": True}}, 1)])
def test_too_little_history_passes_or_fails_by_policy(tmp_path: Path, capsys, policy: dict | None, status: int) -> None:
    site = tmp_path / "site"
    for day in range(2):
        history.add(run_dir(tmp_path / f"r{day}", REAL[day], START + timedelta(days=day)), site)
    current = run_dir(tmp_path / "current", "nightly-3", START + timedelta(days=2))
    args = ["compare", f"history:{site}", str(current)]
    if policy:
        (tmp_path / "policy.yaml").write_text(json.dumps(policy))
        args += ["--policy", str(tmp_path / "policy.yaml")]
    assert main(args) == status
    out = capsys.readouterr().out
    assert f"no history for machine class {AMD}: 2 runs" in out
    assert f"> no history for machine class {AMD}: 2 runs" in (current / "compare.md").read_text()


def test_the_window_takes_the_last_runs_of_the_machine_class_before_the_current_one(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site"
    for day in range(6):
        history.add(run_dir(tmp_path / f"r{day}", REAL[day % 3], START + timedelta(days=day), within_noise(day)), site)
    history.add(run_dir(tmp_path / "other", "nightly-1", START + timedelta(days=6), cpu=HOSTED), site)
    current = run_dir(tmp_path / "current", "nightly-1", START + timedelta(days=7))
    history.add(current, site)  # already in the store: not its own baseline
    assert main(["compare", f"history:{site}", str(current), "--window", "4"]) == 0
    report = json.loads((current / "compare.json").read_text())
    assert [w["started_at"][:10] for w in report["window"]] == ["2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"]
    assert report["baseline"] == f"history:{site}: the last 4 runs of {AMD}"
    rss = next(iter(report["configs"]))["metrics"]["peak_rss_mb"]
    assert rss["verdict"] == "within noise" and "over the median of 4 runs" in rss["detail"]
    assert main(["compare", f"history:{site}", str(current), "--window", "2"]) == 2
    assert "--window: invalid value 2; expected an integer >= 3" in capsys.readouterr().err


def test_a_committed_baseline_still_works(tmp_path: Path) -> None:
    baseline = run_dir(tmp_path / "baseline", "nightly-1", START)
    current = run_dir(tmp_path / "current", "nightly-1", START + timedelta(days=1), more_peak_rss)
    baselines.save(baseline, "nightly", tmp_path / "baselines")
    report = compare.compare(baselines.resolve("baseline:nightly", current, tmp_path / "baselines"), current,
                             compare.load_policy(None))
    assert report["regression"] and worse(report) == {"tiny.en": {"peak_rss_mb"}, "base": {"peak_rss_mb"}}
