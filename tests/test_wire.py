"""What only raw bytes on a socket show, against a real gunicorn: chunked bodies, slow
bodies, and a write lock held while workers restart.

`requests` always frames a body correctly, so these tests write HTTP/1.1 by hand.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from conftest import query
from servers import GunicornServer

pytestmark = pytest.mark.e2e

SECRET = "Sup3r-S3cret-Pw"
CONTENT_TYPES = {
    "urlencoded": "application/x-www-form-urlencoded",
    "json": "application/json",
    "multipart": "multipart/form-data; boundary=xyz",
}


def address(server: GunicornServer) -> tuple[str, int]:
    """The server's (host, port)."""
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(server: GunicornServer, raw: bytes, timeout: float = 10) -> bytes:
    """Send `raw` on a new connection and read the answer until the server closes."""
    with socket.create_connection(address(server), timeout=timeout) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    """The status code of an HTTP/1.1 answer."""
    return int(answer.split(b" ", 2)[1])


def chunked_post(path: str, content_type: str, framed_body: bytes) -> bytes:
    """A chunked POST whose body is already framed (chunk sizes and all)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + framed_body


def chunks(body: bytes, size: int = 4096) -> bytes:
    """`body` framed as chunks of `size` bytes, with the last-chunk marker."""
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    )
    return framed + b"0\r\n\r\n"


def users_in(db: Path | str) -> list[str]:
    """Every registered email, read straight from the database."""
    return [email for (email,) in query(str(db), "SELECT email FROM users ORDER BY id")]


@pytest.mark.parametrize("content_type", list(CONTENT_TYPES))
@pytest.mark.parametrize(
    "framing",
    [
        f"&password={SECRET}\r\nabc\r\n0\r\n\r\n".encode(),  # a chunk size that is a body
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hexadecimal
        b"3\r\nabcXX0\r\n\r\n",  # no CRLF after the chunk
    ],
    ids=["body as chunk size", "chunk size zz", "bad terminator"],
)
def test_malformed_chunked_bodies_are_400_and_log_nothing_of_them(
    gunicorn_server: GunicornServer, content_type: str, framing: bytes
) -> None:
    answer = exchange(
        gunicorn_server,
        chunked_post("/users", CONTENT_TYPES[content_type], framing),
    )
    assert status_of(answer) == 400, answer
    assert b"Content-Type: application/json" in answer
    assert SECRET not in gunicorn_server.log()
    assert "[ERROR]" not in gunicorn_server.log()


def test_a_chunked_body_over_64_kib_is_413_and_stores_nothing(
    gunicorn_server: GunicornServer,
) -> None:
    body = (
        b"email=trunc%40me.com&password=Correct-Horse-Battery-Staple&pad="
        + b"a" * 65_505
    )
    answer = exchange(
        gunicorn_server,
        chunked_post("/users", CONTENT_TYPES["urlencoded"], chunks(body)),
    )
    assert status_of(answer) == 413, answer
    assert "trunc@me.com" not in users_in(gunicorn_server.db_path)


def test_a_well_formed_chunked_body_works(gunicorn_server: GunicornServer) -> None:
    body = b'{"email": "chunked@example.com", "password": "pw"}'
    answer = exchange(
        gunicorn_server,
        chunked_post("/users", CONTENT_TYPES["json"], chunks(body, size=7)),
    )
    assert status_of(answer) == 200, answer
    assert "chunked@example.com" in users_in(gunicorn_server.db_path)


def test_slow_bodies_do_not_hold_the_threads(
    start_server: Callable[..., GunicornServer],
) -> None:
    """One worker, 2 threads, and 4 clients that send 5 of 100 promised bytes and stall.

    With a body deadline of 1 s, `GET /` still answers within a few seconds, and each
    stalled client gets 408. (Without it, `GET /` waited for as long as they stayed.)
    """
    server = start_server(workers=1, threads=2, env={"AUTHSVC_BODY_TIMEOUT": "1"})
    stalled = []
    for _ in range(4):
        conn = socket.create_connection(address(server), timeout=15)
        conn.sendall(
            b"POST /users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\nemail"
        )
        stalled.append(conn)
    time.sleep(0.2)
    started = time.monotonic()
    response = requests.get(f"{server.url}/", timeout=15)
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert waited < 6, f"GET / waited {waited:.1f} s behind the stalled bodies"
    for conn in stalled:
        answer = conn.recv(65536)
        conn.close()
        assert status_of(answer) == 408, answer


@pytest.mark.sqlite_only
def test_a_held_write_lock_does_not_stop_the_server(
    start_server: Callable[..., GunicornServer], database_url: str
) -> None:
    """Workers restart (--max-requests 5) while another process holds the write lock
    for 8 s: a worker that boots must not need that lock, and the master stays up."""
    server = start_server(workers=2, threads=2, extra_args=("--max-requests", "5"))
    holder = sqlite3.connect(database_url, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    codes = []
    try:
        held_until = time.monotonic() + 8
        while time.monotonic() < held_until:
            codes.append(requests.get(f"{server.url}/", timeout=30).status_code)
            time.sleep(0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(codes) >= 20 and set(codes) == {200}
    assert server.process.poll() is None
    assert "Worker failed to boot" not in server.log()
    assert requests.post(
        f"{server.url}/users", data={"email": "after@lock.io", "password": "pw"},
        timeout=30,
    ).status_code == 200  # fmt: skip
