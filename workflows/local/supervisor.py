"""Keeps the local stack's servers running, as a ReplicaSet keeps a pod: a process that exits is reported
and started again, with a back-off that doubles while it keeps crashing (Kubernetes' CrashLoopBackOff),
until the supervisor is closed; closing stops every process it started, whichever are still running."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from workflows.local.processes import stop, stop_all

Process = subprocess.Popen[bytes]

BACKOFF = (1.0, 60.0)  # the first restart's delay and the longest; doubled per crash in a row
STABLE = 60.0  # a process that ran this long before exiting is restarted after the first delay again


class Supervisor:
    """Starts each part with its starter; `processes` holds what runs now for each part."""

    def __init__(
        self,
        starters: Mapping[str, Callable[[], Process]],
        report: Callable[[str], None],
        logs: Mapping[str, Path],
        interval: float = 0.5,
    ) -> None:
        self.starters = dict(starters)
        self.report = report
        self.logs = logs
        self.interval = interval
        self.processes: dict[str, Process] = {}
        self._started_at: dict[str, float] = {}
        self._delay = dict.fromkeys(self.starters, BACKOFF[0])
        self._due: dict[str, float] = {}  # parts waiting for their restart, and when it is due
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        for part in self.starters:
            self._start(part)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed.set()
        self._thread.join()
        with self._lock:
            stop_all(self.processes.values())

    def _start(self, part: str) -> None:
        self.processes[part] = self.starters[part]()
        self._started_at[part] = time.monotonic()

    def _watch(self) -> None:
        while not self._closed.wait(self.interval):
            with self._lock:
                if self._closed.is_set():
                    return
                self._check(time.monotonic())

    def _check(self, now: float) -> None:
        for part, process in self.processes.items():
            if part in self._due or process.poll() is None:
                continue
            stop(process)  # what it started goes too: a worker that outlived it would hold the port
            if now - self._started_at[part] >= STABLE:
                self._delay[part] = BACKOFF[0]
            delay = self._delay[part]
            self._due[part] = now + delay
            self._delay[part] = min(delay * 2, BACKOFF[1])
            self.report(
                f"{part} exited with code {process.returncode}; restarting it in {delay:.0f} s "
                f"(log: {self.logs[part]})"
            )
        for part, due in list(self._due.items()):
            if now >= due:
                del self._due[part]
                self._start(part)
