"""Command line: `harness run`, `fit`, `profile`, `report`, `compare`, `baseline save`, `history add|list|prune`,
`models list|convert`,
`datasets build-default|import|fetch`.

Exit status: 0 success, 1 a failure to act on (e.g. the disk is full), 2 bad input (a clear message,
no traceback), 130 / 143 / 129 interrupted by SIGINT / SIGTERM / SIGHUP (finished rows are kept;
`--resume DIR` runs the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import shlex
import signal
import sys
import warnings
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from harness.analyze.deploy import DEFAULT_HEADROOM, MAX_HEADROOM
from harness.catalog import PROFILERS
from harness.errors import HarnessError, UserError, did_you_mean

if TYPE_CHECKING:
    from harness.data.datasets import Sample
    from harness.plan.scenario import RunSpec, Scenario

STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (the terminal or ssh session is gone), raised like Ctrl-C's KeyboardInterrupt,
    which `except Exception` does not swallow: every child is killed and reaped and every temp file
    removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def _signal_of(exc: BaseException | None) -> int | None:
    """The signal that ended a command: Ctrl-C, a Terminated, or one behind an error raised while
    unwinding from it (e.g. EIO from writing to a terminal that hung up)."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return getattr(exc, "signum", signal.SIGINT)
        exc = exc.__context__
    return None


def _ignore_stop_signals() -> None:
    """Once a command is stopping, a second Ctrl-C or SIGTERM must not cut its clean-up short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _stopping(console: Console, signum: int, message: str) -> int:
    """The end of every interrupted command (a terminal that is gone does not turn the message into a
    traceback); returns the exit status, 128 + the signal's number."""
    _ignore_stop_signals()
    with contextlib.suppress(OSError):
        console.print(f"[yellow]interrupted[/] by {signal.Signals(signum).name}: {message}", soft_wrap=True)
    return 128 + signum


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="measure every configuration of a scenario")
    run.add_argument("scenario", type=Path, help="scenario YAML (e.g. scenarios/default.yaml)")
    run.add_argument("--dataset", action="append", default=[], metavar="MANIFEST",
                     help="use this manifest (.jsonl) instead of the scenario's datasets; repeatable")
    run.add_argument("--lang", metavar="LANG",
                     help="Whisper language code (en, pt; pt-BR reads as pt) of the lines of the datasets that name "
                          "none, such as NeMo manifests and audiofolder metadata without a lang column")
    run.add_argument("--out", type=Path, help="run directory (default: reports/<scenario>-<timestamp>)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="finish an interrupted run directory")
    run.add_argument("--quick", action="store_true", help="short version: 1 repetition, 2 samples per language")
    run.add_argument("--dry-run", action="store_true",
                     help="measure nothing: check the scenario, budgets and datasets, list the configurations and "
                          "estimate the run time (scaled by earlier runs of this machine class in the reports folder)")
    run.add_argument("--max-audio-s", type=_max_audio_s, metavar="S",
                     help="the longest request the service accepts (overrides the scenario's max_audio_s): every "
                          "configuration also transcribes a probe recording of S seconds per language")
    run.add_argument("--search", action="store_true",
                     help="budget-aware search: likely winners first, stop runs that break the memory or "
                          "latency budget, skip configurations that cannot win")
    run.add_argument("--profile", action="append", default=[], choices=PROFILERS,
                     help="after measuring, run every configuration once more under this profiler; repeatable")
    run.add_argument("--fit", action="store_true",
                     help="after measuring, find the smallest kernel-enforced memory limit of every ok configuration "
                          "(as `harness fit`; needs root or a delegated cgroup v2 subtree)")
    _executor_arguments(run)
    _report_options(run)

    fit = sub.add_parser("fit", help="find by bisection the smallest kernel-enforced memory limit at which each ok "
                                     "configuration completes without an OOM kill and within 10 %% of its latency")
    fit.add_argument("scenario", type=Path, help="the scenario the configurations belong to")
    fit.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                     help="fit this configuration (harness run --dry-run lists them); repeatable; default: every ok one")
    fit.add_argument("--dataset", action="append", default=[], metavar="MANIFEST",
                     help="use this manifest instead of the scenario's datasets; repeatable")
    fit.add_argument("--out", type=Path, metavar="RUN_DIR",
                     help="the run directory whose configurations to fit (default: the newest run of the scenario "
                          "that measured them; a new one, measured first, when there is none)")
    _executor_arguments(fit)
    _report_options(fit)

    prof = sub.add_parser("profile", help="run one configuration under memray or scalene (not a measurement)")
    prof.add_argument("scenario", type=Path, help="the scenario the configuration belongs to")
    prof.add_argument("--run", required=True, metavar="RUN_ID", help="the configuration's run id (harness run --dry-run lists them)")
    prof.add_argument("--with", dest="profiler", required=True, choices=PROFILERS)
    prof.add_argument("--out", type=Path, help="run directory to add the profile to (default: the newest run of "
                                               "the scenario that measured RUN_ID, else a new one)")
    prof.add_argument("--dataset", action="append", default=[], metavar="MANIFEST",
                      help="use this manifest instead of the scenario's datasets; repeatable")
    prof.add_argument("--lang", metavar="LANG",
                      help="Whisper language code (en, pt; pt-BR reads as pt) of the lines of the datasets that name "
                           "none, such as NeMo manifests and audiofolder metadata without a lang column")
    _report_options(prof)

    report = sub.add_parser("report", help="render index.html, report.md and recommendation.json")
    report.add_argument("run_dir", type=Path, nargs="?", help="a run directory (holding results.jsonl)")
    report.add_argument("--index", type=Path, metavar="REPORTS_DIR",
                        help="instead: build REPORTS_DIR/index.html listing every run directory in it")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="write the report here instead of the run directory (default: the run directory; with "
                             "--budget or --headroom, RUN_DIR/rerender-<time>/, so the run's own report stays)")
    _report_options(report)

    compare = sub.add_parser("compare", help="compare a run with a baseline; exit 1 on a regression")
    compare.add_argument("baseline", help="run directory, results file, baseline:NAME (saved for this machine class), or "
                                          "history:DIR (the last --window runs of this machine class in a history store)")
    compare.add_argument("current", type=Path, help="run directory or results file")
    compare.add_argument("--policy", type=Path, help="YAML/JSON file overriding the default thresholds")
    compare.add_argument("--out", type=Path, help="where compare.txt/.md/.json go (default: the current run directory)")
    compare.add_argument("--allow-other-machine", action="store_true",
                         help="compare even if the baseline was measured on another machine class")
    compare.add_argument("--missing-baseline-ok", action="store_true",
                         help="with baseline:NAME, warn and exit 0 when no such baseline exists for this machine class")
    compare.add_argument("--window", type=int, default=7, metavar="N",
                         help="with history:DIR: judge against the last N runs of this machine class (default 7)")

    baseline = sub.add_parser("baseline", help="baselines kept in the repository, per machine class")
    save = baseline.add_subparsers(dest="action", required=True).add_parser("save", help="save a run as a baseline")
    save.add_argument("run_dir", type=Path)
    save.add_argument("--name", required=True)
    save.add_argument("--root", type=Path, default=Path("baselines"), help="baselines folder (default: baselines/)")

    hist = sub.add_parser("history", help="the run history store: the nightly gate's baselines and trend index")
    hist_actions = hist.add_subparsers(dest="action", required=True)
    hist_add = hist_actions.add_parser("add", help="add a run directory (again: one entry)")
    hist_add.add_argument("run_dir", type=Path)
    hist_list = hist_actions.add_parser("list", help="list the entries, oldest first")
    hist_prune = hist_actions.add_parser("prune", help="keep the newest N entries")
    hist_prune.add_argument("--keep", type=int, required=True, metavar="N")
    for p in (hist_add, hist_list, hist_prune):
        p.add_argument("--store", type=Path, required=True, metavar="DIR", help="the history store (e.g. the gh-pages checkout)")

    models = sub.add_parser("models", help="Whisper models available locally")
    models_actions = models.add_subparsers(dest="action", required=True)
    models_actions.add_parser("list", help="list local models")
    convert = models_actions.add_parser(
        "convert", help="convert a CTranslate2 model (name or directory) into the weights another backend loads")
    convert.add_argument("model", help="tiny.en, base (offline packs), another cached name, or a CTranslate2 directory")
    convert.add_argument("--to", default=None, metavar="BACKEND",
                         help="the backend whose format to write (default: a .pt checkpoint in OpenAI's format)")
    convert.add_argument("--quantization", help="the quantization to write, for backends whose quantization is a file format (default: its first)")
    convert.add_argument("--out", type=Path, help="where to copy the result (default: only the harness's cache, where runs look)")

    datasets = sub.add_parser("datasets", help="speech data")
    datasets_actions = datasets.add_subparsers(dest="action", required=True)
    datasets_actions.add_parser("build-default", help="synthesize the bundled default sample set (cached)")
    imp = datasets_actions.add_parser("import", help="turn a corpus on disk into a manifest folder")
    imp.add_argument("kind", help="common-voice | fleurs | mls | librispeech | generic")
    imp.add_argument("src", type=Path, help="the corpus folder (generic: a .csv/.jsonl file or a folder of audio + .txt)")
    fetch = datasets_actions.add_parser("fetch", help="download a corpus split from the Hugging Face Hub and import it")
    fetch.add_argument("kind", help="fleurs | common-voice")
    fetch.add_argument("--subset", help="the corpus's own language name when it differs (FLEURS: pt_br)")
    fetch.add_argument("--repo", help="another Hub dataset with the same layout (e.g. a newer Common Voice)")
    for p in (imp, fetch):
        p.add_argument("--lang", required=True, help="Whisper language code of the speech (en, pt, ...)")
        p.add_argument("--split", help="part of the corpus (default: test; LibriSpeech: test-clean)")
        p.add_argument("--limit", type=int, help="import at most N clips (corpus order)")
        p.add_argument("--out", type=Path, required=True, help="the folder to write (e.g. datasets/cv-pt)")
        p.add_argument("--force", action="store_true", help="replace an existing manifest folder")
    return parser


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where configurations are measured (and fitted): local (this machine, one at a time; the "
                             "default) or ray (the nodes of a Ray cluster that offer a harness_slot; whisper-harness[ray])")
    parser.add_argument("--address", metavar="ADDR", help="with --executor ray: the cluster, ray://HEAD:10001 (Ray Client) "
                                                          "or HEAD:6379 from inside its network (default: RAY_ADDRESS, else "
                                                          "a cluster started on this machine)")
    parser.add_argument("--retry-lost-nodes", type=int, default=0, metavar="N",
                        help="with --executor ray: resubmit a configuration whose node was lost up to N times before "
                             "recording it as an error (default 0)")
    parser.add_argument("--slots-per-node", type=int, default=1, metavar="K",
                        help="with --executor ray: measure up to K configurations at once on each measuring node, each "
                             "on its share of the node's CPUs (default 1; co-running configurations distort each other, "
                             "and their rows say so)")


def _report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", action="append", default=[], metavar="NAME=VALUE",
                        help="set or override a budget, e.g. peak_rss_mb=700 or wer.pt=0.2; repeatable")
    parser.add_argument("--headroom", type=_headroom, default=DEFAULT_HEADROOM,
                        help=f"memory headroom over the measured peak in the deployment snippet (default {DEFAULT_HEADROOM})")


def _max_audio_s(text: str) -> float:
    from harness.plan.scenario import MAX_AUDIO_S_LIMIT

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_AUDIO_S_LIMIT:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected seconds of audio, a finite number > 0 "
                                         f"and at most {MAX_AUDIO_S_LIMIT} (4 hours)")
    return value


def _headroom(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_HEADROOM:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected a finite number from 0 to {MAX_HEADROOM:g} "
                                         "(0.15 = 15 % over the measured peak)")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A CI log is not a terminal: give lines room instead of rich's 80-column default.
    width = None if sys.stderr.isatty() else 200
    console = Console(stderr=True, highlight=False, width=width)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:  # under nohup a hangup stays ignored
            signal.signal(sig, _on_signal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *a, **k: console.print(f"[yellow]warning:[/] {escape(str(msg))}")
            if args.command == "run":
                return cmd_run(args, console)
            if args.command == "profile":
                return cmd_profile(args, console)
            if args.command == "fit":
                return cmd_fit(args, console)
            if args.command == "report":
                return cmd_report(args, console)
            if args.command == "compare":
                return cmd_compare(args, console)
            if args.command == "baseline":
                return cmd_baseline(args, console)
            if args.command == "history":
                return cmd_history(args, console)
            if args.command == "models":
                return cmd_models(args, console)
            return cmd_datasets(args, console)
    except BaseException as exc:  # sorted out below; anything else keeps its traceback
        if (signum := _signal_of(exc)) is not None:
            command = shlex.join(["harness", *(sys.argv[1:] if argv is None else argv)])
            return _stopping(console, signum, f"`{command}` did not finish; run it again")
        if isinstance(exc, HarnessError):
            console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)  # a message may hold [brackets]
            return exc.exit_code
        if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRORS:
            raise
        console.print(f"[red]error:[/] cannot write {exc.filename or 'the output'}: {exc.strerror}; "
                      "results saved so far are intact (resume with --resume DIR)", soft_wrap=True)
        return 1


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.analyze.recommend import parse_budget_overrides
    from harness.console import SweepDisplay, results_table
    from harness.measure import sweep
    from harness.plan.scenario import load_scenario
    from harness.weights import models

    scenario = load_scenario(args.scenario)
    if args.quick:
        scenario = scenario.quick()
    if args.max_audio_s is not None:
        scenario = dataclasses.replace(scenario, max_audio_s=args.max_audio_s)
    specs = scenario.expand()
    if args.resume and args.out:
        raise UserError("--resume DIR already names the run directory; drop --out")
    budgets = parse_budget_overrides(args.budget, scenario.budgets)  # a bad --budget fails before measuring
    _check_saveable(args.scenario, specs, budgets)
    if args.fit or scenario.fit:
        from harness.measure import fit

        # before measuring, not after (a Ray node without a cgroup says so in its fit's row)
        if (problem := fit.requirement_error() if args.executor == "local" else None) is not None:
            if args.fit:
                raise problem
            console.print(f"warning: {args.scenario}: field 'fit': {problem}; measuring without the fit")
        args.fit = problem is None
    executor_options = _executor_options(args)
    if args.dry_run:
        from harness.plan import dry_run

        return dry_run.report(scenario, specs, _load_samples(args, scenario, console, probes=False),
                              (args.resume or args.out or sweep.default_run_dir(scenario)).parent, console)
    models.cache_dir()  # an unusable cache fails here, before a run directory is made
    samples = _load_samples(args, scenario, console)
    run_dir = args.resume or args.out or sweep.default_run_dir(scenario)
    console.print(f"{scenario.name}: {len(specs)} configurations x {sum(not s.probe for s in samples)} samples -> {run_dir}")
    try:
        with _display(args, console, executor_options, SweepDisplay) as display:
            rows = sweep.run_scenario(scenario, samples, run_dir, resume=bool(args.resume), budgets=budgets,
                                      search_mode=args.search, profilers=tuple(dict.fromkeys(args.profile)),
                                      executor=args.executor, executor_options=executor_options, on_progress=display)
        Console(width=None if sys.stdout.isatty() else 200).print(results_table(rows, f"{scenario.name}: {run_dir}"))
        console.print(f"results: {run_dir}/results.jsonl, {run_dir}/summary.csv")
        if args.fit:
            _fit(scenario, samples, run_dir, None, False, console, args, executor_options)
        if args.search:
            s = sweep.search_summary(rows)
            console.print(f"search: measured {s['measured']} of {s['configurations']} configurations "
                          f"({s['stopped_early']} stopped early at a budget), skipped {s['skipped']}; "
                          f"{s['run_seconds']:.0f} run-seconds")
        _render_report(run_dir, args, console)
    except BaseException as exc:  # an interruption in any phase; anything else goes on to main()
        if (signum := _signal_of(exc)) is None:
            raise
        return _interrupted_run(args, run_dir, signum, console)
    return 0


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor's options from the flags of `harness run` or `fit`; refuses what the chosen executor cannot do."""
    if args.executor != "ray":
        given = [flag for flag, value, default in (("--address", args.address, None), ("--retry-lost-nodes", args.retry_lost_nodes, 0),
                                                   ("--slots-per-node", args.slots_per_node, 1)) if value != default]
        if given:
            raise UserError(f"{given[0]} is an option of --executor ray")
        return {}
    if args.retry_lost_nodes < 0:
        raise UserError(f"--retry-lost-nodes: invalid value {args.retry_lost_nodes}; expected an integer >= 0")
    if args.slots_per_node < 1:
        raise UserError(f"--slots-per-node: invalid value {args.slots_per_node}; expected an integer >= 1")
    from harness.measure.executors.ray_cluster import import_ray

    import_ray()  # not installed: the install hint, before a run directory is made
    return {"address": args.address, "retry_lost_nodes": args.retry_lost_nodes, "slots_per_node": args.slots_per_node}


def _display(args: argparse.Namespace, console: Console, executor_options: dict[str, Any], local: Any) -> Any:
    """The live display of a sweep or of fits: `local(console)` on this machine; on a Ray cluster, its nodes
    and tasks (the executor reports to it: `on_status` joins `executor_options`)."""
    if args.executor != "ray":
        return local(console)
    from harness.measure.executors.ray_display import RayDisplay

    display = RayDisplay(console)
    executor_options["on_status"] = display.nodes
    return display


def _check_saveable(scenario_path: Path, specs: list[RunSpec], budgets: dict[str, Any]) -> None:
    """Refuse before measuring what results.jsonl cannot hold (NaN, infinity, a non-JSON value):
    every measured row would fail to save."""
    for what, data in [*((f"configuration {s.run_id}", s.to_json()) for s in specs),
                       ("budgets (scenario and --budget)", budgets)]:
        for key, value in data.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise UserError(f"{scenario_path}: {what}: field '{key}': invalid value {value!r}; results are "
                                "saved as JSON, which holds only finite numbers, text, true/false and null") from None


def _interrupted_run(args: argparse.Namespace, run_dir: Path, signum: int, console: Console) -> int:
    """Write summary.csv from the rows saved so far and say how to finish the run."""
    from harness import store

    _ignore_stop_signals()
    saved = run_dir / store.RESULTS_FILE
    if not saved.is_file():
        return _stopping(console, signum, "no configuration had finished; run the command again")
    try:
        store.write_summary(store.read_rows(saved), run_dir / store.SUMMARY_FILE)
        summary = f" (summary in {run_dir / store.SUMMARY_FILE})"
    except (HarnessError, OSError) as exc:
        summary = f" (no summary.csv: {exc})"
    return _stopping(console, signum, f"finished configurations are saved in {saved}{summary}; run "
                                      f"`harness run {args.scenario} --resume {run_dir}` to measure the rest "
                                      "and render the report")


def _load_samples(args: argparse.Namespace, scenario: Scenario, console: Console, probes: bool = True) -> list[Sample]:
    """The scenario's samples (or --dataset's), and with `probes` its max_audio_s probe per language."""
    from harness.data import datasets, probe

    notes: list[str] = []
    lang = getattr(args, "lang", None)  # `harness fit` has no --lang
    if args.dataset:
        loaded = datasets.load_datasets(args.dataset, origin="--dataset", lang=lang, notes=notes)
    else:
        loaded = datasets.load_datasets(scenario.datasets, scenario.path.parent, f"{args.scenario}: field 'datasets'",
                                        lang=lang, notes=notes)
    for note in notes:
        console.print(f"note: {note}")
    samples = datasets.select(loaded, scenario.languages, scenario.max_samples_per_language)
    if not samples:
        raise UserError(f"{args.scenario}: no samples left after the languages filter {list(scenario.languages or [])}")
    if note := datasets.conversion_note(samples):
        console.print(f"note: {note}")
    if probes and scenario.max_audio_s is not None:
        samples += probe.probes(samples, scenario.max_audio_s)
        console.print(f"max_audio_s {scenario.max_audio_s:g}: a probe recording per language ("
                      + ", ".join(f"{s.lang} {s.duration_s:.0f} s" for s in samples if s.probe)
                      + ", the dataset's clips joined) is transcribed once by every configuration, outside the "
                        "latency statistics")
    return samples


def cmd_profile(args: argparse.Namespace, console: Console) -> int:
    from harness import store
    from harness.console import profile_line
    from harness.measure import sweep
    from harness.plan.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    specs = {s.run_id: s for s in scenario.expand()}
    if args.run not in specs:
        raise UserError(f"{args.scenario}: --run: no configuration {args.run!r}{did_you_mean(args.run, specs)}; "
                        f"`harness run {args.scenario} --dry-run` lists the {len(specs)} run ids")
    _check_saveable(args.scenario, [specs[args.run]], {})
    samples = _load_samples(args, scenario, console)
    run_dir = args.out
    if run_dir is None:
        measured = [d for d in sorted(Path("reports").glob(f"{scenario.name}-*"), reverse=True)
                    if (d / store.RESULTS_FILE).is_file() and any(r["run_id"] == args.run for r in store.read_rows(d))]
        run_dir = measured[0] if measured else sweep.default_run_dir(scenario)
    console.print(f"profiling {args.run} with {args.profiler} -> {run_dir}")
    try:
        with console.status(f"profiling with {args.profiler} ..."):
            row = sweep.profile_configuration(scenario, specs[args.run], samples, run_dir, args.profiler)
    except KeyboardInterrupt as exc:  # Terminated too
        return _stopping(console, _signal_of(exc), "the profiled worker was stopped; nothing was added")
    console.print(f"[profile {args.profiler}] {args.run}: {profile_line(row)}", highlight=False)
    _render_report(run_dir, args, console)
    return 0 if row["status"] == "ok" else 1


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    from harness import store
    from harness.console import SweepDisplay
    from harness.measure import fit, sweep
    from harness.plan.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    executor_options = _executor_options(args)
    if args.executor == "local" and (problem := fit.requirement_error()) is not None:  # a Ray node's fit row says it
        raise problem
    specs = {s.run_id: s for s in scenario.expand()}
    for run_id in args.run:
        if run_id not in specs:
            raise UserError(f"{args.scenario}: --run: no configuration {run_id!r}{did_you_mean(run_id, specs)}; "
                            f"`harness run {args.scenario} --dry-run` lists the {len(specs)} run ids")
    _check_saveable(args.scenario, [specs[r] for r in args.run] or list(specs.values()), {})
    samples = _load_samples(args, scenario, console)
    wanted = set(args.run or specs)
    run_dir = args.out
    if run_dir is None:
        measured = [d for d in sorted(Path("reports").glob(f"{scenario.name}-*"), reverse=True)
                    if (d / store.RESULTS_FILE).is_file()
                    and wanted <= {r["run_id"] for r in store.read_rows(d)}]
        run_dir = measured[0] if measured else sweep.default_run_dir(scenario)
    try:
        exists = (run_dir / store.RESULTS_FILE).is_file()
        if not exists or not wanted <= {r["run_id"] for r in store.read_rows(run_dir)}:
            console.print(f"measuring first (fits start from measured configurations) -> {run_dir}")
            with _display(args, console, executor_options, SweepDisplay) as display:
                sweep.run_scenario(scenario, samples, run_dir, resume=exists, executor=args.executor,
                                   executor_options=executor_options, on_progress=display)
        fitted, failed = _fit(scenario, samples, run_dir, args.run or None, True, console, args, executor_options)
        _render_report(run_dir, args, console)
    except KeyboardInterrupt as exc:  # Terminated too
        return _stopping(console, _signal_of(exc), f"fits that finished are saved in {run_dir}; run the command "
                                                   "again for the rest")
    return 0 if fitted and not failed and all(r["metrics"]["fit"]["min_limit_mb"] is not None for r in fitted) else 1


def _fit(scenario: Scenario, samples: list[Sample], run_dir: Path, run_ids: list[str] | None, refit: bool,
         console: Console, args: argparse.Namespace, executor_options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Fit the memory limits of a run directory's ok configurations on the chosen executor, with a live
    display; one line each. Returns the fitted rows and how many fits could not run."""
    from harness.measure import fit, sweep

    for run_id, why in fit.skipped_configurations(scenario, run_dir, run_ids, refit).items():
        console.print(f"not fitted: {run_id}: {why}")
    failed = []
    with _display(args, console, executor_options, lambda c: fit.FitDisplay(c, run_dir)) as display:
        def progress(p: fit.FitProgress) -> None:
            if p.row is not None and "fit" not in p.row["metrics"]:
                failed.append(p.run_id)
            display(p)

        fitted = fit.fit_run(scenario, sweep.sample_refs(samples), sweep.data_description(scenario, samples), run_dir,
                             run_ids, refit=refit, executor=args.executor, executor_options=executor_options,
                             on_progress=progress)
    for row in fitted:
        m, f = row["metrics"], row["metrics"]["fit"]
        found = (f"min_limit_mb {f['min_limit_mb']:g}" if f["min_limit_mb"] is not None
                 else f"[red]no limit found[/]: {f.get('reason', '')}")
        console.print(f"fit {row['run_id']}: {found} (peak RSS {m.get('peak_rss_mb')}, cgroup peak "
                      f"{f.get('reference_cgroup_peak_mb')}, anonymous {f.get('reference_peak_anon_mb')} MiB on the "
                      f"longest sample per language); {len(f['steps'])} runs, {f['run_seconds']:.0f} run-seconds",
                      soft_wrap=True)
    return fitted, len(failed)


def _render_report(run_dir: Path, args: argparse.Namespace, console: Console, out_dir: Path | None = None) -> None:
    from harness.report import generate

    paths = generate(run_dir, args.budget, args.headroom, out_dir)
    rec = json.loads(paths["recommendation"].read_text())
    console.print(f"[bold]{escape(rec['answer'])}[/]", soft_wrap=True)
    if rec["tie"]:
        console.print(f"tie: {escape(rec['tie']['text'])}", soft_wrap=True)
    for warning in (rec["deployment"] or {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] deployment snippet: {escape(warning)}", soft_wrap=True)
    console.print(f"report: {paths['html']} (also {paths['markdown'].name}, {paths['recommendation'].name})")


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    if args.index is not None:
        from harness.report.trend import write_index

        path = write_index(args.index)
        console.print(f"trend index: {path}")
        return 0
    if args.run_dir is None:
        raise UserError("harness report: give a run directory, or --index REPORTS_DIR")
    out = args.out
    if out is None and (args.budget or args.headroom != DEFAULT_HEADROOM):  # keep the run's own report
        from datetime import datetime

        out = args.run_dir / f"rerender-{datetime.now():%Y%m%d-%H%M%S}"
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    _render_report(args.run_dir, args, console, out)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from harness.analyze import baselines, compare, history_baseline

    policy = compare.load_policy(args.policy)
    if args.baseline.startswith(history_baseline.PREFIX):
        report = history_baseline.compare(Path(args.baseline[len(history_baseline.PREFIX):]), args.current, policy,
                                          args.window)
        return _compare_outputs(report, args, console)
    try:
        baseline = baselines.resolve(args.baseline, args.current)
    except baselines.NoBaseline as exc:
        if not args.missing_baseline_ok:
            raise
        console.print(f"[yellow]warning:[/] {exc}; nothing compared")
        return 0
    report = compare.compare(baseline, args.current, policy, args.allow_other_machine)
    return _compare_outputs(report, args, console)


def _compare_outputs(report: dict[str, Any], args: argparse.Namespace, console: Console) -> int:
    from harness.analyze import compare

    out_dir = args.out or (args.current if args.current.is_dir() else args.current.parent)
    paths = compare.write_outputs(report, out_dir)
    print(compare.to_text(report), end="")
    console.print(f"comparison: {paths['text']}, {paths['markdown'].name}, {paths['json'].name}")
    return 1 if report["regression"] else 0


def cmd_baseline(args: argparse.Namespace, console: Console) -> int:
    from harness.analyze import baselines

    path = baselines.save(args.run_dir, args.name, args.root)
    console.print(f"baseline saved: {path} (commit it so CI compares against it)")
    return 0


def cmd_history(args: argparse.Namespace, console: Console) -> int:
    from harness import history

    if args.action == "add":
        entry, status = history.add(args.run_dir, args.store)
        console.print(f"{status}: {entry.path}")
    elif args.action == "prune":
        removed = history.prune(args.store, args.keep)
        console.print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}; kept the newest {args.keep}")
    else:
        for e in history.entries(args.store):
            print(f"{e.started_at:25}  {e.commit[:10]:10}  {e.machine_class:40}  {e.scenario:12}  "
                  f"{len(e.run_ids)} configurations  {e.relative(args.store)}")
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from harness.weights import models

    if args.action == "convert":
        from harness import backends

        name = args.to or backends.CONVERT_DEFAULT
        if name not in backends.names():
            raise UserError(f"--to: invalid value {name!r}; expected one of {', '.join(backends.names())}"
                            f"{did_you_mean(name, backends.names())}")
        info = backends.info(name)
        quantization = args.quantization or info.quantizations[0]
        if quantization not in info.quantizations:
            raise UserError(f"--quantization: invalid value {quantization!r}; {name} accepts {', '.join(info.quantizations)}")
        try:
            converted = info.resolve_model(args.model, quantization).path
        except models.ModelUnavailable as exc:
            raise UserError(str(exc)) from None
        if args.out is not None:
            models.copy_weights(converted, args.out)
        print(args.out or converted)
        return 0
    found = models.list_local()
    for m in found:
        print(f"{m.name:10} {m.path}  ({m.source})")
    if not found:
        console.print("no Whisper model is available locally")
    return 0


def cmd_datasets(args: argparse.Namespace, console: Console) -> int:
    from harness.data import datasets, fetch, importers

    if args.action == "build-default":
        folder = datasets.build_default(force=True)
        for name, manifest in datasets.DEFAULT_SETS.items():
            print(f"{name}: {folder / manifest}")
        return 0
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit: invalid value {args.limit}; expected an integer >= 1")
    if args.action == "import":
        manifest = importers.import_dataset(args.kind, args.src, args.lang, args.out, args.split, args.limit, args.force)
    else:
        manifest = fetch.fetch(args.kind, args.lang, args.out, args.split or "test", args.limit, args.subset,
                               args.repo, args.force)
    samples = datasets.load_manifest(manifest)  # the same checks a run makes
    console.print(f"{len(samples)} clips, {sum(s.duration_s or 0 for s in samples) / 60:.1f} min of audio -> {manifest}")
    if note := datasets.conversion_note(samples):
        console.print(f"note: {note}")
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
