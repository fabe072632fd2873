"""The Ray executor: each job is one Ray task, run on whichever cluster node has a free measuring slot.

Ray resources are logical: they schedule, they do not isolate. A node offers measuring slots as a custom
resource (`ray start --resources='{"harness_slot": 1}'`) and each task asks for one, so a node measures
one configuration at a time; the isolation is the harness's own, on that node: `harness.measure.node.run_job`
starts the same fresh worker subprocess, with its cgroup, pinning, thread settings (Ray sets
OMP_NUM_THREADS in task processes; the runner exports the configuration's own to the worker), cap and
timeout, and builds the row with that node's environment. The task asks for no logical CPU
(`num_cpus=0`), so Ray's CPU accounting never holds a measurement back, and is never retried by Ray
(`max_retries=0`): an OOM or a crash is a result.

Data travels through Ray's object store, keyed by content: the driver puts each distinct audio file's
bytes once (by the SampleRef's sha256) and a task writes the files it lacks into its node's harness
cache (`<cache>/audio/<sha256><suffix>`). Models are resolved on the node, in its own cache. A node
never needs the driver's file system.

A job may name the machine class it needs (a fit: the class that measured the configuration, since the
limit it finds is that machine's): where the cluster mixes machine classes it goes to the least busy node
of that class. Whatever a job leaves in its work directory on the node (its worker's log, a profile's
files, a fit's steps) comes back into the run directory with its row.

Live display: with `on_status`, each task tells a small actor where it started, and the driver hands a
snapshot of the nodes (host, machine class, running tasks, rows done and failed) and of the tasks still
waiting for a slot to `on_status` whenever it changes.

Several measurements per node only on request (`slots_per_node`, or a node started with more than one
harness_slot): each then takes one of the node's slots with a lock in its cache, runs on its share of
the node's CPUs, and its row warns that co-running configurations distort each other.

Faults: a node lost mid-task gives an `error` row whose reason starts with "node lost" (resubmitted up
to `retry_lost_nodes` times first); leaving the executor (the end, an error, Ctrl-C, SIGTERM) cancels
every outstanding task, first without force so that the task stops its worker and removes its cgroup
itself, then by force after a grace period. A driver killed outright ends its Ray job (Ray then kills
the job's task processes, and their workers die with them: the worker asks the kernel for that);
`harness run --resume DIR --executor ray` finishes the sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from harness.contract import Job, Status, machine_class
from harness.errors import HarnessError, UserError
from harness.measure import node, record
from harness.measure.executors.base import LOST_NODE, RowSink
from harness.measure.runner import signals_held

SLOT_RESOURCE = "harness_slot"
INSTALL_HINT = "pip install 'whisper-harness[ray]'"
CANCEL_GRACE_S = 10.0  # after a polite cancel, how long a task has to stop its worker and clean up
FORCE_WAIT_S = 10.0  # after a forced cancel, how long to wait for Ray to confirm it
WAIT_TICK_S = 1.0  # the driver wakes this often while waiting (signals, lost capacity)
NO_SLOTS_GRACE_S = 120.0  # tasks outstanding but no node offers a slot: give up after this long
JOIN_TICK_S = 0.2  # the task's main thread wakes this often to take a cancellation
LOG_LIMIT = 1 << 20  # bytes of a worker's log brought back to the driver (the end of it)
StatusSink = Callable[[dict[str, Any]], None]
CONNECT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 120.0  # a node's first task may wait for Ray to start a worker process there
CONNECT_HINT = ("Start a cluster (`ray start --head --resources='{\"harness_slot\": 1}'`, or deploy/kuberay/) and give its "
                "address with --address: ray://HEAD:10001 (Ray Client), or HEAD:6379 from inside the cluster's network")


def import_ray() -> ModuleType:
    """Ray, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


@dataclass
class _Task:
    job: Job
    attempt: int = 0  # how many times it was resubmitted after a lost node
    submitted_at: float = 0.0  # time.time() on the driver
    node_id: str | None = None  # where it runs: the node it was sent to, or the one it reported starting on
    started: bool = False


@dataclass
class _Tally:
    done: int = 0
    failed: int = 0  # of which `error` rows
    running: list[str] = field(default_factory=list)


class _Board:
    """A small actor that each task tells where it started (the driver collects it for the live display)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []

    def start(self, run_id: str, node_id: str) -> None:
        self.started.append((run_id, node_id))

    def take(self) -> list[tuple[str, str]]:
        out, self.started = self.started, []
        return out


class RayExecutor:
    """Runs jobs as Ray tasks on a cluster's measuring slots.

    `address`: the cluster (`ray://HEAD:10001` through Ray Client, `HEAD:6379` from a machine inside the
    cluster's network, `auto` for a cluster started on this machine); default RAY_ADDRESS, else `auto`.
    If this process is already connected to Ray, that connection is used (and left open).
    `slot_resource`: the custom resource nodes offer per measurement. `retry_lost_nodes`: how many times
    a job whose node was lost is resubmitted before its row is an `error`. `slots_per_node`: measurements
    per node at once (default 1; more runs each on a disjoint share of the node's CPUs, and its row warns
    that co-running configurations distort each other's timings and memory). `on_status`: a live display
    of the nodes and tasks (see the module's notes).
    """

    def __init__(self, run_dir: Path, address: str | None = None, slot_resource: str = SLOT_RESOURCE,
                 retry_lost_nodes: int = 0, slots_per_node: int = 1, cancel_grace_s: float = CANCEL_GRACE_S,
                 on_status: StatusSink | None = None) -> None:
        if retry_lost_nodes < 0:
            raise UserError(f"--retry-lost-nodes: invalid value {retry_lost_nodes}; expected an integer >= 0")
        if slots_per_node < 1:
            raise UserError(f"--slots-per-node: invalid value {slots_per_node}; expected an integer >= 1")
        self.run_dir = run_dir
        self.address = address
        self.slot_resource = slot_resource
        self.retry_lost_nodes = retry_lost_nodes
        self.slots_per_node = slots_per_node
        self.cancel_grace_s = cancel_grace_s
        self.slots = 0
        self._ray: Any = None
        self._connected_here = False
        self._remote: Any = None
        self._outstanding: dict[Any, _Task] = {}  # ObjectRef -> task
        self._probes: list[Any] = []  # ObjectRefs of the tasks asking each node for its machine
        self._audio: dict[str, Any] = {}  # sha256 -> ObjectRef of the file's bytes
        self._nodes: dict[str, dict[str, Any]] = {}  # Ray node id -> {"host", "slots", "environment"}
        self._environment: dict[str, Any] | None = None
        self._no_slots_since: float | None = None
        self.on_status = on_status
        self._board: Any = None  # the _Board actor, with on_status
        self._board_reply: Any = None  # its pending take()
        self._tally: dict[str, _Tally] = {}  # Ray node id -> rows that came back from it

    # ------------------------------------------------------------------------------------------
    # Connecting and leaving

    def __enter__(self) -> RayExecutor:
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or "auto"
            sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit: keep ours
            try:
                _check_reachable(address)  # ray.init retries an unreachable GCS for ever
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot connect to the Ray cluster at {address}: {_first_line(exc).rstrip('.')}. {CONNECT_HINT}") from None
            finally:
                if threading.current_thread() is threading.main_thread() and sigterm is not None:
                    signal.signal(signal.SIGTERM, sigterm)
            self._connected_here = True
        try:
            self._refresh_nodes()
            per_node = {n: info["slots"] for n, info in self._nodes.items() if info["alive"]}
            self.slots = sum(math.floor(s * self.slots_per_node + 1e-9) for s in per_node.values())
            if self.slots < 1:
                raise UserError(f"the Ray cluster offers no {self.slot_resource!r} resource: no node can measure. "
                                f"Start measuring nodes with `ray start --address HEAD:6379 --resources='{{\"{self.slot_resource}\": 1}}'` "
                                "(KubeRay: rayStartParams.resources, see deploy/kuberay/)")
            self._remote = ray.remote(num_cpus=0, max_retries=0)(_run_on_node)
            if self.on_status is not None:
                self._board = ray.remote(num_cpus=0, max_restarts=0)(_Board).remote()
        except BaseException:
            self._disconnect()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Cancel whatever still runs (politely first: the task kills its worker's process group, reaps it
        and removes its cgroup; by force after the grace period), then disconnect."""
        try:
            with signals_held():  # a second Ctrl-C must not cut the clean-up short
                self.cancel_all()
        finally:
            self._disconnect()

    def cancel_all(self) -> None:
        ray = self._ray
        refs = [*self._outstanding, *self._probes]
        self._outstanding.clear()
        self._probes = []
        if not refs:
            return
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=self.cancel_grace_s, fetch_local=False)
        for ref in left:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if left:
            ray.wait(left, num_returns=len(left), timeout=FORCE_WAIT_S, fetch_local=False)

    def _disconnect(self) -> None:
        self._audio.clear()
        if self._board is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(self._board)
            self._board = self._board_reply = None
        if self._connected_here and self._ray is not None:
            self._ray.shutdown()
            self._connected_here = False

    # ------------------------------------------------------------------------------------------
    # The executor interface

    def environment(self) -> dict[str, Any]:
        """A measuring node's machine (every row carries its own node's), with the cluster's nodes and their
        machine classes; a warning when they differ (rows of different machine classes are not comparable)."""
        if self._environment is not None:
            return self._environment
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_node)
        measuring = [n for n, info in self._nodes.items() if info["alive"] and info["slots"] > 0]
        refs = {n: _held(probe.options(name="harness-probe", scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote)
                for n in measuring}
        self._probes = pending = list(refs.values())  # cancelled on the way out if an interrupt comes meanwhile
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            _, pending = _held(ray.wait, pending, num_returns=len(pending), timeout=WAIT_TICK_S)
        for node_id, ref in refs.items():
            try:
                self._nodes[node_id]["environment"] = _held(ray.get, ref, timeout=WAIT_TICK_S)
            except ray.exceptions.RayError as exc:  # a node that cannot run the harness: its rows will say so
                warnings.warn(f"Ray node {self._describe(node_id)} did not report its machine: {_first_line(exc)}", stacklevel=2)
        self._probes = []
        described = [(n, info) for n, info in self._nodes.items() if info.get("environment")]
        env = dict(described[0][1]["environment"]) if described else {}
        classes = sorted({machine_class(info["environment"]) for _, info in described})
        if len(classes) > 1:
            warnings.warn(f"the Ray cluster mixes machine classes ({'; '.join(classes)}): each row records its own "
                          "node's; compare timings only between rows of one machine class", stacklevel=2)
        driver = node.node_environment()
        versions = {info["environment"].get("packages", {}).get("whisper-harness") for _, info in described}
        mine = driver.get("packages", {}).get("whisper-harness")
        if versions - {mine}:
            warnings.warn(f"Ray nodes run whisper-harness {', '.join(sorted(map(str, versions - {mine})))}, this driver "
                          f"{mine}: install the same version everywhere", stacklevel=2)
        env["ray"] = {
            "address": self.address or os.environ.get("RAY_ADDRESS") or "auto",
            "slot_resource": self.slot_resource, "slots": self.slots, "slots_per_node": self.slots_per_node,
            "driver_host": driver.get("hostname"), "machine_classes": classes,
            "nodes": [{"ray_node_id": n, "host": info["host"], "slots": info["slots"],
                       "machine_class": machine_class(info["environment"]) if info.get("environment") else None}
                      for n, info in self._nodes.items() if info["alive"] and info["slots"] > 0],
        }
        self._environment = env
        return env

    def submit(self, job: Job) -> None:
        self._submit(_Task(job))
        self._report()

    def next_row(self, save: RowSink) -> dict[str, Any]:
        ray = self._ray
        while True:
            ref = self._wait_one()
            task = self._outstanding.pop(ref)
            files: dict[str, bytes] = {}
            try:
                reply = _held(ray.get, ref)
                row, files = reply["row"], reply["files"]
            except ray.exceptions.RayTaskError as exc:  # the task itself failed (e.g. no harness on the node)
                row = self._failed_row(task, f"the Ray task failed on node {getattr(exc, 'ip', None) or '?'}: "
                                             f"{_first_line(exc.cause if getattr(exc, 'cause', None) else exc)}", None)
                files = {f"{node.LOGS_DIR}/{task.job.spec['run_id']}.log": str(exc).encode()}
            except _lost_node_errors(ray) as exc:
                node_id = _node_id_in(str(exc))
                with contextlib.suppress(Exception):  # the display shows the node lost
                    self._refresh_nodes()
                if task.attempt < self.retry_lost_nodes:
                    warnings.warn(f"{task.job.spec['run_id']}: {LOST_NODE} ({self._describe(node_id)}); resubmitted "
                                  f"({task.attempt + 1} of {self.retry_lost_nodes})", stacklevel=2)
                    task.attempt += 1
                    self._submit(task)
                    continue
                retried = f"; resubmitted {task.attempt} time(s) before" if task.attempt else ""
                row = self._failed_row(task, f"{LOST_NODE}: the Ray node {self._describe(node_id)} died or left the "
                                             f"cluster while measuring this configuration ({type(exc).__name__}){retried}", node_id)
            except ray.exceptions.RayError as exc:
                row = self._failed_row(task, f"the Ray task did not return a result: {type(exc).__name__}: "
                                             f"{_first_line(exc)}", None)
            with signals_held():  # a finished measurement is never lost to an interrupt
                for name, data in files.items():
                    path = self.run_dir / name
                    if Path(name).is_absolute() or ".." in Path(name).parts:
                        raise HarnessError(f"a Ray task returned a file outside its work directory: {name}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                save(row)
            if (node_id := row["node"].get("ray_node_id")) is not None:
                tally = self._tally.setdefault(node_id, _Tally())
                tally.done += 1
                tally.failed += row["status"] == Status.ERROR.value
            self._report()
            return row

    # ------------------------------------------------------------------------------------------

    def _submit(self, task: _Task) -> None:
        ray = self._ray
        audio = {}
        for sample in task.job.samples:
            if sample.sha256 is None:
                raise HarnessError(f"sample {sample.id}: no content hash; the Ray executor sends audio by its sha256")
            if sample.sha256 not in self._audio:
                self._audio[sample.sha256] = _held(ray.put, Path(sample.audio).read_bytes())
            audio[sample.sha256] = self._audio[sample.sha256]
        per_node = {n: info["slots"] * self.slots_per_node for n, info in self._nodes.items()}
        task.submitted_at = time.time()
        task.node_id, task.started = self._node_for(task.job), False
        placement = {}
        if task.node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(task.node_id, soft=False)
        kind = "fit " if task.job.fit else ""
        ref = _held(self._remote.options(name=f"harness {kind}{task.job.spec['run_id']}", **placement,
                                         resources={self.slot_resource: 1 / self.slots_per_node}).remote,
                    task.job.model_dump(mode="json"), audio,
                    {"per_node": per_node, "default_per_node": self.slots_per_node, "submitted_at": task.submitted_at,
                     "board": self._board})
        self._outstanding[ref] = task

    def _node_for(self, job: Job) -> str | None:
        """None: any measuring node will do (Ray picks one). A job that needs a machine class the cluster
        mixes with others goes to the least busy node of that class (a cluster without one: to any, whose
        row then says the class does not match)."""
        if job.machine_class is None:
            return None
        self.environment()  # the nodes' machine classes
        classes = {n: machine_class(info["environment"]) for n, info in self._nodes.items()
                   if info["alive"] and info["slots"] > 0 and info.get("environment")}
        matching = [n for n, c in classes.items() if c == job.machine_class]
        if not matching or len(matching) == len(classes):
            return None
        return min(matching, key=lambda n: sum(t.node_id == n for t in self._outstanding.values()))

    def _report(self) -> None:
        """Hand the nodes' and tasks' picture to the live display."""
        if self.on_status is None:
            return
        nodes = {n: _Tally(t.done, t.failed) for n, t in self._tally.items()}
        waiting = []
        for task in self._outstanding.values():
            run_id = ("fit " if task.job.fit else "") + task.job.spec["run_id"]
            if task.started and task.node_id is not None:
                nodes.setdefault(task.node_id, _Tally()).running.append(run_id)
            else:
                waiting.append(run_id)
        for node_id, info in self._nodes.items():
            if info["slots"] > 0:
                nodes.setdefault(node_id, _Tally())
        described = []
        for node_id, tally in nodes.items():
            info = self._nodes.get(node_id, {})
            env = info.get("environment")
            described.append({"ray_node_id": node_id, "host": info.get("host") or node_id[:12],
                              "machine_class": machine_class(env) if env else None, "alive": info.get("alive", False),
                              "slots": info.get("slots", 0) * self.slots_per_node, "running": tally.running,
                              "done": tally.done, "failed": tally.failed})
        self.on_status({"nodes": sorted(described, key=lambda d: str(d["host"])), "waiting": waiting})

    def _collect_starts(self) -> None:
        """Take the tasks' start reports from the board, without waiting for it."""
        ray = self._ray
        if self._board is None:
            return
        if self._board_reply is None:
            self._board_reply = _held(self._board.take.remote)
        ready, _ = _held(ray.wait, [self._board_reply], timeout=0)
        if not ready:
            return
        try:
            started = _held(ray.get, self._board_reply)
        except ray.exceptions.RayError:  # the board's node is gone: the display goes without start reports
            self._board = None
            return
        finally:
            self._board_reply = None
        by_id = {t.job.spec["run_id"]: t for t in self._outstanding.values()}
        for run_id, node_id in started:
            if (task := by_id.get(run_id)) is not None:
                task.node_id, task.started = node_id, True
        if started:
            if any(n not in self._nodes for _, n in started):
                self._refresh_nodes()
            self._report()

    def _wait_one(self) -> Any:
        """The first outstanding task to finish; gives up when no node has offered a slot for a while."""
        ray = self._ray
        while True:
            self._collect_starts()
            ready, _ = _held(ray.wait, list(self._outstanding), num_returns=1, timeout=WAIT_TICK_S)
            if ready:
                self._no_slots_since = None
                return ready[0]
            if _held(ray.cluster_resources).get(self.slot_resource, 0) > 0:
                self._no_slots_since = None
                continue
            now = time.monotonic()
            self._no_slots_since = self._no_slots_since or now
            if now - self._no_slots_since > NO_SLOTS_GRACE_S:
                raise HarnessError(f"no node of the Ray cluster has offered a {self.slot_resource!r} for "
                                   f"{NO_SLOTS_GRACE_S:.0f} s: every measuring node is gone. Rows measured so far are "
                                   "saved; add nodes and run again with --resume")

    def _refresh_nodes(self) -> None:
        for n in _held(self._ray.nodes):
            known = self._nodes.setdefault(n["NodeID"], {})
            known.update(host=n.get("NodeManagerHostname") or n.get("NodeManagerAddress"), alive=n.get("Alive", False),
                         address=n.get("NodeManagerAddress"), slots=n.get("Resources", {}).get(self.slot_resource, 0) or
                         known.get("slots", 0))

    def _describe(self, node_id: str | None) -> str:
        if node_id is None:
            return "(unknown)"
        if node_id not in self._nodes:
            with contextlib.suppress(Exception):
                self._refresh_nodes()
        host = self._nodes.get(node_id, {}).get("host")
        return f"{host} ({node_id[:12]})" if host else node_id[:12]

    def _failed_row(self, task: _Task, reason: str, node_id: str | None) -> dict[str, Any]:
        """An `error` row for a job whose node could not give one (lost, or the task itself failed)."""
        where: dict[str, Any] = {"executor": "ray"}
        env: dict[str, Any] = {}
        if node_id is not None:
            info = self._nodes.get(node_id, {})
            env = info.get("environment") or {}
            where.update(ray_node_id=node_id, host=info.get("host"),
                         machine_class=machine_class(env) if env else None)
        where["ray_timing"] = {"submitted_at": round(task.submitted_at, 3)}
        return record.not_run_row(task.job, Status.ERROR, reason, record.Provenance(env, where))


def _held(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A short Ray call with SIGINT, SIGTERM and SIGHUP held, delivered right after it. (Ray turns the
    exception a signal handler raises inside its calls into a plain KeyboardInterrupt: SIGTERM would end
    the run as if it were Ctrl-C.) Long waits are loops of short calls."""
    failure = None
    with signals_held():
        try:
            value = call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - raised below, after a held signal
            failure = exc
    if failure is not None:
        raise failure
    return value


def _check_reachable(address: str) -> None:
    """A ConnectionError, quickly, when a cluster address (host:port or auto; Ray Client, ray://, has its
    own timeout) does not accept connections."""
    if "://" in address:
        return
    from ray._private.services import canonicalize_bootstrap_address

    resolved = canonicalize_bootstrap_address(address)
    if resolved is None:
        raise ConnectionError("no Ray cluster was started on this machine (`ray start --head`) and none is named")
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"{resolved} does not answer ({exc.strerror or exc})") from None


def _lost_node_errors(ray: ModuleType) -> tuple[type[BaseException], ...]:
    """The errors that mean the task's node (or its Ray worker process) went away under it."""
    e = ray.exceptions
    return tuple(getattr(e, name) for name in ("NodeDiedError", "WorkerCrashedError", "LocalRayletDiedError",
                                               "ObjectLostError") if hasattr(e, name))


def _node_id_in(message: str) -> str | None:
    m = re.search(r"node ID: ([0-9a-f]{16,})", message, re.IGNORECASE) or re.search(r"\b([0-9a-f]{56})\b", message)
    return m.group(1) if m else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500]


# ----------------------------------------------------------------------------------------------
# The node side: what runs inside a Ray task


def _probe_node() -> dict[str, Any]:
    return node.node_environment()


def _run_on_node(job_data: dict[str, Any], audio: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """One job on the node Ray picked: place its audio in this node's cache, measure it with
    `harness.measure.node.run_job`, return the row and the worker's log.

    run_job runs in a thread of this task while the task's main thread waits: Ray cancels a running
    task by raising KeyboardInterrupt in the main thread, which a thread blocked in `waitid` for the
    worker would not see until the worker ended. Here it arrives within JOIN_TICK_S; the worker's
    process group is then killed, and run_job's own clean-up (reap, cgroup, temp folder) runs before
    the task ends.
    """
    task_started_at = time.time()
    # Ray's polite cancel arrives as a simulated SIGINT (_thread.interrupt_main), which does nothing where
    # SIGINT is ignored: in the task processes of a node started in the background by a shell, for one.
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _measure_here(job_data, audio, options, task_started_at)
    finally:
        signal.signal(signal.SIGINT, interrupt)


def _measure_here(job_data: dict[str, Any], audio: dict[str, Any], options: dict[str, Any],
                  task_started_at: float) -> dict[str, Any]:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    if options.get("board") is not None:
        with contextlib.suppress(Exception):  # only the live display depends on it
            options["board"].start.remote(job_data["spec"]["run_id"], node_id)
    env = node.node_environment()
    where = {"executor": "ray", "ray_node_id": node_id}
    job = Job.model_validate(job_data)
    per_node = int(round(options["per_node"].get(node_id, options["default_per_node"])))
    rows: list[dict[str, Any]] = []
    built_at: list[float] = []  # time.time() when the row was handed over: the worker had just ended

    def keep(row: dict[str, Any]) -> None:
        built_at.append(time.time())
        rows.append(row)

    work_dir = Path(tempfile.mkdtemp(prefix="harness-ray-"))
    files: dict[str, bytes] = {}
    try:
        try:
            job = _place_audio(job, audio)
        except Exception as exc:  # noqa: BLE001 - becomes the row
            provenance = record.Provenance(env, {**where, "host": env["hostname"], "machine_class": machine_class(env)})
            rows.append(record.not_run_row(job, Status.ERROR, f"cannot place the audio on this node: {exc}", provenance))
        else:
            with _node_slot(per_node) as slot:
                if slot is not None:
                    where["slot"] = {"index": slot[0], "of": per_node, "cpus": slot[1]}
                node.run_job(job, work_dir, keep, where, _in_thread)
        files = _work_files(work_dir)
    except Exception:  # a failure of the harness itself on this node: an error row that says where
        provenance = record.Provenance(env, {**where, "host": env["hostname"], "machine_class": machine_class(env)})
        rows = [record.not_run_row(job, Status.ERROR, f"the harness failed on this node: {traceback.format_exc().strip().splitlines()[-1]}",
                                   provenance)]
        files = {f"{node.LOGS_DIR}/{job.spec['run_id']}.log": traceback.format_exc().encode()}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    row = rows[0]
    row_built_at = built_at[0] if built_at else time.time()
    host = row["node"].get("host") or env["hostname"]
    if row["status"] in (Status.ERROR.value, Status.SKIPPED.value) and host not in row["reason"]:
        row["reason"] = f"{row['reason']} (on node {host}, Ray node {node_id[:12]})"
    if per_node > 1:
        row.setdefault("warnings", []).append(
            f"measured while up to {per_node - 1} other configuration(s) ran on the same node ({per_node} measuring slots "
            "there): co-running configurations compete for memory bandwidth, caches and the page cache and distort "
            "each other's timings and memory")
    timing = {"submitted_at": round(options["submitted_at"], 3), "task_started_at": round(task_started_at, 3)}
    ended_s = (row.get("timeline") or {}).get("ended_s")
    if ended_s is not None:  # the worker's span, which ended just before its row was built (milliseconds)
        timing.update(worker_started_at=round(row_built_at - ended_s, 3), row_built_at=round(row_built_at, 3))
    row["node"]["ray_timing"] = timing
    return {"row": row, "files": files}


def _work_files(work_dir: Path) -> dict[str, bytes]:
    """What a job left in its work directory, by path relative to it (of a log, its last LOG_LIMIT bytes)."""
    files = {}
    for path in sorted(p for p in work_dir.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            if path.parent == work_dir / node.LOGS_DIR:
                f.seek(max(0, path.stat().st_size - LOG_LIMIT))
            files[path.relative_to(work_dir).as_posix()] = f.read()
    return files


def _place_audio(job: Job, audio: dict[str, Any]) -> Job:
    """Write the job's audio files this node lacks into its cache (content-addressed) and point the job at them."""
    import ray

    from harness.weights.models import cache_dir

    folder = cache_dir() / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for sample in job.samples:
        target = folder / f"{sample.sha256}{Path(sample.audio).suffix.lower()}"
        if not target.is_file():
            data = ray.get(audio[sample.sha256])
            if hashlib.sha256(data).hexdigest() != sample.sha256:
                raise HarnessError(f"sample {sample.id}: the audio received does not match its sha256")
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        samples.append(sample.model_copy(update={"audio": str(target)}))
    return job.model_copy(update={"samples": samples})


@contextlib.contextmanager
def _node_slot(count: int) -> Iterator[tuple[int, list[int]] | None]:
    """With `count` > 1 measurements on this node at once: hold one of its `count` slot locks and run on
    that slot's share of the node's CPUs (threads made meanwhile, the worker's included, inherit it)."""
    if count <= 1:
        yield None
        return
    from harness.weights.models import cache_dir

    folder = cache_dir() / "ray-slots"
    folder.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        index = None
        for i in range(count):
            f = stack.enter_context(open(folder / f"slot-{i}.lock", "a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                index = i
                break
            except BlockingIOError:
                continue
        if index is None:  # more tasks than slots here (another executor's?): wait for the first
            f = stack.enter_context(open(folder / "slot-0.lock", "a+"))
            fcntl.flock(f, fcntl.LOCK_EX)
            index = 0
        share = cpus[index * len(cpus) // count:(index + 1) * len(cpus) // count] or [cpus[index % len(cpus)]]
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, share)
        try:
            yield index, share
        finally:
            os.sched_setaffinity(0, before)


def _in_thread(measure: Callable[[], Any]) -> Any:
    """Run `measure` (a worker's span) in a thread and return its value; on KeyboardInterrupt (Ray's polite
    cancel) kill the worker's process group until `measure` has cleaned up and returned, then re-raise.
    (An Event, not Thread.join: a join interrupted by KeyboardInterrupt marks a running thread as stopped,
    Python 3.11.)"""
    failure: list[BaseException] = []
    value: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            value.append(measure())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="harness-measure", daemon=True).start()
    try:
        while not done.wait(JOIN_TICK_S):
            pass
    except BaseException:
        while not done.is_set():
            _kill_worker_groups()
            done.wait(0.05)
        raise
    if failure:
        raise failure[0]
    return value[0]


def _kill_worker_groups() -> None:
    """SIGKILL the process group of every child of this task process that leads its own (the worker)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if os.getpgid(child.pid) == child.pid:
                os.killpg(child.pid, signal.SIGKILL)
