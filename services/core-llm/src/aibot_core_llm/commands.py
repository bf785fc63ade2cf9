"""Chat commands gated by role: who may see and change what, from inside a chat.

Each command names the least role it needs (a role implies the ones below it); a command the sender
may not use, or one that does not exist, gets an answer saying so, never silence. Changes go through
the access store, so they are audited and reach every replica.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aibot_common import access
from aibot_common.access import AccessState, Change, Role, chat_subject, valid_subject
from aibot_common.envelope import ChatType, Envelope
from aibot_common.settings import ConfigError, load_settings
from aibot_core_llm.quota import UsageCounter


class AccessWriter(Protocol):
    """The access store as commands use it (AccessStore; an in-memory one in tests)."""

    state: AccessState

    async def write(self, change: Change) -> None: ...


@dataclass(frozen=True)
class Context:
    envelope: Envelope
    subject: str | None  # the sender, `telegram:<id>`
    role: Role
    bound: bool
    store: AccessWriter
    usage: UsageCounter
    models: tuple[str, ...]  # the llm models of the config, by name
    configured_model: str  # core.model, or the first llm

    @property
    def actor(self) -> str:
        return self.subject or "unknown"

    @property
    def conversation(self) -> str:
        return self.envelope.key

    def current_model(self) -> str:
        """This chat's model: its own, else the default set by a developer, else the config's."""
        state = self.store.state
        for name in (state.chat_settings(self.conversation).get("model"), state.default_model()):
            if name in self.models:
                return name
        return self.configured_model


Run = Callable[[Context, list[str]], Awaitable[str]]


@dataclass(frozen=True)
class Command:
    role: Role
    usage: str
    run: Run


def parse(text: str) -> tuple[str, list[str]] | None:
    """`/Model@my_bot use gpt` -> ("/model", ["use", "gpt"]); None when the text is no command."""
    if not text.startswith("/"):
        return None
    head, *args = text.split()
    return head.split("@", 1)[0].lower(), args


def _subject(ctx: Context, raw: str) -> str | None:
    """A subject as typed: `telegram:123`, `chat:telegram:-100`, or a bare id on this platform."""
    subject = raw if ":" in raw else f"{ctx.envelope.conversation.platform.value}:{raw}"
    return subject if valid_subject(subject) else None


async def whoami(ctx: Context, _: list[str]) -> str:
    how = "bound to you" if ctx.bound else "everyone's here (open policy)"
    chat = ctx.envelope.conversation.chat_type.value
    who = ctx.subject or "an unknown sender"
    return f"You are {who}, role {ctx.role.value} ({how}).\nThis chat: {ctx.conversation} ({chat})."


async def model(ctx: Context, args: list[str]) -> str:
    current = ctx.current_model()
    if not args or args == ["list"]:
        lines = [f"{'* ' if name == current else '  '}{name}" for name in ctx.models]
        usage = "/model use NAME (this chat), /model default NAME (every chat)"
        return "Models (* is this chat's):\n" + "\n".join(lines) + "\n\n" + usage
    if len(args) == 2 and args[0] in ("use", "default"):
        name = args[1]
        if name not in ctx.models:
            return f"There is no model {name!r}. /model list shows the models."
        if args[0] == "use":
            current_settings = ctx.store.state.chat_settings(ctx.conversation)
            await ctx.store.write(access.set_chat(ctx.actor, ctx.conversation, current_settings, model=name))
            return f"This chat now uses {name}."
        await ctx.store.write(access.set_default_model(ctx.actor, name))
        return f"Every chat without a model of its own now uses {name}."
    return "Usage: /model list | /model use NAME | /model default NAME"


async def system(ctx: Context, args: list[str]) -> str:
    current = ctx.store.state.chat_settings(ctx.conversation)
    if not args:
        prompt = current.get("system_prompt")
        return f"This chat's system prompt:\n{prompt}" if prompt else "This chat uses the default system prompt."
    if args == ["clear"]:
        await ctx.store.write(access.set_chat(ctx.actor, ctx.conversation, current, system_prompt=None))
        return "This chat uses the default system prompt again."
    prompt = ctx.envelope.text().strip().split(None, 1)[1]
    await ctx.store.write(access.set_chat(ctx.actor, ctx.conversation, current, system_prompt=prompt))
    return "This chat's system prompt is set."


async def grant(ctx: Context, args: list[str]) -> str:
    if len(args) not in (2, 3) or (len(args) == 3 and args[2] != "here") or args[1] not in Role.__members__.values():
        return "Usage: /grant SUBJECT admin|developer|user [here]   (SUBJECT: telegram:123, chat:telegram:-100, 123)"
    subject = _subject(ctx, args[0])
    if subject is None:
        return f"{args[0]!r} is not a subject: telegram:<user id>, feishu:<open_id> or chat:<platform>:<chat id>."
    chat = ctx.conversation if len(args) == 3 else None
    await ctx.store.write(access.grant(ctx.actor, subject, Role(args[1]), chat))
    return f"Granted {args[1]} to {subject}" + (" in this chat." if chat else ".")


async def revoke(ctx: Context, args: list[str]) -> str:
    if len(args) not in (1, 2) or (len(args) == 2 and args[1] != "here"):
        return "Usage: /revoke SUBJECT [here]"
    subject = _subject(ctx, args[0])
    if subject is None:
        return f"{args[0]!r} is not a subject: telegram:<user id>, feishu:<open_id> or chat:<platform>:<chat id>."
    chat = ctx.conversation if len(args) == 2 else None
    if (subject, chat) not in ctx.store.state.bindings():
        return f"{subject} has no binding" + (" in this chat." if chat else ".")
    await ctx.store.write(access.revoke(ctx.actor, subject, chat))
    return f"Revoked {subject}'s role" + (" in this chat." if chat else ".")


async def approve(ctx: Context, args: list[str]) -> str:
    if len(args) != 1:
        return "Usage: /approve CODE"
    code = args[0].upper()
    request = ctx.store.state.pairings().get(code)
    if request is None:
        return f"No pending pairing request has the code {code} (it may have expired)."
    await ctx.store.write(access.approve(ctx.actor, code, request))
    return f"Approved: {request['subject']} may now use the bot."


async def stats(ctx: Context, _: list[str]) -> str:
    everyone = ctx.usage.identities()
    users = {k: v for k, v in everyone.items() if not k.startswith("chat:")}
    here = ctx.usage.today(chat_subject(ctx.conversation))
    top = sorted(users.items(), key=lambda item: item[1].tokens, reverse=True)[:10]
    lines = [f"Today (UTC): {sum(u.messages for u in users.values())} messages by {len(users)} users."]
    lines.append(f"This chat: {here.messages} messages, {here.tokens} tokens.")
    lines += [f"{identity}: {u.messages} messages, {u.tokens} tokens" for identity, u in top]
    return "\n".join(lines)


async def status(ctx: Context, _: list[str]) -> str:
    state = ctx.store.state
    policy = ", ".join(f"{p} {t.value}: {state.mode(p, t)}" for p in ("telegram", "feishu") for t in ChatType)
    return (
        f"Policy: {policy}; group members: {state.seed.group_members}.\n"
        f"Bindings: {len(state.bindings())}; pending pairings: {len(state.pairings())}.\n"
        f"Default model: {state.default_model() or ctx.configured_model}; models: {', '.join(ctx.models)}."
    )


async def reload(ctx: Context, _: list[str]) -> str:
    return await reload_access(ctx.store, ctx.actor)


async def reload_access(store: AccessWriter, actor: str) -> str:
    """Read the config file again and put what changed in its access block on the access topic
    (`/reload` in a chat, `POST /v1/reload` on the admin API)."""
    try:
        fresh = load_settings().access
    except ConfigError as exc:
        return f"The config file was not reloaded: {exc}"
    state = store.state
    changes = access.reload_changes(actor, state.seed, fresh)
    for change in changes:
        await store.write(change)
    state.reseed(fresh)  # this replica's seed is the file as it is now; the others follow the records
    done = ", ".join(f"{c.action} {c.target}" for c in changes) or "nothing had changed"
    return (
        f"Reloaded the access block of the config file: {done}. "
        "Quotas and the other settings take effect when the services restart."
    )


COMMANDS: dict[str, Command] = {
    "/whoami": Command(Role.USER, "/whoami - who you are here, and your role", whoami),
    "/model": Command(Role.DEVELOPER, "/model - list the models, or switch this chat's or the default", model),
    "/system": Command(Role.DEVELOPER, "/system - show or set this chat's system prompt", system),
    "/grant": Command(Role.ADMIN, "/grant - give a user or chat a role", grant),
    "/revoke": Command(Role.ADMIN, "/revoke - take a role away", revoke),
    "/approve": Command(Role.ADMIN, "/approve CODE - let a user who asked to pair in", approve),
    "/stats": Command(Role.ADMIN, "/stats - today's usage", stats),
    "/status": Command(Role.ADMIN, "/status - policy, bindings, models", status),
    "/reload": Command(Role.ADMIN, "/reload - apply the config file's access block again", reload),
}
# The handler's own commands (handler.py); /reset in a group is gated by the access gate.
CORE_COMMANDS = ("/start", "/help", "/reset")


def help_lines(role: Role) -> list[str]:
    """The access commands this role may use, for /help."""
    return [c.usage for c in COMMANDS.values() if role.implies(c.role)]


async def run(ctx: Context, name: str, args: list[str]) -> str:
    command = COMMANDS.get(name)
    if command is None:
        return f"I don't know the command {name}. /help lists the commands you can use."
    if not ctx.role.implies(command.role):
        return f"Sorry, {name} needs the {command.role.value} role; you have {ctx.role.value}."
    return await command.run(ctx, args)
