"""Serve an ASGI app with uvicorn inside the current asyncio loop (tests) or as a process's main task."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
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


class PlatformFake:
    """What the fake platforms share: their HTTP server in the current loop, an HTTP client for the
    calls a platform makes to the product (webhook deliveries, events), and background tasks that
    end with the fake."""

    app: Any

    def __init__(self) -> None:
        self._server: BackgroundServer | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def client_timeout_s(self) -> float:
        """How long the platform waits for the product to answer one of its calls."""
        return 10.0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._client = httpx.AsyncClient(timeout=self.client_timeout_s)
        self._server = BackgroundServer(self.app, host, port)
        await self._server.start()

    def _wake_waiters(self) -> None:
        """Release whatever waits on the fake (long polls) so stop() does not hang on it."""

    async def stop(self) -> None:
        self._closed = True
        self._wake_waiters()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.url

    @property
    def server(self) -> BackgroundServer | None:
        return self._server

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine on the fake's loop, whether called from that loop or from another thread."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop or running
        if loop is None:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} is not started")
        if running is loop:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            loop.call_soon_threadsafe(self._spawn, coro)
