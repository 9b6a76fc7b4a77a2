"""nginx from Debian's packages as a fixed-answer Chat API, in a temporary directory.

One worker on 127.0.0.1, pinned to one CPU when given one, answering the
three calls (POST create, POST respond, PUT close) with fixed JSON bodies. Nobody here wrote
it, and it answers in microseconds: what a generator reaches against it is the generator's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ._server import pin

__all__ = ["PREFIX", "Nginx", "nginx_binary"]

#: The path prefix of the calls (the client's base_url ends here).
PREFIX = "/v1/ACCOUNT-test/PROJECT-test/chat"

_CONFIG = """\
worker_processes 1;
daemon off;
master_process off;
error_log {dir}/error.log crit;
pid {dir}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {prefix}/create {{
            return 200 '{{"conversation_id":"c-1","response":"Hello! How can I help?"}}';
        }}
        location = {prefix}/respond {{
            return 200 '{{"conversation_id":"c-1","response":"Sure.","end_conversation":false}}';
        }}
        location = {prefix}/close {{
            return 200 '{{"success":true}}';
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Where Debian's nginx is, or None."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    """nginx with a temporary config; ``url`` is the client's base_url. Stop it with ``stop``."""

    def __init__(self, cpu: int | None) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.port = _free_port()
        config = self.dir / "nginx.conf"
        config.write_text(_CONFIG.format(dir=self.dir, port=self.port, prefix=PREFIX))
        self.process = subprocess.Popen(  # noqa: S603 - Debian's nginx, our config
            [binary, "-p", str(self.dir), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if cpu is not None:
            pin(self.process.pid, cpu)  # one process: master_process off
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {err.strip()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop nginx and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
