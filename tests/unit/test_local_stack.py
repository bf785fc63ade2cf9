"""`ai-bot up` without the fakes extra (a production install): it says what to configure instead of
failing to start a stand-in; and which services of the catalog it runs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from aibot_cli import local
from aibot_cli.local import FakesMissing, LocalStack
from aibot_common import catalog
from aibot_common.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def no_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, not this shell's AIBOT_* variables or config file."""
    for name in [n for n in os.environ if n.startswith("AIBOT_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def without_fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object):
        return None if name == local.FAKES else real(name, *args)

    monkeypatch.setattr(local.importlib.util, "find_spec", find_spec)


def stack(tmp_path: Path, **settings: object) -> LocalStack:
    return LocalStack(settings=Settings(**settings), state_dir=tmp_path, log=lambda *_: None)


def test_no_token_and_no_fakes_asks_for_the_token(tmp_path: Path, without_fakes: None) -> None:
    with pytest.raises(FakesMissing, match=r"no Telegram bot token is configured .*AIBOT_TELEGRAM__BOT_TOKEN") as err:
        stack(tmp_path)._telegram(tmp_path)
    assert "aibot-cli[fakes]" in str(err.value)
    assert isinstance(err.value, ConfigError)  # `ai-bot` prints it and exits 2, like any config error
    assert not list(tmp_path.glob("fake-*.log"))  # nothing was started


def test_no_model_and_no_fakes_asks_for_a_model(tmp_path: Path, without_fakes: None) -> None:
    with pytest.raises(FakesMissing, match=r"no model of type llm is configured \(models\)"):
        stack(tmp_path)._model(tmp_path)


def test_the_catalog_decides_what_runs(tmp_path: Path) -> None:
    plain = stack(tmp_path)
    assert [s.name for s in catalog.SERVICES if plain._runs(s)] == [
        "ingress-telegram",
        "core-llm",
        "renderer",
        "archiver",
    ]
    everything = stack(tmp_path, feishu={"enabled": True, "app_id": "cli_a"})
    everything.with_voice = True
    assert [s.name for s in catalog.SERVICES if everything._runs(s)] == list(catalog.NAMES)
