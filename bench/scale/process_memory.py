"""Peak resident memory of a DAG run's processes, by group, sampled every half second.

Whether memory stays flat as the batch grows is a question about each kind of process:
a driver that collects results grows with the batch, a Python worker that holds one
batch of images does not. So the processes of the ``airflow dags test`` tree (and moto's
server) are sorted into groups (:func:`classify`), each sample sums the RSS of a group's
live processes (:func:`group_rss`), and a group's figure is the peak of that sum over the
run (:class:`Peaks`). Summing matters for the Python workers: Spark starts and ends them
as tasks come and go, and what the host must hold is their sum at one moment.

RSS counts shared pages once per process: the Python workers, forked from one
``pyspark.daemon``, share some pages with it, so their sum is an upper bound. moto's
server keeps the bucket in memory; it is reported but not counted, since a real run has
S3 instead.

The classifier and the peaks are pure (tests drive them with fake records);
:class:`MemorySampler` is the thread that feeds them from psutil.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

AIRFLOW = "airflow task"
DRIVER = "spark driver"
DAEMONS = "spark daemons"
EXECUTOR = "executor JVM"
PY_WORKERS = "python workers"
OTHER = "step runner / other python"
MOTO = "moto"
GROUPS = (AIRFLOW, DRIVER, DAEMONS, EXECUTOR, PY_WORKERS, OTHER, MOTO)
NOT_COUNTED = frozenset({MOTO})  # S3's stand-in: a real run has no such process
INTERVAL = 0.5  # seconds between two samples
LAUNCHER = "org.apache.spark.launcher.Main"


@dataclass(frozen=True)
class ProcessRecord:
    """One process at one sample: what the classifier needs, and its RSS in bytes."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    rss: int
    ppid: int = 0


def _program(proc: ProcessRecord) -> str:
    return PurePath(proc.cmdline[0]).name if proc.cmdline else proc.name


def classify(proc: ProcessRecord, *, root_pid: int, moto_pid: int | None) -> str:
    """The group of one process of the run's tree.

    The root is ``airflow dags test`` itself (it runs every task in-process). Java
    processes are Spark's: the one whose command line names ``SparkSubmit`` is a step's
    driver, ``CoarseGrainedExecutorBackend`` an executor, any other (the standalone
    Master and Worker) a daemon; but the short-lived JVM ``spark-class`` runs first to
    build each of those command lines (``org.apache.spark.launcher.Main``, whose command
    line names the class it prepares) is none of them. Python processes running
    ``pyspark.daemon`` or ``pyspark.worker`` (forked workers keep the daemon's command
    line) are the Python workers; every other process (the step runner, the jobs' Python
    drivers, a shell, the launcher JVMs) falls in the last group."""
    if proc.pid == root_pid:
        return AIRFLOW
    words = " ".join(proc.cmdline)
    if proc.pid == moto_pid or "moto_server" in words:
        return MOTO
    program = _program(proc)
    if program == "java" or proc.name == "java":
        if LAUNCHER in words:  # spark-class's helper: prints the command, exits, then exec
            return OTHER
        if "CoarseGrainedExecutorBackend" in words:
            return EXECUTOR
        if "SparkSubmit" in words:
            return DRIVER
        return DAEMONS
    if any(arg in ("pyspark.daemon", "pyspark.worker") for arg in proc.cmdline):
        return PY_WORKERS
    return OTHER


def unexeced_forks(records: Iterable[ProcessRecord]) -> set[int]:
    """JVM children not yet replaced by what they run: a JVM starts a program (Hadoop's
    local file system runs ``chmod``, Spark ``bash``) by forking, and until the child's
    ``exec`` psutil shows it with its parent's command line and RSS, the same pages.
    Counted, a driver would read twice its size for that instant. (Python workers fork
    from ``pyspark.daemon`` and stay forks: those are real, and counted.)"""
    records = list(records)
    by_pid = {proc.pid: proc for proc in records}
    return {
        proc.pid
        for proc in records
        if _program(proc) == "java"
        and (parent := by_pid.get(proc.ppid)) is not None
        and parent.cmdline == proc.cmdline
    }


def _counted(records: Iterable[ProcessRecord]) -> list[ProcessRecord]:
    records = list(records)
    forks = unexeced_forks(records)
    return [proc for proc in records if proc.pid not in forks]


def group_rss(
    records: Iterable[ProcessRecord], *, root_pid: int, moto_pid: int | None
) -> dict[str, tuple[int, int]]:
    """One sample: group -> (summed RSS in bytes, live processes)."""
    out: dict[str, tuple[int, int]] = {}
    for proc in _counted(records):
        group = classify(proc, root_pid=root_pid, moto_pid=moto_pid)
        rss, n = out.get(group, (0, 0))
        out[group] = (rss + proc.rss, n + 1)
    return out


def describe(proc: ProcessRecord) -> str:
    """A process in a few words, for the JSON: its program and what it runs (a Java main
    class, a Python module or script)."""
    args = proc.cmdline[1:]
    what = next((a for a in args if a.startswith("org.apache.spark.")), None)
    if what is not None and what.endswith("SparkSubmit"):  # which job: its script
        script = next((PurePath(a).name for a in args if a.endswith(".py")), None)
        what = f"{what} {script}" if script else what
    if what is None and "-m" in args[:-1]:
        what = "-m " + args[args.index("-m") + 1]
    if what is None:
        what = next((PurePath(a).name for a in args if a.endswith(".py") or "/bin/" in a), "")
    return f"{_program(proc)} {what}".strip()


def group_members(
    records: Iterable[ProcessRecord], *, root_pid: int, moto_pid: int | None
) -> dict[str, list[str]]:
    """group -> the processes in it, described (:func:`describe`)."""
    out: dict[str, list[str]] = {}
    for proc in _counted(records):
        out.setdefault(classify(proc, root_pid=root_pid, moto_pid=moto_pid), []).append(
            describe(proc)
        )
    return out


@dataclass
class Peaks:
    """The running peaks of a series of samples: per group, the largest summed RSS and the
    most processes seen at once; and the largest total of the counted groups."""

    rss: dict[str, int] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)  # at the group's peak
    peak_at: dict[str, float] = field(default_factory=dict)  # Unix time of the group's peak
    counted_total: int = 0
    samples: int = 0
    # (Unix time, group -> summed RSS) of every timed sample: :func:`by_task` splits it
    # by the task then running, the one ``airflow dags test`` process being every task
    series: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def add(
        self,
        sample: Mapping[str, tuple[int, int]],
        members: Mapping[str, list[str]] | None = None,
        now: float | None = None,
    ) -> None:
        for group, (rss, n) in sample.items():
            if rss > self.rss.get(group, 0):
                self.rss[group] = rss
                self.members[group] = list((members or {}).get(group, []))
                if now is not None:
                    self.peak_at[group] = now
            self.processes[group] = max(self.processes.get(group, 0), n)
        total = sum(rss for group, (rss, _) in sample.items() if group not in NOT_COUNTED)
        self.counted_total = max(self.counted_total, total)
        self.samples += 1
        if now is not None:
            self.series.append((now, {group: rss for group, (rss, _) in sample.items()}))

    def as_dict(self) -> dict:
        """Peaks in MiB, in GROUPS' order, each marked counted or not."""
        return {
            "groups": {
                group: {
                    "peak_mib": round(self.rss[group] / 2**20, 1),
                    "max_processes": self.processes[group],
                    "counted": group not in NOT_COUNTED,
                    "at_peak": self.members.get(group, []),
                    "peak_at": self.peak_at.get(group),
                }
                for group in GROUPS
                if group in self.rss
            },
            "counted_total_peak_mib": round(self.counted_total / 2**20, 1),
            "samples": self.samples,
        }


def by_task(
    series: Iterable[tuple[float, Mapping[str, int]]],
    task_of: Callable[[float], str | None],
    group: str = AIRFLOW,
) -> dict[str, dict[str, float]]:
    """task -> the group's RSS in MiB at the task's first sample and its peak during the
    task. ``airflow dags test`` runs every task in one process, so its peak holds what
    earlier tasks left; in a deployment each task is a process of its own, and the
    growth within a task (peak - start) is what that task adds."""
    out: dict[str, dict[str, float]] = {}
    for when, sample in series:
        task = task_of(when)
        if task is None or group not in sample:
            continue
        mib = round(sample[group] / 2**20, 1)
        row = out.setdefault(task, {"start_mib": mib, "peak_mib": mib})
        row["peak_mib"] = max(row["peak_mib"], mib)
    for row in out.values():
        row["growth_mib"] = round(row["peak_mib"] - row["start_mib"], 1)
    return out


def snapshot(root_pid: int, moto_pid: int | None) -> list[ProcessRecord]:
    """The root, all its descendants and moto, as they are now (gone ones skipped)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    if moto_pid is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(moto_pid))
    records = []
    for proc in procs:
        try:
            with proc.oneshot():
                records.append(
                    ProcessRecord(proc.pid, proc.name(), tuple(proc.cmdline()),
                                  proc.memory_info().rss, proc.ppid())
                )  # fmt: skip
        except psutil.Error:  # ended between the listing and the look
            continue
    return records


class MemorySampler:
    """Samples a process tree every ``interval`` seconds in a thread, from :meth:`start`
    to :meth:`stop`, which returns the :class:`Peaks`."""

    def __init__(self, root_pid: int, moto_pid: int | None, interval: float = INTERVAL):
        self.root_pid, self.moto_pid, self.interval = root_pid, moto_pid, interval
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            records = snapshot(self.root_pid, self.moto_pid)
            ids = {"root_pid": self.root_pid, "moto_pid": self.moto_pid}
            self.peaks.add(group_rss(records, **ids), group_members(records, **ids), time.time())
            self._stop.wait(self.interval)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> Peaks:
        self._stop.set()
        self._thread.join()
        return self.peaks
