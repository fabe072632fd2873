"""The trend index over a year of nightly runs in a history store (issue: it renders 365 runs in under
5 s); run with `nox -s microbench`. Prints the figure rather than asserting a time."""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness import history, store
from harness.report.trend import write_index

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "history"


@pytest.fixture(scope="module")
def year_of_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """365 nightly runs of the 2 nightly configurations (real rows, peak RSS jittered), each with a stub
    report and the compare.json the gate wrote; the last judged against a window of 7."""
    base = tmp_path_factory.mktemp("year")
    site, rng = base / "site", random.Random(0)
    start = datetime(2026, 1, 1, 3, 17, tzinfo=timezone.utc)
    for day in range(365):
        run = base / f"n{day:03d}"
        run.mkdir()
        golden = GOLDEN / f"nightly-{1 + day % 3}"
        env = {**json.loads((golden / "environment.json").read_text()),
               "started_at": (start + timedelta(days=day)).isoformat(timespec="seconds")}
        rows = store.read_rows(golden / store.RESULTS_FILE)
        for row in rows:
            row["environment"]["started_at"] = env["started_at"]
            row["metrics"]["peak_rss_mb"] *= rng.uniform(0.97, 1.03)
        (run / store.RESULTS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
        (run / "environment.json").write_text(json.dumps(env))
        (run / "index.html").write_text("<!DOCTYPE html><title>report</title>")
        configs = [{"run_id": row["run_id"], "regression": day % 50 == 49,
                    "metrics": {"peak_rss_mb": {"verdict": "worse" if day % 50 == 49 else "within noise"}}} for row in rows]
        (run / "compare.json").write_text(json.dumps({"configs": configs, "window": []}))
        history.add(run, site)
    return site


def test_render_the_trend_index_of_365_nightly_runs(benchmark, year_of_nights: Path) -> None:
    path = benchmark.pedantic(write_index, args=(year_of_nights,), rounds=3)
    html = path.read_text()
    assert html.count('<svg class="trend"') == 6 and html.count('class="flag"') == 2 * 7
    print(f"\ntrend index of 365 runs x 2 configurations: {benchmark.stats['mean']:.2f} s (mean of 3), "
          f"{len(html) / 1e6:.1f} MB of HTML")


def test_open_the_trend_index_of_365_nightly_runs_in_chromium(benchmark, year_of_nights: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by `nox -s tests`")
    if (chromium := shutil.which("chromium")) is None:
        pytest.skip("Debian's chromium is not installed")
    path = write_index(year_of_nights)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def load() -> int:
            page.goto(path.as_uri(), wait_until="load")
            return page.evaluate("document.querySelectorAll('svg.trend circle').length")
        circles = benchmark.pedantic(load, rounds=3)
        browser.close()
    assert circles == 11 * 365 + 2 * 7  # every point of 11 lines (WER pt: base only), and the flagged ones' rings
    print(f"\nChromium loads and lays out the trend index of 365 runs: {benchmark.stats['mean']:.2f} s (mean of 3)")
