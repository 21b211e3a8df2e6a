"""`python -m web [--host H] [--port P]`: the page, as its container runs it ($HOST, $PORT, else
127.0.0.1:7860)."""

import argparse
import os

from functions.lib.config import DEFAULT_PORTS, Settings
from web.app import serve

parser = argparse.ArgumentParser(prog="python -m web", description="Dandelion's web app")
parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORTS["web"]))
args = parser.parse_args()
serve(Settings.from_env(), args.host, args.port)
