"""The admin HTTP API: bindings, pairing requests, policy, chats and per-user usage.

Served by core-llm on its own port (the catalog's `admin_port`), never on the webhook ingress: the
chart's Service exposes it inside the cluster only. Every call carries a bearer token created with
`ai-bot admin token create --role ROLE`; only the token's SHA-256 is stored (in the access topic),
so every replica knows every token and a leaked topic leaks no token. Authorisation comes first and
its answers are fixed (401 "unauthorized", 403 "forbidden"): they never depend on the resource, so
they never tell whether a user, code or chat exists. Every authorised call is audited in the access
topic; a refused one is logged only, so that no one without a token can write to the topic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from aibot_common import access
from aibot_common.access import Change, Role, hash_token, valid_subject
from aibot_common.envelope import ChatType
from aibot_common.service import create_service_app
from aibot_common.settings import SecuritySettings
from aibot_core_llm.commands import AccessWriter, reload_access
from aibot_core_llm.quota import UsageCounter

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="A token from `ai-bot admin token create --role ROLE`.")


class Binding(BaseModel):
    subject: str = Field(description="telegram:<user id>, feishu:<open_id>, or chat:<platform>:<chat id>")
    role: Role
    chat: str | None = Field(default=None, description="Only in this conversation, e.g. telegram:-100123")


class PairingRequest(BaseModel):
    code: str
    subject: str
    conversation: str
    expires_at: float


class PolicyUpdate(BaseModel):
    mode: Literal["open", "allowlist", "pairing"]


class ChatUpdate(BaseModel):
    model: str | None = None
    system_prompt: str | None = None


class UsageFigures(BaseModel):
    messages: int
    tokens: int


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


def caller(minimum: Role) -> Callable[..., Awaitable[Caller]]:
    """The dependency that lets a call through with a token of `minimum` or a higher role."""

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        store: AccessWriter = request.app.state.access
        stored = store.state.records.get(f"token/{hash_token(credentials.credentials)}") if credentials else None
        if stored is None or stored.get("revoked"):
            log.warning("admin API: refused an unauthenticated %s %s", request.method, request.url.path)
            raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        who = Caller(stored.get("name", "unnamed"), Role(stored["role"]))
        if not who.role.implies(minimum):
            log.warning("admin API: %s (%s) may not %s %s", who.actor, who.role, request.method, request.url.path)
            raise HTTPException(403, "forbidden")
        return who

    return check


Admin = Annotated[Caller, Depends(caller(Role.ADMIN))]
Developer = Annotated[Caller, Depends(caller(Role.DEVELOPER))]
User = Annotated[Caller, Depends(caller(Role.USER))]


def create_admin_app(
    store: AccessWriter,
    usage: UsageCounter,
    models: tuple[str, ...],
    ready: Callable[[], bool],
    security: SecuritySettings | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield  # the access store and counters belong to core-llm's own lifespan

    # The shared factory, so the service-wide middleware (body size, rate limit) applies here too.
    app = create_service_app("core-llm-admin", lifespan, ready, security)
    app.title = "ai-bot admin API"
    app.state.access = store

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    async def audited(who: Caller, action: str, target: str, change: Change | None = None) -> None:
        """Write the change (audited), or for a read an audit entry of its own."""
        await store.write(change or Change(who.actor, action, target, ()))

    @app.get("/v1/bindings", response_model=list[Binding], tags=["bindings"])
    async def list_bindings(who: Admin) -> list[Binding]:
        await audited(who, "read", "bindings")
        return [Binding(subject=s, chat=c, role=r) for (s, c), r in sorted(store.state.bindings().items(), key=str)]

    @app.put("/v1/bindings", response_model=Binding, tags=["bindings"])
    async def put_binding(binding: Binding, who: Admin) -> Binding:
        if not valid_subject(binding.subject):
            raise HTTPException(422, "subject must be telegram:<id>, feishu:<open_id> or chat:<platform>:<chat id>")
        change = access.grant(who.actor, binding.subject, binding.role, binding.chat)
        await audited(who, "grant", binding.subject, change)
        return binding

    @app.delete("/v1/bindings/{subject}", status_code=204, tags=["bindings"])
    async def delete_binding(subject: str, who: Admin, chat: str | None = None) -> Response:
        if (subject, chat) not in store.state.bindings():
            raise HTTPException(404, "no such binding")
        await audited(who, "revoke", subject, access.revoke(who.actor, subject, chat))
        return Response(status_code=204)

    @app.get("/v1/pairings", response_model=list[PairingRequest], tags=["pairing"])
    async def list_pairings(who: Admin) -> list[PairingRequest]:
        await audited(who, "read", "pairings")
        return [
            PairingRequest(code=code, subject=r["subject"], conversation=r["conversation"], expires_at=r["expires_at"])
            for code, r in sorted(store.state.pairings().items())
        ]

    @app.post("/v1/pairings/{code}/approve", response_model=Binding, tags=["pairing"])
    async def approve_pairing(code: str, who: Admin) -> Binding:
        request = store.state.pairings().get(code.upper())
        if request is None:
            raise HTTPException(404, "no pending pairing request with this code")
        await audited(who, "approve", request["subject"], access.approve(who.actor, code.upper(), request))
        return Binding(subject=request["subject"], role=Role.USER)

    @app.delete("/v1/pairings/{code}", status_code=204, tags=["pairing"])
    async def reject_pairing(code: str, who: Admin) -> Response:
        if code.upper() not in store.state.pairings():
            raise HTTPException(404, "no pending pairing request with this code")
        await audited(who, "reject", code.upper(), access.reject(who.actor, code.upper()))
        return Response(status_code=204)

    @app.post("/v1/reload", tags=["policy"])
    async def reload_config(who: Admin) -> dict[str, str]:
        """Apply what changed in the config file's access block (bindings, policy) cluster-wide."""
        result = await reload_access(store, who.actor)
        if result.startswith("The config file was not reloaded"):
            raise HTTPException(422, result)
        return {"result": result}

    @app.get("/v1/policy", tags=["policy"])
    async def get_policy(who: Admin) -> dict[str, Any]:
        await audited(who, "read", "policy")
        state = store.state
        modes = {p: {t.value: state.mode(p, t) for t in ChatType} for p in ("telegram", "feishu")}
        return {"policy": modes, "group_members": state.seed.group_members}

    @app.put("/v1/policy/{platform}/{chat_type}", tags=["policy"])
    async def put_policy(
        platform: Literal["telegram", "feishu"], chat_type: ChatType, update: PolicyUpdate, who: Admin
    ) -> dict[str, str]:
        change = access.set_policy(who.actor, platform, chat_type.value, update.mode)
        await audited(who, "policy", f"{platform}/{chat_type.value}", change)
        return {"platform": platform, "chat_type": chat_type.value, "mode": update.mode}

    @app.get("/v1/chats/{conversation}", response_model=ChatUpdate, tags=["chats"])
    async def get_chat(conversation: str, who: Developer) -> ChatUpdate:
        await audited(who, "read", conversation)
        return ChatUpdate(**store.state.chat_settings(conversation))

    @app.put("/v1/chats/{conversation}", response_model=ChatUpdate, tags=["chats"])
    async def put_chat(conversation: str, update: ChatUpdate, who: Developer) -> ChatUpdate:
        if update.model is not None and update.model not in models:
            raise HTTPException(422, f"no model {update.model!r}; the models are {', '.join(models)}")
        current = store.state.chat_settings(conversation)
        changes = update.model_dump(exclude_unset=True)
        await audited(who, "chat", conversation, access.set_chat(who.actor, conversation, current, **changes))
        return ChatUpdate(**store.state.chat_settings(conversation))

    @app.get("/v1/usage", response_model=dict[str, UsageFigures], tags=["usage"])
    async def get_usage(who: Admin) -> dict[str, UsageFigures]:
        await audited(who, "read", "usage")
        return {k: UsageFigures(messages=u.messages, tokens=u.tokens) for k, u in usage.identities().items()}

    @app.get("/v1/usage/{subject}", response_model=UsageFigures, tags=["usage"])
    async def get_user_usage(subject: str, who: Admin) -> UsageFigures:
        await audited(who, "read", f"usage/{subject}")
        today = usage.today(subject)
        return UsageFigures(messages=today.messages, tokens=today.tokens)

    @app.get("/v1/audit", tags=["audit"])
    async def get_audit(who: Admin, limit: int = 100) -> list[dict[str, Any]]:
        entries = store.state.audit[-max(1, min(limit, 1000)) :]
        await audited(who, "read", "audit")
        return entries

    @app.get("/v1/whoami", tags=["tokens"])
    async def whoami(who: User) -> dict[str, str]:
        return {"token": who.name, "role": who.role.value}

    return app
