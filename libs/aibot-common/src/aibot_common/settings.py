"""Configuration: one file for the whole deployment, environment variables on top.

Sources, highest priority first:
1. environment variables `AIBOT_*`, nested with `__` (`AIBOT_KAFKA__BOOTSTRAP_SERVERS`,
   `AIBOT_TELEGRAM__BOT_TOKEN`);
2. the YAML file named by `AIBOT_CONFIG` (the operator's `models:` list, `telegram:` block...), in
   which `${VAR}` and `${VAR:-default}` are replaced from the environment, so keys stay in
   environment variables or Kubernetes Secrets and the file itself can live in a ConfigMap;
3. defaults that run the local stack.

Every service reads the same settings: one file describes one deployment. Settings are built once
in a service's `__main__`, never at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", "todo"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(RuntimeError):
    """The configuration cannot run; the message says what to change."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    partitions: int = Field(default=12, ge=1, le=1000, description="Partitions per pipeline topic.")
    replication_factor: int = Field(default=1, ge=1, le=10)
    create_topics: bool = Field(default=True, description="Create missing topics at start-up.")
    # Every hop of a reply waits for a fetch to return; a broker that answers an empty fetch only at
    # this deadline (the embedded dev broker does) adds up to this much per hop to a quiet pipeline.
    fetch_max_wait_ms: int = Field(default=100, ge=1, le=30000, description="Longest wait of an empty fetch.")
    # Static group membership (KIP-345): a replica that dies and comes back under the same id (the pod
    # name: a container restart keeps it) gets its partitions back with no rebalance, so a kill -9 stalls
    # only its own partitions, for as long as its restart takes. Must be unique per replica; unset: none.
    group_instance_id: str | None = Field(default=None, description="Stable id of this replica, e.g. the pod name.")


class ModelConfig(_Section):
    """One entry of the operator's `models:` list."""

    name: str
    type: Literal["llm", "asr"]
    endpoint: str | None = Field(default=None, description="OpenAI-compatible chat completions URL.")
    api_key: SecretStr | None = None
    max_tokens: int = Field(default=1024, ge=1)
    model: str | None = Field(default=None, description="Model id sent to the API; defaults to name.")
    timeout_s: float = Field(default=120.0, gt=0)
    temperature: float | None = None
    # asr only
    framework: Literal["whisper"] = "whisper"
    language: str | None = Field(default=None, description="e.g. zh-CN, en; empty or 'auto' to detect.")
    device: Literal["cuda", "cpu", "auto"] = "auto"
    model_path: str | None = Field(default=None, description="Folder of a CTranslate2 Whisper model.")
    compute_type: str | None = Field(default=None, description="Default float16 on CUDA, int8 on CPU.")

    @model_validator(mode="after")
    def _check_kind(self) -> ModelConfig:
        if self.type == "llm" and not self.endpoint:
            raise ValueError(f"model {self.name!r}: an llm model needs an endpoint (chat completions URL)")
        return self

    @property
    def api_model(self) -> str:
        return self.model or self.name


class TelegramWebhook(_Section):
    url: str | None = Field(default=None, description="Public HTTPS URL Telegram posts updates to.")
    secret_token: SecretStr | None = None
    path: str = "/telegram/webhook"

    @field_validator("secret_token")
    @classmethod
    def _token_chars(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("telegram.webhook.secret_token must be 1-256 characters of A-Z a-z 0-9 _ -")
        return value


class TelegramConfig(_Section):
    enabled: bool = True
    bot_token: SecretStr | None = None
    api_base_url: str = Field(default="https://api.telegram.org", description="Bot API server base URL.")
    mode: Literal["webhook", "polling"] = "webhook"
    webhook: TelegramWebhook = Field(default_factory=TelegramWebhook)
    max_connections: int = Field(default=100, ge=1, le=100)
    allowed_updates: list[Literal["message", "edited_message", "callback_query"]] = Field(
        default_factory=lambda: ["message", "edited_message", "callback_query"]
    )
    drop_pending_updates: bool = False
    polling_timeout_s: int = Field(default=30, ge=0, le=50)
    # Telegram's flood limits (python-telegram-bot's FloodLimit): 30 messages/s overall.
    messages_per_second: float = Field(default=30.0, gt=0)
    group_messages_per_minute: float = Field(default=20.0, gt=0)
    chat_messages_per_second: float = Field(default=1.0, gt=0, description="Per chat, averaged over 3 s.")


class FeishuConfig(_Section):
    enabled: bool = False
    app_id: str | None = None
    app_secret: SecretStr | None = None
    verification_token: SecretStr | None = None
    encrypt_key: SecretStr | None = None
    domain: str = Field(default="https://open.feishu.cn", description="Open API base URL.")
    event_path: str = "/feishu/events"
    timestamp_window_s: int = Field(default=300, ge=1, description="Reject signed events older than this.")
    bot_open_id: str | None = Field(default=None, description="The bot's open_id, to spot its @mention.")
    bot_name: str | None = None
    dedupe_ttl_s: int = Field(default=8 * 3600, ge=60)


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    port: int | None = Field(default=None, description="Defaults to the service's own port.")


class CoreSettings(_Section):
    model: str | None = Field(default=None, description="Name of the llm model to use; the first if unset.")
    system_prompt: str = "You are ai-bot, a helpful assistant in a chat. Answer concisely."
    history_max_turns: int = Field(default=20, ge=1)
    history_max_tokens: int = Field(default=3000, ge=100)
    max_in_flight: int = Field(default=512, ge=1, description="Messages processed at once per replica.")
    llm_attempts: int = Field(default=3, ge=1)


class RendererSettings(_Section):
    show_transcript: bool = Field(default=True, description="Quote what was heard above a voice answer.")
    max_in_flight: int = Field(default=512, ge=1)
    send_attempts: int = Field(default=6, ge=1)
    # A platform answering 5xx or unreachable is waited out this long before a reply is dead-lettered:
    # every reply of the outage would fail alike, and the send attempts alone last about 15 s.
    outage_max_s: float = Field(default=600.0, gt=0, description="Longest platform outage a reply waits out.")


class StreamingSettings(_Section):
    """Answers shown while the model writes them (core-llm publishes partials, the renderer shows them)."""

    enabled: bool = Field(default=True, description="Publish the answer so far while the model writes it.")
    # A few updates a second look live; one per token would be a record and a platform call per token.
    partial_interval_s: float = Field(default=0.25, gt=0, le=10, description="Least time between two partials.")
    # An answer complete this soon after its first token is simply sent: no preview, no edits.
    first_partial_after_s: float = Field(default=0.05, ge=0, le=10, description="Wait before the first partial.")
    telegram_drafts: bool = Field(default=True, description="Private chats: preview with sendMessageDraft.")


class FailoverSettings(_Section):
    """core-llm trying the next llm of the `models` list when one fails (timeout, 5xx, 429, connection)."""

    # Past this, the user gets an apology instead of more waiting (within 30 s of asking).
    answer_deadline_s: float = Field(default=25.0, gt=0, le=300, description="Longest wait for a first token.")
    first_token_timeout_s: float = Field(default=12.0, gt=0, le=300, description="Per model, before the next.")
    breaker_failures: int = Field(default=3, ge=1, description="Failures in a row that open a model's breaker.")
    breaker_open_s: float = Field(default=30.0, gt=0, description="How long an open breaker skips its model.")


class EditSettings(_Section):
    """What core-llm does with a message the user edited after sending it (Telegram `edited_message`)."""

    # window: answer the edited text only if the edit came soon after the original (the answer to
    # it may not even be out, or the user is correcting a typo); reanswer: always; ignore: never.
    mode: Literal["window", "reanswer", "ignore"] = "window"
    window_s: float = Field(default=60.0, ge=0, description="window mode: edits later than this are ignored.")


class AsrSettings(_Section):
    model: str | None = Field(default=None, description="Name of the asr model; the first if unset.")
    max_duration_s: float = Field(default=300.0, gt=0)
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    download_timeout_s: float = Field(default=30.0, gt=0)
    transcribe_timeout_s: float = Field(default=120.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    workers: int = Field(default=1, ge=1, description="Transcriptions run at once per replica.")
    # auto: voice notes waiting together are batched on a GPU; on CPU a pool of `workers` threads.
    engine: Literal["auto", "batched", "pool"] = "auto"
    beam_size: int = Field(default=5, ge=1, description="Whisper beam search width (1 = greedy, fastest).")
    max_in_flight: int = Field(default=32, ge=1, description="Voice notes held at once per replica (memory bound).")


class QuotaLimits(_Section):
    """Limits for one role (or for a chat); None is unlimited."""

    messages_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1, description="Prompt + completion tokens, UTC day.")


class AccessPolicyConfig(_Section):
    private: Literal["open", "allowlist", "pairing"] = "open"
    group: Literal["open", "allowlist", "pairing"] = "open"


class AccessBindingConfig(_Section):
    subject: str = Field(description="telegram:<user id>, feishu:<open_id>, or chat:<platform>:<chat id>.")
    role: Literal["admin", "developer", "user"]
    chat: str | None = Field(default=None, description="Only in this conversation (e.g. telegram:-100123).")

    @field_validator("subject")
    @classmethod
    def _subject_shape(cls, value: str) -> str:
        # A misspelt subject would never match anyone: refuse it at start-up instead.
        if not re.fullmatch(r"(chat:)?(telegram|feishu):[^:\s]+", value):
            raise ValueError("a subject is telegram:<user id>, feishu:<open_id> or chat:<platform>:<chat id>")
        return value


class AccessSettings(_Section):
    """Who may use the bot (seed of the access topic; see aibot_common.access and docs/security.md)."""

    # Per platform and chat type. The default, open everywhere, is the behaviour without an access block.
    policy: dict[Literal["telegram", "feishu"], AccessPolicyConfig] = Field(default_factory=dict)
    # In a served group: may any member talk (with the group's role), or only users bound themselves?
    group_members: Literal["any", "bound"] = "any"
    bindings: list[AccessBindingConfig] = Field(default_factory=list)
    quotas: dict[Literal["user", "developer", "admin", "chat"], QuotaLimits] = Field(default_factory=dict)
    pairing_ttl_s: int = Field(default=3600, ge=60, description="How long a pairing code can be approved.")
    admin_port: int | None = Field(default=None, description="Admin API port; the catalog's when unset.")
    admin_api: bool = Field(default=True, description="Serve the admin HTTP API from core-llm.")


class ObservabilitySettings(_Section):
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces endpoint; off if unset.")
    error_log_path: str | None = Field(default=None, description="Error lines also go to this file.")


# Each unsafe production setting that `security.allow_insecure` may name to run anyway.
InsecureOverride = Literal[
    "telegram.webhook.secret_token",  # a webhook anyone can post fake updates to
    "feishu.encrypt_key",  # Feishu events in plaintext and unsigned
    "models.endpoint",  # prompts and the API key over plain http:// to another host
    "kafka.security_protocol",  # conversations over a plaintext, unauthenticated Kafka connection
]


def _networks_named(key: str, value: list[str]) -> list[str]:
    """The list as it is when every item is an IP address or CIDR; else an error naming the key."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{key}: {item!r} is not an IP address or CIDR") from None
    return value


class RateLimitSettings(_Section):
    """Per client IP, on every path except /healthz, /readyz and /metrics (a token bucket)."""

    enabled: bool = True
    requests_per_s: float = Field(default=100.0, gt=0, description="Sustained requests per second per IP.")
    burst: int = Field(default=200, ge=1, description="Requests an IP may send at once before it is slowed.")
    max_clients: int = Field(default=100_000, ge=1, description="IPs tracked at once (memory bound).")
    # Telegram delivers every bot's webhook calls from a few published addresses, so a busy bot would
    # have its own updates throttled (and re-sent later) by a per-IP limit; its ranges are exempt.
    exempt_networks: list[str] = Field(
        default_factory=lambda: ["149.154.160.0/20", "91.108.4.0/22"],
        description="CIDRs never rate-limited: by default Telegram's published webhook source ranges.",
    )

    @field_validator("exempt_networks")
    @classmethod
    def _exempt_networks(cls, value: list[str]) -> list[str]:
        return _networks_named("security.rate_limit.exempt_networks", value)


class SecuritySettings(_Section):
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="Largest request body, counted as read.")
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IPs/CIDRs of proxies whose X-Forwarded-For is believed (e.g. the ingress controller).",
    )
    allow_insecure: list[InsecureOverride] = Field(
        default_factory=list, description="Unsafe production settings to run with anyway, each by name."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _networks_named("security.trusted_proxies", value)


PiiKind = Literal["phone", "email", "id_card", "bank_card", "api_key"]


class PrivacySettings(_Section):
    """What happens to personal data in a user's message before it reaches the model."""

    # mask: replaced by placeholders before the model and the history, restored in the answer;
    # refuse: such a message is not sent to the model and not stored; off: sent as it is.
    mode: Literal["off", "mask", "refuse"] = "mask"
    detectors: list[PiiKind] = Field(default_factory=lambda: ["phone", "email", "id_card", "bank_card", "api_key"])
    placeholder_key: SecretStr | None = Field(
        default=None, description="Keys the placeholders' tags; set one per deployment so tags reveal nothing."
    )
    refuse_text: str = (
        "Your message seems to contain personal data ({kinds}). For your privacy it was not sent to the "
        "model; please send it again without that."
    )


class RetentionSettings(_Section):
    dead_letter_retention_ms: int = Field(
        default=30 * 24 * 3600 * 1000, ge=3600 * 1000, description="How long dead letters are kept (retention.ms)."
    )


_CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _inside_the_cluster(host: str) -> bool:
    """Loopback, a compose service name (one label) or a Kubernetes service name: traffic that never
    leaves the host or the cluster network."""
    host = host.strip("[]").lower()
    if is_loopback_host(host):
        return True
    try:
        ipaddress.ip_address(host)
        return False  # an address other than loopback: where it leads cannot be told from here
    except ValueError:
        return "." not in host or host.endswith(_CLUSTER_SUFFIXES)


def _host_of(server: str) -> str:
    server = server.strip()
    if server.startswith("["):
        return server[1 : server.index("]")] if "]" in server else server
    return server.rsplit(":", 1)[0] if server.count(":") == 1 else server


def insecure_production_settings(settings: Settings) -> list[tuple[InsecureOverride, str]]:
    """The unsafe settings of a production deployment, each with the override that allows it."""
    found: list[tuple[InsecureOverride, str]] = []
    telegram = settings.telegram
    if telegram.enabled and telegram.mode == "webhook" and not _secret(telegram.webhook.secret_token):
        found.append(
            (
                "telegram.webhook.secret_token",
                "telegram.webhook.secret_token is not set: anyone who finds the webhook URL can post updates "
                "(set AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN)",
            )
        )
    if settings.feishu.enabled and not _secret(settings.feishu.encrypt_key):
        found.append(
            (
                "feishu.encrypt_key",
                "feishu.encrypt_key is not set: events arrive unencrypted and unsigned "
                "(set an Encrypt Key in the developer console and AIBOT_FEISHU__ENCRYPT_KEY)",
            )
        )
    for model in settings.models:
        if model.type != "llm" or not model.endpoint:
            continue
        url = urlsplit(model.endpoint)
        if url.scheme == "http" and not is_loopback_host(url.hostname or ""):
            found.append(
                (
                    "models.endpoint",
                    f"models[{model.name}].endpoint uses plain http:// to {url.hostname}: prompts and the API "
                    "key would cross the network unencrypted (use https://)",
                )
            )
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        outside = [s for s in kafka.bootstrap_servers.split(",") if s.strip() and not _inside_the_cluster(_host_of(s))]
        if outside:
            found.append(
                (
                    "kafka.security_protocol",
                    f"kafka.security_protocol is PLAINTEXT to brokers outside the cluster ({', '.join(outside)}): "
                    "use SSL or SASL_SSL",
                )
            )
    return found


def _secret(value: SecretStr | None) -> bool:
    return value is not None and bool(value.get_secret_value().strip())


class StorageSettings(_Section):
    """Where archives and old log days go: a local directory or an S3-compatible bucket (storage.py)."""

    backend: Literal["local", "s3"] = "local"
    path: str = Field(default="var/storage", description="local: the folder (a PersistentVolume in Kubernetes).")
    bucket: str | None = Field(default=None, description="s3: the bucket.")
    prefix: str = Field(default="", description="s3: a key prefix inside the bucket, e.g. ai-bot/prod.")
    endpoint: str | None = Field(
        default=None,
        description="s3: the endpoint for MinIO, OSS (https://oss-cn-hangzhou.aliyuncs.com), COS "
        "(https://cos.ap-guangzhou.myqcloud.com); unset for AWS.",
    )
    region: str | None = None
    # Secrets from the environment (AIBOT_STORAGE__ACCESS_KEY_ID, or AWS_ACCESS_KEY_ID which obstore
    # reads itself), never from the file.
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    virtual_hosted_style: bool = Field(default=False, description="OSS and COS need bucket.endpoint URLs.")
    # Days each tier keeps its date= folders; a tier left out is kept forever.
    retention_days: dict[str, int] = Field(default_factory=lambda: {"archive": 365, "logs": 90, "errors": 180})

    @field_validator("retention_days")
    @classmethod
    def _positive_days(cls, value: dict[str, int]) -> dict[str, int]:
        for tier, days in value.items():
            if days < 1:
                raise ValueError(f"storage.retention_days.{tier} must be at least 1 day")
        return value


class ArchiveSettings(_Section):
    """The archiver: every user message and answer, masked, in date-partitioned gzip JSONL volumes."""

    volume_max_records: int = Field(default=5000, ge=1, description="A volume is written at this many records...")
    volume_max_seconds: float = Field(default=60.0, gt=0, description="...or once its oldest record is this old.")
    sweep_interval_s: float = Field(default=3600.0, gt=0, description="How often old days are deleted.")
    # The key of the user digests in the daily-active-users topic (usage.py): the same in every replica.
    usage_salt: SecretStr = Field(default=SecretStr("aibot-usage-v1"), description="Key of the user digests.")


class AlertingSettings(_Section):
    """Where alerts go (`ai-bot alerts config` writes Alertmanager's config from this; `ai-bot alerts
    relay` delivers to the channels Alertmanager cannot reach itself). Secrets from the environment."""

    relay_url: str = Field(default="http://alert-relay:9095", description="Where Alertmanager reaches the relay.")
    runbook_base_url: str = Field(
        default="", description="Put in front of each rule's runbook_url (docs/runbooks.md#...) in notifications."
    )
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    # E-mail (Alertmanager's own SMTP client).
    email_to: list[str] = Field(default_factory=list)
    email_from: str | None = None
    smtp_smarthost: str | None = Field(default=None, description="host:port of the SMTP server.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_require_tls: bool = True
    # A Telegram admin chat (Alertmanager's own telegram_configs).
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: int | None = None
    telegram_api_url: str = "https://api.telegram.org"
    # A Feishu group custom bot with signature verification (through the relay).
    feishu_webhook_url: SecretStr | None = Field(
        default=None, description="https://open.feishu.cn/open-apis/bot/v2/hook/..."
    )
    feishu_secret: SecretStr | None = None
    # An HTTP SMS gateway (through the relay): POST {"to": [...], "text": "..."} with a bearer token.
    sms_gateway_url: str | None = None
    sms_token: SecretStr | None = None
    sms_to: list[str] = Field(default_factory=list)
    # Which severities reach each channel.
    sms_severities: list[str] = Field(default_factory=lambda: ["critical"])


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIBOT_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    environment: Literal["local", "production"] = "local"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    models: list[ModelConfig] = Field(default_factory=list)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    feishu: FeishuConfig = Field(default_factory=FeishuConfig)
    http: HttpSettings = Field(default_factory=HttpSettings)
    core: CoreSettings = Field(default_factory=CoreSettings)
    renderer: RendererSettings = Field(default_factory=RendererSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    edits: EditSettings = Field(default_factory=EditSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls), file_secret_settings)

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        secrets = {
            "telegram.bot_token": self.telegram.bot_token,
            "telegram.webhook.secret_token": self.telegram.webhook.secret_token,
            "feishu.app_secret": self.feishu.app_secret,
            "feishu.verification_token": self.feishu.verification_token,
            "feishu.encrypt_key": self.feishu.encrypt_key,
        } | {f"models[{m.name}].api_key": m.api_key for m in self.models}
        for name, secret in secrets.items():
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name} is a placeholder value; set the real secret for production")
        return self

    @model_validator(mode="after")
    def _no_unsafe_settings_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        allowed = set(self.security.allow_insecure)
        problems = [message for key, message in insecure_production_settings(self) if key not in allowed]
        if problems:
            overrides = ", ".join(key for key, _ in insecure_production_settings(self) if key not in allowed)
            raise ValueError("; ".join(problems) + f" — or accept the risk with security.allow_insecure: [{overrides}]")
        return self

    def llm_model(self) -> ModelConfig:
        return self._pick("llm", self.core.model)

    def llm_models(self) -> list[ModelConfig]:
        """Every llm model, the configured one (`core.model`) first: the order core-llm fails over in."""
        first = self.llm_model()
        return [first, *(m for m in self.models if m.type == "llm" and m is not first)]

    def asr_model(self) -> ModelConfig:
        return self._pick("asr", self.asr.model)

    def _pick(self, kind: str, name: str | None) -> ModelConfig:
        candidates = [m for m in self.models if m.type == kind]
        if name:
            candidates = [m for m in candidates if m.name == name]
        if not candidates:
            wanted = f"named {name!r} " if name else ""
            raise ConfigError(f"no {kind} model {wanted}in the models list; add one to the config file")
        return candidates[0]


def expand_env(value: Any, environ: dict[str, str] | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a loaded YAML document."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"the config file refers to ${{{name}}}, which is not set in the environment")

        return _ENV_REF.sub(repl, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


class _YamlFileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("AIBOT_CONFIG")
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"AIBOT_CONFIG points to {path}, which is not a file")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        return expand_env(data)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or fail with one readable message (never a secret in it)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
