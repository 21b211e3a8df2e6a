"""A step's progress: lines on its stderr that start with `PROGRESS`. Argo shows them in the step's log;
the local runner relays them to its own log as they come (what `dandelion up` shows while training).
Apart from Hera, so that the runner starts without importing it."""

from __future__ import annotations

import sys

PROGRESS = "progress: "


def report_progress(message: str) -> None:
    print(f"{PROGRESS}{message}", file=sys.stderr, flush=True)
