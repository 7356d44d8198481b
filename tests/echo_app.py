"""A tiny application to protect, for the forward-auth tests: it has no login of its own
and shows whoever the proxy in front says the user is (`Remote-Email`), and keeps a
list of what it received, so a test can tell that a request never reached it."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

RECEIVED: list[dict[str, str]] = []


def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
    """The page: the path asked for and the user the proxy named."""
    seen = {
        "path": environ.get("PATH_INFO", ""),
        "remote_email": environ.get("HTTP_REMOTE_EMAIL", ""),
        "remote_user": environ.get("HTTP_REMOTE_USER", ""),
    }
    RECEIVED.append(seen)
    body = (
        "<!doctype html><title>the application</title>"
        f'<p id="who">{html.escape(seen["remote_email"] or "nobody")}</p>'
        f'<p id="path">{html.escape(seen["path"])}</p>'
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))]
    )
    return [body]


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(port: int) -> WSGIServer:
    """Serve the application on 127.0.0.1:`port` in a thread; shut it down when done."""
    server = make_server("127.0.0.1", port, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
