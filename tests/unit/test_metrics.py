"""The metric definitions the dashboard and alerts are checked against, daily active users, and the
lag figures' arithmetic and export."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from aibot_common import lag, telemetry
from aibot_common.lag import GroupLag, LagSnapshot, PartitionLag


def test_metric_names_lists_every_metric_defined_in_telemetry() -> None:
    defined = {m._name for m in vars(telemetry).values() if isinstance(m, MetricWrapperBase)}
    assert defined == telemetry.METRIC_NAMES


def test_no_aibot_metric_is_registered_outside_telemetry() -> None:
    # Importing the lag modules must not add series the dashboard's cross-check does not know.
    import aibot_cli.lag  # noqa: F401

    names = {m.name for m in REGISTRY.collect() if m.name.startswith("aibot_")}
    assert names <= telemetry.METRIC_NAMES


@pytest.mark.parametrize(
    ("start", "end", "committed", "expected"),
    [
        (0, 10, 4, 6),
        (0, 10, 10, 0),
        (0, 10, None, 10),  # never committed: the group would start from the earliest record
        (7, 10, 3, 3),  # committed below the log start (retention deleted records): only what is left
        (5, 5, None, 0),
        (0, 10, 12, 0),  # never negative
    ],
)
def test_partition_lag(start: int, end: int, committed: int | None, expected: int) -> None:
    assert PartitionLag("t", 0, "g", start, end, committed).lag == expected


def _snapshot(members: int | None) -> LagSnapshot:
    partitions = (
        PartitionLag("unit.topic", 0, "unit-group", 0, 9, 4),
        PartitionLag("unit.topic", 1, "unit-group", 0, 3, None),
    )
    return LagSnapshot(groups=(GroupLag("unit.topic", "unit-group", members, partitions),), taken_at=1_900_000_000.0)


def test_publish_exports_partition_and_group_lag_and_the_empty_group_flag() -> None:
    lag.publish(_snapshot(members=0))
    value = REGISTRY.get_sample_value
    assert value("aibot_consumer_lag", {"topic": "unit.topic", "partition": "0", "group": "unit-group"}) == 5
    assert value("aibot_consumer_lag", {"topic": "unit.topic", "partition": "1", "group": "unit-group"}) == 3
    assert value("aibot_consumer_group_lag", {"topic": "unit.topic", "group": "unit-group"}) == 8
    assert value("aibot_consumer_group_members", {"group": "unit-group"}) == 0
    assert value("aibot_consumer_group_no_consumer", {"group": "unit-group"}) == 1
    assert value("aibot_lag_last_refresh_timestamp_seconds") == 1_900_000_000.0
    lag.publish(_snapshot(members=2))
    assert value("aibot_consumer_group_no_consumer", {"group": "unit-group"}) == 0
    # An unknown member count leaves the last known figures alone rather than claiming a dead stage.
    lag.publish(_snapshot(members=None))
    assert value("aibot_consumer_group_members", {"group": "unit-group"}) == 2
    assert b'aibot_consumer_group_lag{group="unit-group",topic="unit.topic"} 8.0' in generate_latest()


def test_lag_table_shows_totals_partitions_and_change() -> None:
    from rich.console import Console

    from aibot_cli.lag import lag_table

    before = _snapshot(members=0)
    after = LagSnapshot(
        groups=(
            GroupLag(
                "unit.topic",
                "unit-group",
                0,
                (
                    PartitionLag("unit.topic", 0, "unit-group", 0, 12, 4),
                    PartitionLag("unit.topic", 1, "unit-group", 0, 3, None),
                ),
            ),
        ),
    )
    console = Console(width=160, record=True, no_color=True)
    console.print(lag_table(after, partitions=True, previous=before))
    text = console.export_text()
    assert "11 records waiting" in text
    rows = [[c for c in line.split() if c not in "│┃"] for line in text.splitlines()]
    assert ["unit.topic", "unit-group", "0", "all", "2", "15", "4", "11", "+3"] in rows
    assert ["0", "12", "4", "8"] in rows and ["1", "3", "-", "3"] in rows
