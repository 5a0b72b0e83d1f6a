"""Live progress of a job, for ``wait_for_step``: ``<folder>/<step>.json``, rewritten every
``interval`` seconds by a daemon thread of the driver.

Spark says nothing about a running Python UDF until its task ends (Python accumulators
reach the driver with the task's result), and featurize runs one long task per core. So
the workers say it themselves: after each Arrow batch, :meth:`Tally.add` sends one UDP
datagram (a few bytes, no reply awaited, never an error) to a listener on the driver
(``spark.driver.host``, an ephemeral port). The driver's thread adds them up and writes

    {"step", "phase", "done", "total", "rate", "eta_seconds", "started_at",
     "updated_at", "changed_at", "elapsed_seconds", "average_rate", "finished"}

with :mod:`fruits_spark.io.fsio` (``s3://``, ``s3a://``, ``file://`` alike). ``rate``: items
per second over the last minute; ``changed_at``: when ``done`` or ``phase`` last moved
(the sensor's stall check); times are Unix seconds. A lost datagram only makes the
figure a little low until the final write, which counts from the job itself.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

RATE_WINDOW = 60.0  # seconds: the rate shown is the rate over the last minute
INTERVAL_DEFAULT = 15.0

_SOCKETS: dict[int, socket.socket] = {}  # one sending socket per worker process


def add_arguments(parser) -> None:
    parser.add_argument(
        "--progress", default=None, help="folder for <step>.json, the job's live progress"
    )
    parser.add_argument(
        "--progress-interval", type=float, default=INTERVAL_DEFAULT,
        help="seconds between two progress writes",
    )  # fmt: skip


class Tally:
    """What a worker holds (pickled into the UDF): where to send ``add(n)``."""

    def __init__(self, host: str | None, port: int | None):
        self.host, self.port = host, port

    def add(self, n: int) -> None:
        if not self.port:
            return
        try:
            sock = _SOCKETS.get(self.port)
            if sock is None:
                sock = _SOCKETS[self.port] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(str(int(n)).encode(), (self.host, self.port))
        except OSError:
            pass  # progress is advisory: never fail a task for it


def rate_over(
    samples: deque, now: float, done: int, window: float = RATE_WINDOW, least: float = 1.0
) -> float | None:
    """Items per second from the oldest sample in the last ``window`` seconds to now;
    ``samples`` (``(time, done)``, oldest first) is trimmed to that window. None with
    less than ``least`` seconds of history."""
    samples.append((now, done))
    while len(samples) > 2 and samples[1][0] <= now - window:
        samples.popleft()
    t0, d0 = samples[0]
    if now - t0 < least:
        return None
    return max(0, done - d0) / (now - t0)


def eta_seconds(done: int, total: int | None, rate: float | None) -> float | None:
    if total is None or not rate:
        return None
    return max(0, total - done) / rate


class Reporter:
    """The driver's side: the UDP listener (``counting=True``) and the writer thread."""

    def __init__(
        self,
        step: str,
        write: Callable[[bytes], None] | None,
        *,
        interval: float = INTERVAL_DEFAULT,
        total: int | None = None,
        phase: str = "starting",
        counting: bool = False,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        started_at: float | None = None,
    ):
        self.step, self.write_bytes, self.interval = step, write, interval
        self.total, self.phase, self.clock = total, phase, clock
        self.done = 0
        self.changed_at = clock()
        # the step's wall time counts from here: the driver's start when the job knows it
        self.started_at = min(started_at or self.changed_at, self.changed_at)
        self.samples: deque = deque()
        self.finished = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = None
        self.host = host
        if counting and write is not None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((host, 0))
            self._sock.settimeout(0.25)
        self._thread = None
        if write is not None:
            self.write()
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def tally(self) -> Tally:
        return Tally(self.host, self._sock.getsockname()[1] if self._sock else None)

    def add(self, n: int) -> None:
        with self._lock:
            if n:
                self.done += n
                self.changed_at = self.clock()

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase, self.changed_at = phase, self.clock()
        self.write()

    def record(self) -> dict:
        with self._lock:
            now = self.clock()
            done = self.done if self.total is None else min(self.done, self.total)
            # a second of history, or ten writes when they come faster (a short run)
            rate = rate_over(self.samples, now, done, least=min(1.0, 10 * self.interval))
            elapsed = now - self.started_at
            return {
                "step": self.step,
                "phase": self.phase,
                "done": done,
                "total": self.total,
                "rate": None if rate is None else round(rate, 2),
                "eta_seconds": None if self.finished else eta_seconds(done, self.total, rate),
                "started_at": self.started_at,
                "updated_at": now,
                "changed_at": self.changed_at,
                "elapsed_seconds": round(elapsed, 2),
                "average_rate": round(done / elapsed, 2) if elapsed > 0 else None,
                "finished": self.finished,
            }

    def write(self) -> None:
        if self.write_bytes is None:
            return
        with contextlib.suppress(Exception):  # advisory: a failed write never fails the job
            self.write_bytes(json.dumps(self.record()).encode())

    def _loop(self) -> None:
        next_write = time.monotonic() + self.interval
        while not self._stop.is_set():
            if self._sock is not None:
                try:
                    data, _ = self._sock.recvfrom(64)
                    self.add(int(data))
                except (TimeoutError, ValueError):
                    pass
                except OSError:
                    self._stop.wait(0.25)
            else:
                self._stop.wait(min(0.25, self.interval))
            if time.monotonic() >= next_write:
                self.write()
                next_write = time.monotonic() + self.interval

    def finish(self, done: int | None = None) -> None:
        """The last write: ``done`` (the job's own count, which no lost datagram lowers)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if done is not None:
                self.done = done
            self.phase, self.finished, self.changed_at = "done", True, self.clock()
        self.write()
        self.close()

    def stop(self) -> None:
        """End the thread without a final write (the job failed: the last report stays)."""
        self._stop.set()
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def driver_started(spark) -> float | None:
    """When the driver's JVM started (Unix seconds): a job's ``main()`` made the session,
    so this is its ``spark-submit``'s start, Spark's own start-up included."""
    try:
        runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
        return float(runtime.getStartTime()) / 1000
    except Exception:  # noqa: BLE001 -- a figure for the report, never a reason to fail
        return None


def start(spark, step: str, args, *, counting: bool = False, total: int | None = None) -> Reporter:
    """The job's reporter: writes ``<args.progress>/<step>.json``; without ``--progress``,
    one that writes nothing and counts nothing (its tally sends nothing). Its elapsed
    time counts from ``args.started_at`` when ``main()`` set it (the driver's start: the
    run summary's step seconds include Spark's start-up), else from now."""
    folder = getattr(args, "progress", None)
    if not folder:
        return Reporter(step, None)
    from fruits_spark.io import fsio

    uri = f"{folder.rstrip('/')}/{step}.json"
    host = spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = "127.0.0.1"
    return Reporter(
        step,
        lambda data: fsio.write_bytes(spark, uri, data),
        interval=float(args.progress_interval),
        total=total,
        counting=counting,
        host=address,
        started_at=getattr(args, "started_at", None),
    )
