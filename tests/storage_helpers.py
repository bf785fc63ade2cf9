"""A real S3 endpoint for the storage tests: moto's server (PyPI moto[server]) on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from aibot_common.settings import StorageSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all held until all are chosen (one at a time, the kernel may hand the
    same just-released port out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a fresh moto S3 server; skips when moto_server is not installed."""
    binary = shutil.which("moto_server")
    if binary is None:
        pytest.skip("moto_server is not installed (PyPI moto[server], dev group): no S3 endpoint to test against")
    port = free_port()
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def s3_settings(endpoint: str, bucket: str, **extra: object) -> StorageSettings:
    """Settings for a bucket on the moto server, created here (moto accepts any credentials)."""
    httpx.put(f"{endpoint}/{bucket}", timeout=10).raise_for_status()
    return StorageSettings(
        backend="s3",
        bucket=bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="testing-key",
        secret_access_key="testing-secret",
        **extra,
    )
