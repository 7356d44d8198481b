"""Real gunicorn servers on 127.0.0.1, started and stopped by PID: for the tests and bench.py.

No pytest in here, so the benchmark script can use it too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 20.0

# Every server started and not yet stopped (conftest attaches their logs to failures).
RUNNING: list[GunicornServer] = []
# Every log file a server of this process wrote to (conftest checks them for secrets).
LOG_PATHS: set[Path] = set()


class ServerFailed(RuntimeError):
    """gunicorn exited, or did not answer in time; the message holds its log."""


@dataclass
class GunicornServer:
    """A gunicorn process serving a WSGI app on a loopback port, and its log."""

    process: subprocess.Popen
    log_path: Path
    db_path: Path | str
    url: str = ""
    # Where this server's lines start in a log file shared with an earlier run.
    log_offset: int = 0

    def log(self) -> str:
        """Everything this server (gunicorn and the app) has written so far."""
        with open(self.log_path, "rb") as log_file:
            log_file.seek(self.log_offset)
            return log_file.read().decode(errors="replace")

    def worker_pids(self) -> list[int]:
        """The pids of the master's current workers (from /proc)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        """Graceful stop: SIGTERM to the master, then SIGKILL to the group if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in RUNNING:
            RUNNING.remove(self)

    def kill(self) -> None:
        """Crash: SIGKILL to the master and its workers (its own process group), no cleanup."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self in RUNNING:
            RUNNING.remove(self)


def start_gunicorn(
    db_path: Path | str,
    log_path: Path,
    *,
    app: str = "authsvc:app",
    workers: int = 2,
    threads: int = 4,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> GunicornServer:
    """Start gunicorn on 127.0.0.1 and wait until it answers `GET /` with 200.

    Binding port 0 lets the kernel pick a free port; the port is read back from
    gunicorn's "Listening at" line, so there is no window where another process can take
    it. The server gets its own process group, so a crash test can kill the workers too.
    AUTHSVC_* variables of the caller are not passed on: only `AUTHSVC_DB` and `env`.
    Raises ServerFailed with the log when it exits or does not answer in time.
    """
    server_env = {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AUTHSVC_")
        },
        "AUTHSVC_DB": str(db_path),
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "gunicorn",
        "--bind", "127.0.0.1:0",
        "--workers", str(workers),
        "--threads", str(threads),
        "--no-control-socket",
        "--log-level", "info",
        *extra_args,
        app,
    ]  # fmt: skip
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    LOG_PATHS.add(log_path)
    # The child keeps its own copy of the descriptor after this one closes.
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=server_env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = GunicornServer(
        process=process, log_path=log_path, db_path=db_path, log_offset=log_offset
    )
    RUNNING.append(server)
    try:
        server.url = _wait_until_ready(server)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_until_ready(server: GunicornServer) -> str:
    """Poll the log for the bound port, then `GET /` until 200; fail after a deadline."""
    deadline = time.monotonic() + START_SECONDS
    url = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(
                f"gunicorn exited with {server.process.returncode}:\n{server.log()}"
            )
        if not url:
            match = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", server.log())
            url = match.group(1) if match else ""
        if url:
            try:
                if requests.get(url + "/", timeout=2).status_code == 200:
                    return url
            except requests.ConnectionError:
                pass
        time.sleep(0.05)
    raise ServerFailed(
        f"gunicorn did not answer within {START_SECONDS} s:\n{server.log()}"
    )
