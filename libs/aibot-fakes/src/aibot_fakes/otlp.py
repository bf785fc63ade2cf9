"""A trace collector for tests: a real OTLP/HTTP receiver that keeps the spans it is sent.

Services export to it exactly as they would to an OpenTelemetry Collector (`observability.otlp_endpoint`
= `<url>/v1/traces`): ExportTraceServiceRequest in protobuf, optionally gzipped. (OTLP's JSON encoding,
which the Python SDK never sends, is refused with 415: its hex ids differ from protobuf's JSON mapping.)
Tests then ask which spans one trace holds and which service (the `service.name` resource attribute)
sent each.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from aibot_fakes.server import BackgroundServer

PROTOBUF = "application/x-protobuf"
SPAN_KINDS = {
    SpanProto.SPAN_KIND_INTERNAL: "internal",
    SpanProto.SPAN_KIND_SERVER: "server",
    SpanProto.SPAN_KIND_CLIENT: "client",
    SpanProto.SPAN_KIND_PRODUCER: "producer",
    SpanProto.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits, as in a traceparent header and in the services' log lines
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "unset"
    start_ns: int = 0
    end_ns: int = 0


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, "unspecified"),
                        service=service,
                        attributes=_attributes(span.attributes),
                        status={0: "unset", 1: "ok", 2: "error"}.get(span.status.code, "unset"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return spans


class FakeOTLP:
    """Receives traces on POST /v1/traces and keeps every span, in arrival order."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._arrived = asyncio.Event()
        self.app = self._build_app()
        self._server = BackgroundServer(self.app, host=host, port=port)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def endpoint(self) -> str:
        """What a service's observability.otlp_endpoint should be."""
        return f"{self.url}/v1/traces"

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def find(self, name: str, **attributes: Any) -> list[ReceivedSpan]:
        return [
            s for s in self.spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    async def wait_for(self, condition: Any, timeout: float = 30.0) -> None:
        """Wait until condition() is true; it is re-checked whenever spans arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met after {timeout}s ({len(self.spans)} spans received)")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))

    def _build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/v1/traces")
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != PROTOBUF:
                return Response(status_code=415, content=f"unsupported content type {content_type!r}")
            message = ExportTraceServiceRequest()
            try:
                message.ParseFromString(body)
            except DecodeError as exc:
                return Response(status_code=400, content=f"cannot decode the request: {exc}")
            self.spans.extend(decode(message))
            self.requests += 1
            self._arrived.set()
            return Response(content=ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

        return app
