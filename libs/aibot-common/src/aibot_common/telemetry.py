"""Logs, metrics and traces, one way for every service.

- Logs: JSON lines with service, trace id and conversation id; personal data masked and known
  secrets redacted before a line is written; ERROR lines also go to a separate stream.
- Metrics: prometheus-client, every series defined here so the dashboard and alert rules can be
  checked against one list (`METRIC_NAMES`).
- Traces: OpenTelemetry; the W3C trace context rides in Kafka headers from hop to hop.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

from aibot_common import pii

# ---------------------------------------------------------------- metrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

MESSAGES_CONSUMED = Counter("aibot_messages_consumed_total", "Records consumed", ["topic", "group"])
MESSAGES_PRODUCED = Counter("aibot_messages_produced_total", "Records produced", ["topic"])
STAGE_SECONDS = Histogram(
    "aibot_stage_seconds", "Time to handle one record in a stage", ["stage"], buckets=LATENCY_BUCKETS
)
STAGE_ERRORS = Counter("aibot_stage_errors_total", "Records a stage failed to handle", ["stage", "error"])
DEAD_LETTERS = Counter("aibot_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "error"])
END_TO_END_SECONDS = Histogram(
    "aibot_end_to_end_seconds",
    "From the platform event to the delivered reply",
    ["platform", "origin"],
    buckets=LATENCY_BUCKETS,
)
INGRESS_EVENTS = Counter("aibot_ingress_events_total", "Platform events received", ["platform", "outcome"])
LLM_SECONDS = Histogram("aibot_llm_seconds", "LLM call duration", ["model"], buckets=LATENCY_BUCKETS)
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "aibot_llm_first_token_seconds",
    "From the model request to its first streamed token",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
LLM_TOKENS_PER_SECOND = Histogram(
    "aibot_llm_tokens_per_second",
    "Completion tokens a second, after the first",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320),
)
LLM_FAILOVERS = Counter("aibot_llm_failovers_total", "Requests moved on from a model that failed", ["model", "reason"])
LLM_BREAKER_OPEN = Gauge("aibot_llm_breaker_open", "1 while a model's circuit breaker skips it", ["model"])
LLM_TOKENS = Counter("aibot_llm_tokens_total", "Tokens used", ["model", "kind"])
LLM_ERRORS = Counter("aibot_llm_errors_total", "LLM calls that failed", ["model", "reason"])
ASR_SECONDS = Histogram("aibot_asr_seconds", "Transcription duration", ["model"], buckets=LATENCY_BUCKETS)
ASR_AUDIO_SECONDS = Counter("aibot_asr_audio_seconds_total", "Seconds of audio transcribed", ["model"])
PLATFORM_API_CALLS = Counter(
    "aibot_platform_api_calls_total", "Platform API calls by outcome", ["platform", "method", "code"]
)
IN_FLIGHT = Gauge("aibot_in_flight", "Records being handled right now", ["stage"])
CONSUMER_LAG = Gauge("aibot_consumer_lag", "Records waiting per partition", ["topic", "partition", "group"])
ACCESS_REFUSED = Counter(
    "aibot_access_refused_total", "Messages the access policy refused (none reach a model)", ["platform", "reason"]
)
QUOTA_EXCEEDED = Counter(
    "aibot_quota_exceeded_total", "Messages refused because a quota was used up", ["scope", "limit"]
)
USER_MESSAGES = Counter("aibot_user_messages_total", "Messages from users", ["platform"])
# Exported by the archiver's usage view (usage.py) for the partitions it owns: `sum` over replicas is
# the cluster's count of distinct users today (UTC).
ACTIVE_USERS = Gauge("aibot_active_users", "Distinct users today (UTC), in this replica's partitions", ["platform"])
# Exported by the lag exporter (`ai-bot lag --serve`), not by the services: figures from the broker's
# committed offsets and high watermarks stay true when every consumer of a group is down.
CONSUMER_GROUP_LAG = Gauge("aibot_consumer_group_lag", "Records waiting in a topic for a group", ["topic", "group"])
CONSUMER_GROUP_MEMBERS = Gauge("aibot_consumer_group_members", "Consumers in the group", ["group"])
CONSUMER_GROUP_NO_CONSUMER = Gauge(
    "aibot_consumer_group_no_consumer", "1 when no consumer is running in the group", ["group"]
)
# Refused before any handler ran (rate limit, body size): counted, never logged one line each, so a
# flood cannot become a log flood.
HTTP_REFUSED = Counter("aibot_http_refused_total", "HTTP requests refused by the request guard", ["service", "reason"])
LAG_LAST_REFRESH = Gauge(
    "aibot_lag_last_refresh_timestamp_seconds", "When the lag exporter last read the broker successfully"
)
# 1 while the lag exporter's last read of the broker worked, 0 after a failed one: the "broker down"
# alert that inhibits the stage-down alerts it causes.
KAFKA_UP = Gauge("aibot_kafka_up", "1 when the lag exporter's last read of the broker succeeded")

METRIC_NAMES = {
    m._name  # type: ignore[attr-defined]
    for m in (
        MESSAGES_CONSUMED,
        MESSAGES_PRODUCED,
        STAGE_SECONDS,
        STAGE_ERRORS,
        DEAD_LETTERS,
        END_TO_END_SECONDS,
        INGRESS_EVENTS,
        LLM_SECONDS,
        LLM_FIRST_TOKEN_SECONDS,
        LLM_TOKENS_PER_SECOND,
        LLM_FAILOVERS,
        LLM_BREAKER_OPEN,
        LLM_TOKENS,
        LLM_ERRORS,
        ASR_SECONDS,
        ASR_AUDIO_SECONDS,
        PLATFORM_API_CALLS,
        IN_FLIGHT,
        CONSUMER_LAG,
        USER_MESSAGES,
        ACCESS_REFUSED,
        QUOTA_EXCEEDED,
        ACTIVE_USERS,
        CONSUMER_GROUP_LAG,
        CONSUMER_GROUP_MEMBERS,
        CONSUMER_GROUP_NO_CONSUMER,
        LAG_LAST_REFRESH,
        HTTP_REFUSED,
        KAFKA_UP,
    )
}


# ---------------------------------------------------------------- logs

conversation_var: ContextVar[str | None] = ContextVar("conversation", default=None)

_secrets: set[str] = set()
# Fields the formatter itself fills with ids: never personal data, and masking digit runs in them
# would break the log-to-trace correlation they exist for.
_STRUCTURAL_FIELDS = frozenset({"trace_id", "span_id", "conversation_id", "service", "level", "name"})


class LogThrottle:
    """At most one log line per `interval_s` for a kind of event an outsider can repeat at will
    (refused webhook calls): each line says how many were left out, the metric counts every one."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next = 0.0
        self._skipped = 0

    def allow(self) -> int | None:
        """None: leave this one out; else how many were left out before it (log them with it)."""
        now = self._clock()
        if now < self._next:
            self._skipped += 1
            return None
        self._next = now + self._interval_s
        skipped, self._skipped = self._skipped, 0
        return skipped


def register_secret(value: str | None) -> None:
    """Never print this value: it is replaced by [secret] in every log line."""
    if value and len(value) >= 6:
        _secrets.add(value)


def mask(text: str) -> str:
    """Registered secrets, then everything the personal-data and secret detectors (pii.py) see,
    loosely: a log line would rather lose an order number than keep a card number."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return pii.mask_for_logs(text)


def _mask_value(value: Any) -> Any:
    """Mask strings inside `extra` values too (lists, dicts), not only top-level fields."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_value(v) for v in value]
    if value is None or isinstance(value, int | float):
        return value
    # Anything else is written as its str() (an exception, a URL object): mask that text now.
    return mask(str(value))


class _MaskingJsonFormatter(JsonFormatter):
    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v if k in _STRUCTURAL_FIELDS else _mask_value(v) for k, v in log_data.items()}

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname
        log_data["service"] = _service_name
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            log_data["trace_id"] = format(span.trace_id, "032x")
            log_data["span_id"] = format(span.span_id, "016x")
        conversation = conversation_var.get()
        if conversation:
            log_data["conversation_id"] = conversation


class _MaskingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


_service_name = "aibot"


def setup_logging(service: str, level: str = "INFO", fmt: str = "json", error_log_path: str | None = None) -> None:
    global _service_name
    _service_name = service
    if fmt == "json":
        formatter: logging.Formatter = _MaskingJsonFormatter("%(asctime)s %(name)s %(message)s")
    else:
        formatter = _MaskingTextFormatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(formatter)
    # Errors also go to stderr (and a file if asked): a separate stream to store and alert on.
    errors: logging.Handler = (
        logging.FileHandler(error_log_path) if error_log_path else logging.StreamHandler(sys.stderr)
    )
    errors.setLevel(logging.ERROR)
    errors.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [out, errors]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------- traces

tracer = trace.get_tracer("aibot")


def setup_tracing(service: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None) -> None:
    """Install a tracer provider. Without an endpoint (or exporter) spans are not recorded: they
    still get trace ids, which travel in Kafka headers and appear in logs, but cost next to nothing
    (a recorded span allocates its attribute/event lists, a measurable share of ingress CPU)."""
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    sampler = ParentBased(ALWAYS_ON) if exporter is not None else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global tracer
    tracer = trace.get_tracer("aibot")


def inject_trace_headers() -> list[tuple[str, bytes]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


@contextmanager
def consume_span(
    name: str, headers: Sequence[tuple[str, bytes]] | None, attributes: dict[str, Any] | None = None
) -> Iterator[trace.Span]:
    """A CONSUMER span that continues the trace whose context came in the record's headers."""
    carrier = {k: v.decode(errors="replace") for k, v in headers or ()}
    parent = propagate.extract(carrier)
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=SpanKind.CONSUMER, attributes=attributes or {}) as span:
            yield span
    finally:
        otel_context.detach(token)


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        try:
            yield current
        except Exception as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
