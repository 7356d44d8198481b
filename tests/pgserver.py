"""A throw-away PostgreSQL server on 127.0.0.1, for the tests and bench.py (no pytest in here).

Debian's `postgresql` package puts its programs in /usr/lib/postgresql/<major>/bin. The
server runs from a temporary data directory as an unprivileged user (PostgreSQL refuses
to run as root: as root, the `postgres` user the package creates), listens on a free
loopback port with trust authentication, and is stopped (by its pid, through pg_ctl)
when the caller is done. Each test gets a database of its own, copied from a template
that already holds the schema, which takes milliseconds.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL tests need Debian's postgresql package (apt-get install postgresql) "
    "and the requirements in requirements-postgres.txt"
)


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: its data directory, port, and the user it runs as."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None  # the OS user running it; None: this process's own

    def url(self, database: str = "postgres") -> str:
        """A postgresql:// URL for `database` on this server (superuser, trust)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program of this installation as the server's user."""
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        return subprocess.run(
            argv,
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
            user=self.user,
            cwd="/",
        )

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through psql; its output (unaligned, tuples only)."""
        return self.run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-c", statement,
        ).stdout.strip()  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (pg_ctl stop, which signals the postmaster by its pid file)."""
        self.run(
            "pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False
        )

    def start(self) -> None:
        """Start it again on the same port and data (after `stop`)."""
        self.run(
            "pg_ctl", "-D", str(self.data_dir), "-w", "-t", "30",
            "-l", str(self.data_dir / "server.log"), "start",
        )  # fmt: skip

    def remove(self) -> None:
        """Stop it and delete its data directory."""
        self.stop("immediate")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres(durable: bool = False) -> PostgresServer:
    """initdb a temporary cluster and start it on a free 127.0.0.1 port.

    For tests, durability is off (no fsync: nothing here must survive a power cut);
    `durable` keeps PostgreSQL's defaults, for the benchmark.

    Raises FileNotFoundError with INSTALL_HINT when PostgreSQL is not installed.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(INSTALL_HINT)
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
    data_dir = base / "data"
    data_dir.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (base, data_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(
        bin_dir=bin_dir, data_dir=data_dir, port=free_port(), user=user
    )
    server.run(
        "initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust",
        "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
    )  # fmt: skip
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {server.port}\n"
            f"unix_socket_directories = '{base}'\nmax_connections = 200\n"
        )
        if not durable:  # a throw-away cluster: durability costs test time for nothing
            conf.write(
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
    deadline = time.monotonic() + 30
    while True:
        try:
            server.start()
            return server
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            server.port = free_port()  # taken meanwhile: try another
            with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(f"port = {server.port}\n")
