import pytest

from aibot_common.settings import ConfigError, load_settings

CONFIG = """
models:
  - name: gpt
    type: llm
    endpoint: http://llm.local/v1/chat/completions
    api_key: ${TEST_LLM_KEY}
    max_tokens: 512
  - name: whisper
    type: asr
    framework: whisper
    language: zh-CN
    device: auto
telegram:
  bot_token: ${TEST_TG_TOKEN:-123:abc}
  webhook:
    url: https://bot.example.com/telegram/webhook
  max_connections: 40
  allowed_updates: [message, callback_query]
"""


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("AIBOT_CONFIG", str(path))
    monkeypatch.setenv("TEST_LLM_KEY", "sk-from-env")
    return path


def test_operator_formats_load_with_secrets_from_the_environment(config_file) -> None:
    settings = load_settings()
    llm = settings.llm_model()
    assert llm.endpoint == "http://llm.local/v1/chat/completions"
    assert llm.api_key.get_secret_value() == "sk-from-env"
    assert settings.asr_model().language == "zh-CN"
    assert settings.telegram.bot_token.get_secret_value() == "123:abc"
    assert settings.telegram.max_connections == 40
    assert settings.telegram.allowed_updates == ["message", "callback_query"]
    assert "sk-from-env" not in repr(settings)


def test_environment_overrides_the_file(config_file, monkeypatch) -> None:
    monkeypatch.setenv("AIBOT_TELEGRAM__BOT_TOKEN", "999:env")
    monkeypatch.setenv("AIBOT_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092")
    settings = load_settings()
    assert settings.telegram.bot_token.get_secret_value() == "999:env"
    assert settings.telegram.max_connections == 40  # the rest of the block still comes from the file
    assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_missing_environment_reference_fails_with_its_name(config_file, monkeypatch) -> None:
    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(ConfigError, match="TEST_LLM_KEY"):
        load_settings()


def test_wrong_types_fail_fast_with_the_key(monkeypatch) -> None:
    monkeypatch.setenv("AIBOT_TELEGRAM__MAX_CONNECTIONS", "lots")
    with pytest.raises(ConfigError, match=r"telegram\.max_connections"):
        load_settings()


def test_placeholder_secrets_are_refused_in_production(monkeypatch) -> None:
    monkeypatch.setenv("AIBOT_ENVIRONMENT", "production")
    monkeypatch.setenv("AIBOT_TELEGRAM__BOT_TOKEN", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()


def test_llm_without_endpoint_is_rejected(tmp_path, monkeypatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - name: x\n    type: llm\n")
    monkeypatch.setenv("AIBOT_CONFIG", str(path))
    with pytest.raises(ConfigError, match="needs an endpoint"):
        load_settings()


def test_no_llm_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no llm model"):
        load_settings().llm_model()
