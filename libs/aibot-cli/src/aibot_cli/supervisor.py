"""Run services as separate processes on one host: start, wait until ready, restart, stop.

Used by `ai-bot up` (the single-host stack) and by the end-to-end tests, so the tests exercise the
same way of running the product that an operator uses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aibot_common import catalog


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    instance: int = 0

    @property
    def module(self) -> str:
        return catalog.service(self.name).module

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            # Static group membership: a stable id per replica, as the pod name is on Kubernetes, so a
            # replica restarted after a crash gets its partitions back without a rebalance.
            "AIBOT_KAFKA__GROUP_INSTANCE_ID": f"{socket.gethostname()}-{self.name}-{self.instance}",
            **self.env,
            "AIBOT_HTTP__PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Die the hard way (SIGKILL): what a crash or an OOM kill looks like."""
        self.stop(sig=signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str]
    processes: list[ServiceProcess] = field(default_factory=list)

    def add(self, name: str, port: int | None = None, env: dict[str, str] | None = None) -> ServiceProcess:
        index = sum(1 for p in self.processes if p.name == name)
        port = port or catalog.service(name).port  # an unknown name fails here, listing the known ones
        log_path = self.log_dir / (f"{name}.log" if index == 0 else f"{name}-{index}.log")
        process = ServiceProcess(
            name=name, port=port, env={**self.env, **(env or {})}, log_path=log_path, instance=index
        )
        self.processes.append(process)
        return process

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for process in self.processes:
            process.start()

    def wait_ready(self, timeout_s: float = 60.0, processes: list[ServiceProcess] | None = None) -> None:
        waiting = list(processes or self.processes)
        deadline = time.monotonic() + timeout_s
        while waiting:
            for process in list(waiting):
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited during start-up:\n{process.tail()}")
                if process.ready():
                    waiting.remove(process)
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise TimeoutError(f"not ready after {timeout_s}s: {names}\n" + "\n".join(p.tail() for p in waiting))
            time.sleep(0.2)

    def restart_crashed(self) -> list[ServiceProcess]:
        """Start again every process that exited (what systemd or Kubernetes would do)."""
        restarted = []
        for process in self.processes:
            if process.process is not None and not process.alive():
                process.restarts += 1
                process.start()
                restarted.append(process)
        return restarted

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.alive():
                assert process.process is not None
                process.process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            process.stop()
