"""The server's ceiling, for tests/bench.py: the smallest WSGI app that answers like authsvc.

A plain WSGI callable with a small JSON body, whatever the request. Run under the same
gunicorn settings as authsvc, it measures what gunicorn and the machine cost by themselves,
so `authsvc ÷ hello` shows what authsvc adds.
"""

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"email": "bench-000000@example.com"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer 200 with BODY."""
    start_response("200 OK", HEADERS)
    return [BODY]
