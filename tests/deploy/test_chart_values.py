"""values.yaml documents every key, values.schema.json describes and closes every object, and the
config blocks name only settings the services know."""

from __future__ import annotations

import json
from collections.abc import Iterator

import yaml
from pydantic import BaseModel

from aibot_common import settings as app_settings
from tests.deploy.helpers import CHART
from tests.deploy.values_comments import key_comments

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def leaf_paths(node: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of the values, list items as "[]"."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from leaf_paths(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from leaf_paths(item, (*path, "[]"))


def resolve(schema: dict) -> dict:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        return {**SCHEMA["definitions"][name], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def schema_at(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = resolve(node)
        if key == "[]":
            node = node["items"]
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        else:
            extra = node.get("additionalProperties")
            assert isinstance(extra, dict), f"{'.'.join(path)}: not in the schema"
            node = extra
    return resolve(node)


def test_values_file_opens_with_the_schema_line() -> None:
    assert VALUES_TEXT.splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"


def test_every_values_key_has_a_comment() -> None:
    comments = key_comments(VALUES_TEXT)
    missing = [".".join(p) for p in leaf_paths(VALUES) if not comments.get(p)]
    assert missing == []


def test_every_values_key_is_in_the_schema_with_a_description() -> None:
    undocumented = [".".join(p) for p in leaf_paths(VALUES) if not schema_at(p).get("description")]
    assert undocumented == []


def test_every_schema_object_is_closed_and_described() -> None:
    """No object is left open by default: additionalProperties is false, or names what extra keys hold
    (resource quantities, labels, a volume source)."""

    def walk(node: dict, where: str) -> Iterator[str]:
        if node.get("type") == "object" and "additionalProperties" not in node:
            yield f"{where}: additionalProperties unset"
        if "description" not in node and where != "$" and not node.get("oneOf"):
            yield f"{where}: no description"
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict) and node[key].get("type") == "object":
                yield from walk(node[key], f"{where}.{key}")
        for name, child in node.get("definitions", {}).items():
            yield from walk(child, f"definitions.{name}")

    assert list(walk(SCHEMA, "$")) == []
    assert SCHEMA["additionalProperties"] is False


def test_config_blocks_name_only_settings_the_services_know() -> None:
    """A key the schema allows under config.* must be a field of aibot_common.settings, or the services
    would refuse the file (extra="forbid")."""
    blocks: dict[str, type[BaseModel]] = {
        "telegram": app_settings.TelegramConfig,
        "feishu": app_settings.FeishuConfig,
        "core": app_settings.CoreSettings,
        "renderer": app_settings.RendererSettings,
        "asr": app_settings.AsrSettings,
        "observability": app_settings.ObservabilitySettings,
        "security": app_settings.SecuritySettings,
    }
    config = SCHEMA["properties"]["config"]["properties"]
    assert set(config) == {*blocks, "models"}
    for name, model in blocks.items():
        assert set(config[name]["properties"]) <= set(model.model_fields), name
    webhook = config["telegram"]["properties"]["webhook"]["properties"]
    assert set(webhook) <= set(app_settings.TelegramWebhook.model_fields)
    chart_only = {"apiKeyEnv"}
    model_keys = set(config["models"]["items"]["properties"])
    assert model_keys - chart_only <= set(app_settings.ModelConfig.model_fields)
    # Secrets never fit in the config blocks: the schema has no place for them.
    assert "api_key" not in model_keys
    assert not {"bot_token", "secret_token"} & (set(config["telegram"]["properties"]) | set(webhook))
    assert not {"app_secret", "verification_token", "encrypt_key"} & set(config["feishu"]["properties"])
