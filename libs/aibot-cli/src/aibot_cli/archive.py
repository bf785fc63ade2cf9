"""`ai-bot archive ls|get`: find a day's conversations in the archive the archiver writes.

Reads the storage backend the configuration names (`storage:`), exactly as the archiver writes to
it. `get` dedupes by envelope id: a volume re-written after a crash holds copies of records that an
earlier volume already has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from aibot_common.archive import TIER, day_prefix, decode_volume, dedupe
from aibot_common.settings import Settings, StorageSettings, load_settings
from aibot_common.storage import Storage


def storage_for(settings: Settings) -> Storage:
    storage = settings.storage
    if storage.backend == "local" and storage.path == StorageSettings().path:
        # Unconfigured: the folder `ai-bot up` gives the archiver (beside its logs).
        from aibot_cli.local import default_state_dir

        storage = storage.model_copy(update={"path": str(default_state_dir() / "storage")})
    return Storage(storage)


async def _ls(args: argparse.Namespace) -> int:
    storage = storage_for(load_settings())
    if args.date is None:
        days = await storage.partition_dates(TIER)
        print(f"archive in {storage.location}: {len(days)} days")
        for day in days:
            objects = await storage.list(day_prefix(day))
            print(f"  {day.isoformat()}  {len(objects):6d} volumes  {sum(o.size for o in objects):12d} bytes")
        return 0
    objects = await storage.list(day_prefix(args.date, args.platform))
    for obj in objects:
        print(f"{obj.modified.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}  {obj.size:10d}  {obj.key}")
    if not objects:
        print(f"no volumes for {args.date}" + (f" on {args.platform}" if args.platform else ""), file=sys.stderr)
    return 0


async def _get(args: argparse.Namespace) -> int:
    storage = storage_for(load_settings())
    lines = []
    for obj in await storage.list(day_prefix(args.date, args.platform)):
        lines.extend(decode_volume(await storage.get(obj.key)))
    records = dedupe(lines)
    if args.conversation:
        records = [r for r in records if r["conversation"] == args.conversation]
    for record in records:
        if args.text:
            when = datetime.fromisoformat(record["created_at"]).strftime("%H:%M:%S")
            print(f"{when} {record['conversation']} {record['kind']:8} {record['text']}")
        else:
            print(json.dumps(record, ensure_ascii=False))
    print(f"{len(records)} records ({len(lines) - len(dedupe(lines))} duplicates dropped)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_ls(args) if args.action == "ls" else _get(args))


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    archive = sub.add_parser("archive", help="list or read the conversation archive (the `storage:` backend)")
    archive.add_argument("action", choices=["ls", "get"], help="ls: days or a day's volumes; get: a day's records")
    archive.add_argument("--date", help="the day, YYYY-MM-DD (UTC); ls without it lists the days")
    archive.add_argument("--platform", choices=["telegram", "feishu"], help="only this platform")
    archive.add_argument("--conversation", help="get: only this conversation (telegram:<chat> / feishu:<chat>)")
    archive.add_argument("--text", action="store_true", help="get: one readable line per record instead of JSON")
    archive.set_defaults(func=_checked)


def _checked(args: argparse.Namespace) -> int:
    if args.action == "get" and not args.date:
        print("ai-bot archive get: --date YYYY-MM-DD is required", file=sys.stderr)
        return 2
    return run(args)
