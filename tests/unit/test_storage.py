"""The storage backend against a local directory and a real S3 endpoint (moto's server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from aibot_common.settings import ConfigError, Settings, StorageSettings
from aibot_common.storage import Storage
from tests.storage_helpers import moto_s3, s3_settings


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Storage:
    if request.param == "local":
        return Storage(StorageSettings(backend="local", path=str(tmp_path / "store")))
    return Storage(s3_settings(request.getfixturevalue("s3_endpoint"), f"b-{unique}", prefix="ai-bot/test"))


async def test_put_get_list_delete(storage: Storage) -> None:
    await storage.put("archive/date=2026-01-02/platform=telegram/part-1.jsonl.gz", b"one")
    await storage.put("archive/date=2026-01-03/platform=feishu/part-2.jsonl.gz", b"two!")
    await storage.put("logs/date=2026-01-02/x.log.gz", b"log")

    listed = await storage.list("archive/")
    assert [(o.key, o.size) for o in listed] == [
        ("archive/date=2026-01-02/platform=telegram/part-1.jsonl.gz", 3),
        ("archive/date=2026-01-03/platform=feishu/part-2.jsonl.gz", 4),
    ]
    assert await storage.get(listed[1].key) == b"two!"
    assert await storage.partition_dates("archive") == [date(2026, 1, 2), date(2026, 1, 3)]

    assert await storage.delete([listed[0].key]) == 1
    assert [o.key for o in await storage.list("archive/")] == [listed[1].key]


async def test_sweep_deletes_only_days_past_the_tier_retention(storage: Storage) -> None:
    storage.settings.retention_days.update({"archive": 10})
    storage.settings.retention_days.pop("logs", None)
    for day in ("2026-03-01", "2026-03-05", "2026-03-06", "2026-03-15"):
        await storage.put(f"archive/date={day}/platform=telegram/part-a.jsonl.gz", b"x")
        await storage.put(f"logs/date={day}/part-a.log.gz", b"x")

    removed = await storage.sweep("archive", today=date(2026, 3, 15))

    # 10 days before 2026-03-15 is 2026-03-05: that day is still kept, the days before it go.
    assert removed == 1
    assert await storage.partition_dates("archive") == [date(2026, 3, 5), date(2026, 3, 6), date(2026, 3, 15)]
    # No retention configured for a tier: it is kept forever.
    assert await storage.sweep("logs", today=date(2030, 1, 1)) == 0
    assert len(await storage.partition_dates("logs")) == 4


def test_local_files_land_under_the_configured_folder(tmp_path: Path) -> None:
    import asyncio

    storage = Storage(StorageSettings(backend="local", path=str(tmp_path / "a")))
    asyncio.run(storage.put("archive/date=2026-01-01/part.jsonl.gz", b"data"))
    assert (tmp_path / "a/archive/date=2026-01-01/part.jsonl.gz").read_bytes() == b"data"


def test_s3_without_a_bucket_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"storage\.bucket"):
        Storage(StorageSettings(backend="s3"))


def test_storage_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBOT_STORAGE__BACKEND", "s3")
    monkeypatch.setenv("AIBOT_STORAGE__BUCKET", "archive")
    monkeypatch.setenv("AIBOT_STORAGE__SECRET_ACCESS_KEY", "s3cr3t-value")
    settings = Settings()
    assert settings.storage.bucket == "archive"
    assert settings.storage.secret_access_key is not None
    assert "s3cr3t-value" not in repr(settings.storage)


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"retention_days\.archive"):
        StorageSettings(retention_days={"archive": 0})


def test_a_process_that_used_the_storage_exits_cleanly(tmp_path: Path) -> None:
    """obstore's *_async calls aborted the process at exit about one run in five (SIGABRT after the
    loop closed): `ai-bot archive ls` failed and the archiver stopped with 134. Eight clean exits in a
    row are what the thread-backed calls give (all eight passing with the bug: under 17%)."""
    import subprocess
    import sys

    script = (
        "import asyncio, sys; from aibot_common.storage import Storage;"
        "from aibot_common.settings import StorageSettings;"
        "s = Storage(StorageSettings(path=sys.argv[1]));"
        "asyncio.run(s.put('archive/date=2026-01-01/a.jsonl.gz', b'x')); asyncio.run(s.list('archive/'));"
        "asyncio.run(s.partition_dates('archive')); asyncio.run(s.get('archive/date=2026-01-01/a.jsonl.gz'))"
    )
    codes = [
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=60).returncode
        for _ in range(8)
    ]
    assert codes == [0] * 8
