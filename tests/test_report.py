"""Reports: the plain data the templates render, escaping, the files written, the trend index."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from harness import store
from harness.plan.scenario import load_scenario
from harness.report import build, generate, plots
from harness.report.trend import write_index

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
    assert data["deployment"]["memory_mib"] == 403
    assert [f["title"] for f in data["figures"]] == [
        "Peak RSS vs WER (en)", "Peak RSS vs WER (pt)", "RTF vs threads", "Warm latency distributions",
        "Memory timelines (1)"]
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
    assert rec["recommended"]["run_id"] == RUN_IDS["base-int8"] and rec["deployment"]["memory_mib"] == 403


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
    assert html.count("data:image/png;base64,") >= 3


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
    assert page.evaluate("document.querySelectorAll('script').length") == 0  # the hostile text stayed text
    assert HOSTILE in page.text_content("body")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert problems == []
