"""Real reverse proxies on loopback for the forward-auth tests: Debian's nginx and caddy,
run unprivileged-style from a temporary directory with a configuration written there,
stopped by PID. The configurations are docs/forward-auth.md's own, with the hosts and
ports of the test put in."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "forward-auth.md"
START_SECONDS = 15.0


def snippet(language: str) -> str:
    """The guide's code block in `language` (nginx, caddyfile, yaml)."""
    match = re.search(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert match, f"no {language} block in {GUIDE}"
    return match.group(1)


def placed(text: str, authsvc_port: int, app_port: int) -> str:
    """The guide's hosts replaced by the test's servers on loopback."""
    return text.replace("authsvc:5000", f"127.0.0.1:{authsvc_port}").replace(
        "app:8000", f"127.0.0.1:{app_port}"
    )


@dataclass
class Proxy:
    """A running proxy: its process, URL and log."""

    process: subprocess.Popen
    url: str
    log_path: Path
    log_file: object

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log_file.close()

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )


def _wait_for_port(proxy: Proxy, port: int) -> Proxy:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            proxy.stop()
            raise RuntimeError(f"the proxy exited:\n{proxy.log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"the proxy did not listen in time:\n{proxy.log()}")


def start_nginx(directory: Path, port: int, authsvc_port: int, app_port: int) -> Proxy:
    """nginx with the guide's server block, listening on 127.0.0.1:`port`."""
    server = placed(snippet("nginx"), authsvc_port, app_port).replace(
        "listen 80;", f"listen 127.0.0.1:{port};"
    )
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(exist_ok=True)
    log = directory / "nginx.log"
    config = directory / "nginx.conf"
    config.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + "daemon off;\nworker_processes 1;\n"
        f"pid {directory}/nginx.pid;\nerror_log {log} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"  access_log {log};\n"
        + "".join(
            f"  {name}_temp_path {directory}/{name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + server
        + "}\n"
    )
    log_file = open(log, "ab")  # noqa: SIM115 - closed by Proxy.stop
    process = subprocess.Popen(
        ["nginx", "-p", str(directory), "-c", str(config), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    return _wait_for_port(
        Proxy(process, f"http://127.0.0.1:{port}", log, log_file), port
    )


def start_caddy(directory: Path, port: int, authsvc_port: int, app_port: int) -> Proxy:
    """caddy with the guide's site block, as http://127.0.0.1:`port`."""
    site = placed(snippet("caddyfile"), authsvc_port, app_port).replace(
        "app.example.com {", f"http://127.0.0.1:{port} {{", 1
    )
    config = directory / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tauto_https off\n"
        f"\tstorage file_system {directory}/caddy-data\n}}\n\n" + site
    )
    log = directory / "caddy.log"
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "XDG_DATA_HOME": str(directory / "data"),
    }
    log_file = open(log, "ab")  # noqa: SIM115 - closed by Proxy.stop
    process = subprocess.Popen(
        ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env=env,
    )
    return _wait_for_port(
        Proxy(process, f"http://127.0.0.1:{port}", log, log_file), port
    )


def missing(program: str) -> bool:
    return shutil.which(program) is None
