"""`python -m web [--host H] [--port P]`: the page, as its container runs it ($HOST, $PORT, else
127.0.0.1:7860)."""

import argparse
import contextlib
import os
import signal

from functions.lib.config import DEFAULT_PORTS, Settings
from web.app import serve

parser = argparse.ArgumentParser(prog="python -m web", description="Dandelion's web app")
parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORTS["web"]))
args = parser.parse_args()
# SIGTERM (how Kubernetes stops a pod) as Ctrl-C, which makes Gradio close its server: in a container this
# process is PID 1, for which a signal without a handler does nothing, so the pod would wait to be killed.
signal.signal(signal.SIGTERM, signal.default_int_handler)
# Stopped while Gradio is still starting, the interrupt reaches here: nothing is serving yet to close.
with contextlib.suppress(KeyboardInterrupt):
    serve(Settings.from_env(), args.host, args.port)
