"""The storage backend: one place for archives and old log days, a local directory or S3-compatible
object storage (AWS S3, MinIO, Aliyun OSS, Tencent COS), through obstore.

Configured once, in the `storage:` section of the settings. Credentials come from the environment
(`AIBOT_STORAGE__ACCESS_KEY_ID` / `AIBOT_STORAGE__SECRET_ACCESS_KEY`, or the standard `AWS_*`
variables, which obstore reads itself, so a Kubernetes Secret mounted as env works either way) and
are never written to the config file.

Everything kept here is date-partitioned under a *tier* (`archive/`, `logs/`, `errors/`):
`<tier>/date=YYYY-MM-DD/...`, so retention is "delete the date= folders older than N days", the
same on every backend, without a bucket lifecycle rule the operator must remember to set.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import obstore
from obstore.store import LocalStore, S3Store

from aibot_common.settings import ConfigError, StorageSettings

_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Storage:
    """Put, get, list and delete whole objects; keys are `/`-separated paths.

    obstore's blocking calls run in a worker thread rather than its `*_async` ones: with those, a
    process aborts at exit (SIGABRT, about one run in five here) when obstore's runtime is torn down
    after asyncio's loop, which turned `ai-bot archive ls` and a stopping archiver into failures."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self._local_root: Path | None = None
        if settings.backend == "local":
            root = Path(settings.path).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
            self._local_root = root
            self._store: LocalStore | S3Store = LocalStore(root)
        else:
            if not settings.bucket:
                raise ConfigError("storage.bucket: the s3 backend needs a bucket name")
            config: dict[str, object] = {}
            if settings.endpoint:
                config["endpoint"] = settings.endpoint
            if settings.region:
                config["region"] = settings.region
            if settings.access_key_id:
                config["access_key_id"] = settings.access_key_id.get_secret_value()
            if settings.secret_access_key:
                config["secret_access_key"] = settings.secret_access_key.get_secret_value()
            # OSS and COS only answer virtual-hosted-style requests (bucket.endpoint/key).
            config["virtual_hosted_style_request"] = settings.virtual_hosted_style
            self._store = S3Store(
                settings.bucket,
                prefix=settings.prefix or None,
                client_options={"allow_http": settings.endpoint is not None and settings.endpoint.startswith("http:")},
                **config,  # type: ignore[arg-type]
            )

    @property
    def location(self) -> str:
        """Where the objects are, for logs and the CLI (never a credential)."""
        if self._local_root is not None:
            return str(self._local_root)
        endpoint = self.settings.endpoint or "aws"
        return f"s3://{self.settings.bucket}/{self.settings.prefix} ({endpoint})"

    async def put(self, key: str, data: bytes) -> None:
        """Write the whole object; when this returns the object is durable (S3 answers 200 only once it
        has stored it; a local file is flushed to disk, its folder too), so a caller may commit after it."""
        await asyncio.to_thread(obstore.put, self._store, key, data)
        if self._local_root is not None:
            await asyncio.to_thread(_fsync_path, self._local_root / key, self._local_root)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(lambda: bytes(obstore.get(self._store, key).bytes()))

    async def list(self, prefix: str = "") -> list[StoredObject]:
        """Every object under `prefix`, sorted by key."""

        def listing() -> list[StoredObject]:
            found = []
            for chunk in obstore.list(self._store, prefix or None, chunk_size=1000):
                for meta in chunk:
                    found.append(StoredObject(key=meta["path"], size=meta["size"], modified=meta["last_modified"]))
            return found

        return sorted(await asyncio.to_thread(listing), key=lambda o: o.key)

    async def delete(self, keys: Iterable[str]) -> int:
        batch = list(keys)
        if batch:
            await asyncio.to_thread(obstore.delete, self._store, batch)
        return len(batch)

    async def partition_dates(self, tier: str) -> list[date]:
        """The days that have a `<tier>/date=YYYY-MM-DD/` folder."""
        listing = await asyncio.to_thread(obstore.list_with_delimiter, self._store, f"{tier}/")
        days = []
        for prefix in listing["common_prefixes"]:
            match = _DATE_DIR.search(prefix.rstrip("/"))
            if match:
                days.append(date.fromisoformat(match.group(1)))
        return sorted(days)

    async def sweep(self, tier: str, today: date | None = None) -> int:
        """Delete the tier's days older than its retention (`storage.retention_days[tier]`); returns how
        many objects went. A tier without a retention entry is kept forever."""
        days = self.settings.retention_days.get(tier)
        if days is None:
            return 0
        cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
        removed = 0
        for day in await self.partition_dates(tier):
            if day < cutoff:
                folder = f"{tier}/date={day.isoformat()}"
                removed += await self.delete(o.key for o in await self.list(f"{folder}/"))
                if self._local_root is not None:
                    # A folder has no existence of its own in a bucket; on disk the emptied day would
                    # still be listed as a day.
                    await asyncio.to_thread(_remove_empty_dirs, self._local_root / folder)
        return removed


def _fsync_path(path: Path, root: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # The rename that made the file visible, and any date= folder made for it, live in the folders
    # above it: flush those up to the root too.
    folder = path.parent
    while True:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if folder == root or folder == folder.parent:
            break
        folder = folder.parent


def _remove_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()


def open_storage(settings: StorageSettings) -> Storage:
    return Storage(settings)
