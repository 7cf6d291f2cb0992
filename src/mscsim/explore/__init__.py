"""``mscsim explore``: a local browser app to try "what if" questions (Bokeh server; BokehJS served locally).

It binds to 127.0.0.1 unless told otherwise; every input is validated like the command line's."""

from __future__ import annotations

import os
import socket
import sys
import webbrowser
from functools import partial
from pathlib import Path

from ..errors import InputError

__all__ = ["serve", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(host: str = "127.0.0.1", port: int = 5006, scenario: str = "knee_oa_ia_5e7", *,
          open_browser: bool = True) -> None:
    """Serve the explorer at http://HOST:PORT/ until interrupted. The starting scenario is validated first (a
    bad one is an error before anything is served)."""
    os.environ["BOKEH_RESOURCES"] = "server"  # BokehJS from this server, never a CDN: the page works offline
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from ..api import load, presets
    from .app import make_document

    load(scenario)  # validated before serving
    extra = {} if scenario in presets()["name"].tolist() else {Path(scenario).stem: str(Path(scenario).resolve())}
    initial = Path(scenario).stem if extra else scenario
    if not 0 <= port <= 65535:
        raise InputError("--port", port, "a port number 0-65535 (0: a free one)")
    port = port or free_port(host)
    origins = [f"{h}:{port}" for h in {host, "127.0.0.1", "localhost"}]
    app = Application(FunctionHandler(partial(make_document, initial=initial, extra_sources=extra)))
    try:
        server = Server({"/": app}, address=host, port=port, allow_websocket_origin=origins,
                        check_unused_sessions_milliseconds=5000, unused_session_lifetime_milliseconds=60000)
    except OSError as exc:
        raise InputError("--port", port, f"a free port on {host} ({exc})") from None
    server.start()
    url = f"http://{host}:{port}/"
    print(f"mscsim explorer: {url}  (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: bound to {host}: other machines on the network can open it", file=sys.stderr, flush=True)
    if open_browser:
        server.io_loop.add_callback(lambda: webbrowser.open(url))
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        print("\nmscsim explorer stopped", file=sys.stderr)
    finally:
        server.stop()
