"""Serve an ASGI app with uvicorn inside the current asyncio loop (tests) or as a process's main task."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host.

    uvicorn swaps SIGINT/SIGTERM handlers for its own while it serves; inside pytest that would turn
    Ctrl+C into "stop this fake" instead of stopping the run.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BackgroundServer:
    """A real HTTP server on a loopback port, running as a task of the loop that started it."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        # Binding here (not in uvicorn) makes port 0 work: the kernel's choice is known before serving.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("server already started")
        sock = self._bind()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # keep the host's logging setup
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"fake-server:{self.port}")
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped the server
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        finally:
            self._server = None
            self._task = None

    async def serve_forever(self) -> None:
        """Wait until the server stops (a process's main task)."""
        if self._task is None:
            raise RuntimeError("server not started")
        await asyncio.shield(self._task)
