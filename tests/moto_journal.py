"""moto's S3 server with a journal, so that a killed server comes back with its buckets as a real store
does from its disk: `MOTO_RECORDER_FILEPATH=JOURNAL python -m tests.moto_journal PORT`.

moto keeps everything in memory; its recorder appends every request to JOURNAL before applying it (one
thread at a time here: moto's own appends interleave). Started again, this server first replays JOURNAL
into itself, in process, and only then listens: no client sees it half restored. A line the kill cut short
is the last one, a request never applied: it is dropped, as a database drops a torn log tail.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from moto.moto_api import recorder
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple
from werkzeug.test import Client


def replay(app: DomainDispatcherApplication, journal: Path, base_url: str) -> None:
    client = Client(app)
    lines = journal.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                return
            raise
        body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else entry.get("body") or b""
        url = urlsplit(entry["url"])
        headers = {
            k: v
            for k, v in entry["headers"].items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        client.open(
            url.path,
            base_url=base_url,
            query_string=url.query,
            method=entry["method"],
            headers=headers,
            data=body,
        )


def main(port: int) -> None:
    os.environ["MOTO_PORT"] = str(port)
    journal = Path(os.environ["MOTO_RECORDER_FILEPATH"])  # read by the recorder when moto is imported
    app = DomainDispatcherApplication(create_backend_app)
    if journal.exists():
        replay(app, journal, f"http://127.0.0.1:{port}")
    lock, record = threading.Lock(), recorder._record_request

    def record_alone(*args: object, **kwargs: object) -> None:
        with lock:
            record(*args, **kwargs)  # type: ignore[arg-type]

    recorder._record_request = record_alone  # type: ignore[method-assign]
    recorder.start_recording()  # after the replay: the journal holds each request once
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
