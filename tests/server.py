"""A real ``songkhoe serve`` process on a free loopback port, for process-level tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, db_url: str, *, workers: int = 1, secure: bool = False,
                 demo: tuple[int, int] | None = None, output: Path | None = None) -> None:
        """``secure``: serve with authentication and audit, as ``songkhoe serve`` does by
        default (process tests of the store run without: ``--insecure-no-auth``). ``demo``:
        ``serve --demo`` with (people, communes); what the server prints (the demo users'
        passwords) goes to the file ``output`` (``printed()``)."""
        self.db_url = db_url
        self.workers = workers
        self.secure = secure
        self.demo = demo
        self.output = output
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = f"{self.origin}/fhir"
        self.proc: subprocess.Popen[bytes] | None = None

    def printed(self) -> str:
        return self.output.read_text() if self.output else ""

    def start(self) -> ServerProcess:
        src = str(Path(__file__).resolve().parents[1] / "src")
        env = {**os.environ, "PYTHONPATH": src}
        demo = ["--demo", "--demo-people", str(self.demo[0]), "--demo-communes",
                str(self.demo[1])] if self.demo else []
        stdout = self.output.open("wb") if self.output else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "songkhoe.cli", "serve",
             *([] if self.secure else ["--insecure-no-auth"]), "--db", self.db_url,
             "--port", str(self.port), "--workers", str(self.workers), *demo],
            env=env, stdout=stdout, stderr=subprocess.STDOUT if self.output else subprocess.PIPE,
            start_new_session=True)
        if self.output:
            stdout.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + (300 if self.demo else 60)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = self.printed() if self.output else self.proc.stderr.read().decode()  # type: ignore[union-attr]
                raise RuntimeError(f"server exited: {said[-2000:]}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start in time")

    def cpu_seconds(self) -> float:
        """User+system CPU time of the server's process group leader and its children."""
        assert self.proc is not None
        total = 0.0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def kill(self) -> None:
        """SIGKILL the whole server process group: no clean shutdown, no rollback by the app."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    kids = [int(x) for x in text.split()]
    return kids + [g for k in kids for g in _children(k)]
