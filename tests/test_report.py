"""Reports: the plain data the templates render, escaping, the files written, the trend index."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from html import unescape
from pathlib import Path

import pytest

from harness import store
from harness.plan.scenario import load_scenario
from harness.report import build, generate, plots
from harness.report.trend import collect, write_index

GOLDEN = Path(__file__).parent / "golden" / "recommend"
SCENARIO = """
name: golden
question: Which configuration fits a 700 MiB pod?
matrix: {model: [tiny, base, small, large-v3], quantization: [int8, float32], threads: [1, 2]}
budgets: {peak_rss_mb: 700, rtf: 0.5, latency_p95_s: 3.0, wer: {en: 0.10, pt: 0.25}}
"""
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'
RUN_IDS: dict[str, str] = {}  # golden run id (e.g. base-int8) -> the run id SCENARIO gives its configuration


def make_run_dir(path: Path, golden: str = "feasible") -> Path:
    """A run directory of SCENARIO holding a golden result set (its rows relabelled with SCENARIO's run
    ids: a reader leaves out rows that are not configurations of the run's scenario)."""
    path.mkdir(parents=True)
    (path / "scenario.yaml").write_text(SCENARIO)
    with warnings.catch_warnings():  # threads: 2 on a 1-CPU machine
        warnings.simplefilter("ignore")
        specs = {(s.model, s.quantization, s.threads): s.run_id for s in load_scenario(path / "scenario.yaml").expand()}
    for i, row in enumerate(store.read_rows(GOLDEN / f"{golden}.jsonl")):
        c = row["config"]
        RUN_IDS[row["run_id"]] = specs[(c["model"], c["quantization"], c["threads"])]
        row["run_id"] = RUN_IDS[row["run_id"]]
        if row["status"] == "ok":
            row["samples"] = [{"id": f"clip {HOSTILE}", "lang": "en", "audio_s": 4.0, "latency_s": [1.0, 1.2, 0.9],
                               "reference": HOSTILE, "hypothesis": HOSTILE, "wer": 0.0}]
            row["timeline"] = {"t_s": [0.1 * k for k in range(30)], "rss_mb": [50 + 10 * k for k in range(30)],
                               "phases": {"start": 0.0, "audio_decoded": 0.3, "loaded": 1.0, "done": 2.9}}
        row["environment"]["started_at"] = f"2026-11-2{i}T10:00:00+00:00"
        store.append_row(path / "results.jsonl", row)
    return path


def test_report_data_answers_the_question(tmp_path: Path) -> None:
    data = build.build(make_run_dir(tmp_path / "run"))
    assert data["scenario"]["question"] == "Which configuration fits a 700 MiB pod?"
    assert data["answer"].startswith("Deploy faster-whisper base int8 with 2 thread(s): peak RSS 350 MiB")
    assert data["deployment"]["memory_limit_mib"] == 403
    assert [f["title"] for f in data["figures"]] == [
        "Peak RSS vs WER (en)", "Peak RSS vs WER (pt)", "RTF vs threads", "Warm latency distributions",
        "Memory timelines"]
    verdicts = {row["run_id"]: row["verdict"] for row in data["table"]}
    assert verdicts[RUN_IDS["base-int8"]].startswith("recommended")
    assert verdicts[RUN_IDS["base-f32"]].startswith("meets every budget but needs 300.0 MiB more")
    assert data["budgets"] == {"peak_rss_mb": 700.0, "rtf": 0.5, "latency_p95_s": 3.0, "wer.en": 0.1, "wer.pt": 0.25}


def test_command_line_budgets_override_the_scenario(tmp_path: Path) -> None:
    data = build.build(make_run_dir(tmp_path / "run"), ["wer.pt=0.195"])
    assert data["recommendation"]["recommended"]["run_id"] == RUN_IDS["base-f32"]


def test_transcripts_and_file_names_are_escaped(tmp_path: Path) -> None:
    paths = generate(make_run_dir(tmp_path / "run"))
    html = paths["html"].read_text()
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("data:image/png;base64,") == 5
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens from file://
    markdown = paths["markdown"].read_text()
    assert "**Answer.** Deploy faster-whisper base int8" in markdown and "| base int8 t2 **(recommended)** |" in markdown
    rec = json.loads(paths["recommendation"].read_text())
    assert rec["recommended"]["run_id"] == RUN_IDS["base-int8"] and rec["deployment"]["memory_limit_mib"] == 403


def test_configuration_table_columns_come_from_the_metric_registry(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    rows = store.read_rows(run)
    rows[1]["metrics"]["foreign_cpu_fraction"] = 0.0714  # recorded by every new row
    (run / "results.jsonl").unlink()
    for row in rows:
        store.append_row(run / "results.jsonl", row)
    data = build.build(run)
    assert [c["label"] for c in data["table_columns"]] == [
        "peak RSS MiB", "load s", "cold s", "p50 s", "p95 s", "RTF", "foreign load", "WER en", "flagged en", "WER pt", "flagged pt"]
    assert [c["label"] for c in data["markdown_columns"]] == ["peak RSS MiB", "p50 s", "p95 s", "RTF", "WER en", "WER pt"]
    line = next(r for r in data["table"] if r["run_id"] == rows[1]["run_id"])
    assert line["cells"] == {"peak_rss_mb": "350", "load_s": "0.50", "first_latency_s": "1.68", "latency_p50_s": "1.12 (thin)",
                             "latency_p95_s": "1.40 (thin)", "rtf": "0.300 (thin)", "foreign_cpu_fraction": "7.1 %",
                             "wer_en": "5.0 %", "wer_pt": "20.0 %", "flagged_en": "-", "flagged_pt": "-"}
    assert line["foreign_cpu_fraction"] == 0.0714 and line["wer_pt"] == 0.2  # the raw values too
    paths = generate(run)
    html = paths["html"].read_text()
    assert "<th>foreign load</th><th>WER en</th>" in html and "<td>0.300 (thin)</td><td>7.1 %</td><td>5.0 %</td>" in html
    markdown = paths["markdown"].read_text()
    assert "| configuration | status | peak RSS MiB | p50 s | p95 s | RTF | WER en | WER pt | verdict |" in markdown
    assert "| base int8 t2 **(recommended)** | ok | 350 | 1.12 (thin) | 1.40 (thin) | 0.300 (thin) | 5.0 % | 20.0 % |" in markdown


def test_failed_rows_are_shown_with_their_reason(tmp_path: Path) -> None:
    data = build.build(make_run_dir(tmp_path / "run", "failed"))
    by_id = {run["run_id"]: run for run in data["runs"]}
    large = by_id[RUN_IDS["large-v3"]]
    assert large["status"] == "error" and "not available" in large["reason"]
    assert data["status_counts"] == {"error": 1, "ok": 1, "oom": 1, "timeout": 1}


def test_pareto_front() -> None:
    assert plots.pareto_front([(300, 10), (250, 12), (400, 5), (350, 11), (260, 12)]) == [(250, 12), (300, 10), (400, 5)]


def test_trend_index_lists_every_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    generate(make_run_dir(reports / "golden-1"))
    make_run_dir(reports / "golden-2", "infeasible")
    (reports / "not-a-run").mkdir()
    html = write_index(reports).read_text()
    assert 'href="golden-1/index.html"' in html and "golden-2" in html
    assert html.count('<svg class="trend"') >= 3
    # The metrics the registry shows in TREND: a chart each (per language for WER), and the table's figures.
    assert [t for t in ("peak RSS (MiB)", "p95 latency (s)", "real-time factor", "WER en (fraction)", "WER pt (fraction)")
            if f'aria-label="{t} over time"' in html] == ["peak RSS (MiB)", "p95 latency (s)", "real-time factor",
                                                   "WER en (fraction)", "WER pt (fraction)"]
    assert "configurations (peak RSS MiB / p95 s / RTF)" in html and "base int8 t2: ok 350 / 1.40 / 0.300<br>" in html
    configs = collect(reports)[0]["configs"]
    assert configs[0]["values"]["wer_en"] == 0.12 and configs[0]["cells"] == ["250", "0.90", "0.200"]


def test_a_report_of_many_runs_overlays_the_timelines_and_shows_the_fastest_latencies(tmp_path: Path) -> None:
    golden = store.read_rows(GOLDEN / "feasible.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    for i in range(40):
        row = json.loads(json.dumps(golden[i % 4]))
        row["run_id"] = f"{row['run_id']}-{i}"
        row["metrics"].update(peak_rss_mb=100.0 if i == 0 else 200.0 + i, latency_p95_s=9.0 if i == 0 else 1.0 + i / 100)
        row["samples"] = [{"id": "s", "lang": "en", "audio_s": 4.0, "latency_s": [1.0, 1.1, 0.9], "wer": 0.1,
                           "reference": "a", "hypothesis": "a"}]
        row["timeline"] = {"t_s": [0.02 * k for k in range(1000)], "rss_mb": [50 + k / 10 for k in range(1000)],
                           "phases": {"start": 0.0, "loaded": 4.0, "done": 19.0}}
        if i == 5:
            row.update(status="oom", reason="process tree RSS passed the memory cap")
            row["config"]["memory_cap_mb"] = 120
            row["timeline"]["t_s"][3] = HOSTILE  # not a number: left out of the drawings
        store.append_row(run / "results.jsonl", row)
    data = build.build(run)
    assert data["recommendation"]["recommended"]["run_id"] == "tiny-int8-0"
    assert [f["title"] for f in data["figures"]] == [
        "Peak RSS vs WER (en)", "Peak RSS vs WER (pt)", "RTF vs threads",
        "Warm latency distributions (31 of 39 configurations: the 30 with the lowest p95 and the recommended one)",
        "Memory timelines of all 40 runs, overlaid (each run's own timeline is in its details under Runs)"]
    shown, total = plots.latency_selection(store.read_rows(run), "tiny-int8-0")
    assert total == 39 and len(shown) == 31 and shown[0]["run_id"] == "tiny-int8-0"
    oom = next(r for r in data["runs"] if r["run_id"] == "base-int8-5")["memory"]
    assert oom["note"] == ("Memory timeline: 20.0 s, peak 150 MiB at 20.0 s (scale 0 to 162 MiB); orange: model load, "
                           "green: transcription, dashed red: memory cap 120 MiB")
    # At most two points per pixel column; numbers and fixed markup only (it is rendered unescaped).
    assert 300 < oom["svg"].split('points="')[1].count(",") <= 600
    assert re.fullmatch(r'(<(svg|rect|line|polyline)( [a-zA-Z0-9-]+="[a-z0-9 .,#-]+")*/?>|</svg>)+', oom["svg"])
    html = generate(run)["html"].read_text()
    assert html.count("data:image/png;base64,") == 5 and html.count('<svg class="spark"') == 40


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `nox -s tests`")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`nox -s tests` installs it as root)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def test_report_opens_in_a_real_browser_from_file(tmp_path: Path, browser) -> None:
    paths = generate(make_run_dir(tmp_path / "run"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"network request: {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(paths["html"].as_uri())
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == 5 and all(complete and width > 0 for _, complete, width in images), images
    # each ok run's memory timeline, inline in its details
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    sparks = page.evaluate("Array.from(document.querySelectorAll('svg.spark')).map(s => "
                           "[s.getBoundingClientRect().width, s.querySelector('polyline').points.numberOfItems])")
    assert len(sparks) == 4 and all(width >= 300 and points == 30 for width, points in sparks), sparks
    assert page.evaluate("document.querySelectorAll('script').length") == 0  # the hostile text stayed text
    assert HOSTILE in page.text_content("body")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert problems == []


def _rewrite(run: Path, change) -> Path:
    """Change the run directory's rows in place (`change(rows)`), as a later harness would have written them."""
    rows = store.read_rows(run)
    change(rows)
    (run / "results.jsonl").unlink()
    for row in rows:
        store.append_row(run / "results.jsonl", row)
    return run


def test_a_rerender_with_overrides_says_so_and_keeps_the_runs_own_report(tmp_path: Path) -> None:
    from conftest import run_cli

    run = make_run_dir(tmp_path / "run")
    own = generate(run)
    assert json.loads(own["recommendation"].read_text())["overrides"] is None
    before = own["html"].read_text()
    result = run_cli("report", str(run), "--budget", "wer.pt=0.195", "--headroom", "0.3")
    assert result.returncode == 0, result.stderr
    (rerender,) = run.glob("rerender-*")
    assert own["html"].read_text() == before  # never overwritten silently
    assert f"report: {rerender / 'index.html'}" in " ".join(result.stderr.split())
    rec = json.loads((rerender / "recommendation.json").read_text())
    assert rec["overrides"]["budget"] == ["wer.pt=0.195"] and rec["overrides"]["headroom"] == 0.3
    text = ("Rendered with --budget wer.pt=0.195 --headroom 0.3 (the scenario's budgets: peak_rss_mb <= 700, rtf <= 0.5, "
            "latency_p95_s <= 3, wer.en <= 0.1, wer.pt <= 0.25; default headroom 0.15)")
    assert rec["overrides"]["text"] == text and rec["recommended"]["run_id"] == RUN_IDS["base-f32"]
    assert f"> {text}." in (rerender / "report.md").read_text()
    assert f'<p class="banner">{text}.</p>' in unescape((rerender / "index.html").read_text())
    out = run_cli("report", str(run), "--out", str(tmp_path / "elsewhere"))  # no overrides, written elsewhere
    assert out.returncode == 0 and own["html"].read_text() == before
    assert json.loads((tmp_path / "elsewhere" / "recommendation.json").read_text())["overrides"] is None


def test_profile_links_follow_a_report_written_elsewhere(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    data = build.build(run, out_dir=tmp_path / "out" / "r")
    in_place = build.build(run)
    for a, b in zip(data["runs"], in_place["runs"]):
        assert a["profile"] == {k: f"../../run/{v}" for k, v in b["profile"].items()}


def test_latency_from_fewer_than_six_timings_is_marked_thin(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")  # every ok row: one sample timed 3 times
    data = build.build(run)
    line = next(r for r in data["table"] if r["run_id"] == RUN_IDS["base-int8"])
    assert line["cells"]["latency_p95_s"] == "1.40 (thin)" and line["cells"]["rtf"] == "0.300 (thin)"
    assert line["cells"]["peak_rss_mb"] == "350" and data["thin"] == 6
    markdown = render_markdown(data)
    assert "(thin): a latency or RTF from fewer than 6 warm timings" in markdown

    def more_timings(rows: list[dict]) -> None:
        for row in rows:
            for sample in row.get("samples", []):
                sample["latency_s"] *= 2
    data = build.build(_rewrite(run, more_timings))
    assert data["thin"] is None and not any("(thin)" in c for r in data["table"] for c in r["cells"].values())


def render_markdown(data: dict) -> str:
    from harness.report import render

    env = render.environment()
    env.autoescape = False
    return env.get_template("report.md.j2").render(**data)


def test_a_limit_past_the_memory_cap_is_a_warning_in_report_and_recommendation(tmp_path: Path) -> None:
    def capped(rows: list[dict]) -> None:
        for row in rows:
            row["config"]["memory_cap_mb"] = 700
    run = _rewrite(make_run_dir(tmp_path / "run"), capped)
    warning = ("peak RSS 350.0 MiB + 120% headroom = 770 MiB is above the memory cap 700 MiB the configuration was "
               "measured under: the snippet's limit is the cap, 700 MiB (100% headroom over the peak RSS)")
    paths = generate(run, headroom=1.2)
    rec = json.loads(paths["recommendation"].read_text())
    assert rec["deployment"]["warnings"] == [warning] and rec["deployment"]["memory_limit_mib"] == 700
    assert f"> **Warning (deployment snippet):** {warning}." in paths["markdown"].read_text()
    assert f"Deployment snippet: {warning}." in unescape(paths["html"].read_text())
    assert "limit 700 MiB (from the peak RSS)" in rec["answer"]


def test_a_tie_on_latency_and_a_busy_machine_are_told(tmp_path: Path) -> None:
    def tied(rows: list[dict]) -> None:
        for row in rows:
            if row["run_id"] == RUN_IDS["base-f32"]:
                row["metrics"].update(peak_rss_mb=355.0, foreign_cpu_fraction=0.31)
    data = build.build(_rewrite(make_run_dir(tmp_path / "run"), tied))
    tie = data["recommendation"]["tie"]
    assert tie["decided_by"] == "memory" and tie["run_ids"] == [RUN_IDS["base-f32"]]
    assert tie["text"].startswith("base int8 t2, base float32 t2 are indistinguishable on warm latency by the test "
                                  "`harness compare` uses (base float32 t2 against base int8 t2: foreign CPU load 31% "
                                  "while running; 3 vs 3 timings; at least 6 per side are needed)")
    markdown = render_markdown(data)
    assert f"Tie: {tie['text']}." in markdown
    assert "> Measured while the machine was busy: base float32 t2: foreign CPU load 31.0 %." in markdown
    verdicts = {row["run_id"]: row["verdict"] for row in data["table"]}
    assert verdicts[RUN_IDS["base-int8"]].startswith("recommended: meets every budget with the least memory; tie: ")
