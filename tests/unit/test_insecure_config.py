"""Unsafe production settings stop a service at start-up with a message naming the key, unless the
operator names that very risk in security.allow_insecure; local runs are not affected."""

from __future__ import annotations

import pytest

from aibot_common.settings import ConfigError, load_settings

SAFE = {
    "environment": "production",
    "telegram": {"bot_token": "123:abc", "webhook": {"secret_token": "a-real-secret"}},
    "feishu": {"enabled": True, "encrypt_key": "a-real-key"},
    "models": [{"name": "m", "type": "llm", "endpoint": "https://api.example.com/v1/chat/completions"}],
    "kafka": {"bootstrap_servers": "kafka.example.com:9093", "security_protocol": "SASL_SSL"},
}


def test_a_safe_production_config_loads() -> None:
    assert load_settings(**SAFE).environment == "production"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"telegram": {"bot_token": "123:abc"}}, "telegram.webhook.secret_token"),
        ({"feishu": {"enabled": True}}, "feishu.encrypt_key"),
        (
            {"models": [{"name": "m", "type": "llm", "endpoint": "http://llm.example.com/v1/chat/completions"}]},
            "models.endpoint",
        ),
        ({"kafka": {"bootstrap_servers": "kafka.example.com:9092"}}, "kafka.security_protocol"),
        ({"kafka": {"bootstrap_servers": "10.1.2.3:9092"}}, "kafka.security_protocol"),
    ],
)
def test_each_unsafe_setting_is_refused_naming_its_key_and_override(changes: dict, key: str) -> None:
    config = {**SAFE, **changes}
    with pytest.raises(ConfigError) as refused:
        load_settings(**config)
    message = str(refused.value)
    assert key in message and "security.allow_insecure" in message
    assert "a-real" not in message  # never a secret in the message
    # Named, the risk is taken knowingly: the service starts.
    assert load_settings(**config, security={"allow_insecure": [key]}).environment == "production"
    # Another override does not cover it.
    others = [k for k in ("telegram.webhook.secret_token", "feishu.encrypt_key", "models.endpoint") if k != key]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(**config, security={"allow_insecure": others})


@pytest.mark.parametrize(
    "servers", ["127.0.0.1:9092", "localhost:9092", "kafka:9092", "ai-bot-kafka.bots.svc:9092", "[::1]:9092"]
)
def test_plaintext_kafka_inside_the_host_or_cluster_is_allowed(servers: str) -> None:
    load_settings(**{**SAFE, "kafka": {"bootstrap_servers": servers}})


def test_plain_http_to_a_loopback_model_is_allowed() -> None:
    models = [{"name": "m", "type": "llm", "endpoint": "http://127.0.0.1:8000/v1/chat/completions"}]
    load_settings(**{**SAFE, "models": models})


def test_a_polling_bot_needs_no_webhook_secret() -> None:
    load_settings(**{**SAFE, "telegram": {"bot_token": "123:abc", "mode": "polling"}})


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="allow_insecure"):
        load_settings(security={"allow_insecure": ["everything"]})


def test_local_defaults_are_untouched() -> None:
    settings = load_settings(models=[{"name": "m", "type": "llm", "endpoint": "http://llm.lan/v1"}])
    assert settings.environment == "local" and settings.kafka.security_protocol == "PLAINTEXT"
