"""The access gate in front of core-llm's handler: policy, commands, model choice and quotas.

Per message, in order: a re-delivery goes straight to the handler (which answers it the same way
again); a sender the policy refuses is told once and nothing reaches the model; the access commands
run here, gated by role; the quotas are checked; then the handler runs with this chat's model and
system prompt, behind a meter that counts the tokens, and the usage is counted cluster-wide.

Enforced in core-llm rather than at the ingresses because this is where the model is called: every
path to a model (text, transcribed voice, either platform) passes here, and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aibot_common import access, telemetry
from aibot_common.access import Decision, chat_subject, user_subject
from aibot_common.envelope import ChatType, Envelope, TextPart
from aibot_common.outcome import NOTHING, Outcome
from aibot_common.settings import AccessSettings, CoreSettings
from aibot_core_llm import commands
from aibot_core_llm.commands import AccessWriter, Context
from aibot_core_llm.handler import HELP_TEXT, ConversationState, _answer, estimate_tokens, handle
from aibot_core_llm.llm import ChatModel, Completion
from aibot_core_llm.quota import UsageCounter

log = logging.getLogger(__name__)

REFUSED_PRIVATE = (
    "Sorry, this bot is private and you are not on its list of users. "
    "If you should be, ask an administrator to add you as {subject}."
)
REFUSED_PAIRING = (
    "This bot needs an administrator's approval before it answers you. Your pairing code is {code} "
    "(valid for {minutes} minutes): send it to an administrator, who approves it with /approve {code}. "
    "Then write to me again."
)
REFUSED_GROUP = "Sorry, I only answer approved users in this group. An administrator can add you as {subject}."
RESET_REFUSED = "Only a user with a role bound in this group can reset its history."
FORGET_REFUSED = "Only a user with a role bound in this group can erase its history."


# The model for one request, made from the name of the chat's model.
ModelFor = Callable[[str], ChatModel]


class MeteredModel:
    """The chat's model, counting the tokens of every call (the provider's figures, else an estimate)."""

    def __init__(self, model: ChatModel) -> None:
        self.name = model.name
        self._model = model
        self.calls = 0
        self.tokens = 0

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        completion = await self._model.complete(messages)
        self.calls += 1
        prompt = completion.prompt_tokens
        if prompt is None:
            prompt = sum(estimate_tokens(m["content"]) for m in messages)
        answer = completion.completion_tokens
        self.tokens += prompt + (answer if answer is not None else estimate_tokens(completion.text))
        return completion


@dataclass
class AccessGate:
    store: AccessWriter
    usage: UsageCounter
    models: dict[str, ChatModel]  # every llm model of the config, by name
    configured_model: str
    core: CoreSettings
    settings: AccessSettings

    def may_forget(self, envelope: Envelope) -> str | None:
        """A group's history is every member's: erasing it needs a role bound there, as /reset does."""
        if envelope.conversation.chat_type is not ChatType.GROUP:
            return None
        decision = self.store.state.decide(envelope)
        return None if decision.allowed and decision.bound else FORGET_REFUSED

    async def __call__(
        self, envelope: Envelope, state: ConversationState, model_for: ModelFor | None = None
    ) -> Outcome:
        """`model_for` makes the model of a chat's choice for this one request (core-llm's: the
        failover pool led by it, streaming); without it the chat's model is called as it is."""
        if state.seen(envelope.id):
            return await handle(envelope, state, self.models[self.configured_model], self.core)
        decision = self.store.state.decide(envelope)
        if not decision.allowed:
            return await self._refuse(envelope, state, decision)
        assert decision.role is not None
        subject = user_subject(envelope)
        ctx = Context(
            envelope,
            subject,
            decision.role,
            decision.bound,
            self.store,
            self.usage,
            tuple(self.models),
            self.configured_model,
        )
        parsed = commands.parse(envelope.text().strip())
        if parsed is not None:
            name, args = parsed
            if name == "/help":
                extra = commands.help_lines(decision.role)
                return _answer(envelope, state, HELP_TEXT + ("\n" + "\n".join(extra) if extra else ""))
            if name == "/reset" and envelope.conversation.chat_type is ChatType.GROUP and not decision.bound:
                return _answer(envelope, state, RESET_REFUSED)
            if name not in commands.CORE_COMMANDS:
                return _answer(envelope, state, await commands.run(ctx, name, args))
        elif not any(isinstance(p, TextPart) and p.text.strip() for p in envelope.parts):
            # No text to send to a model (an image, an empty message): the handler explains; no quota used.
            return await self._handle(envelope, state, ctx, model_for)
        else:
            exceeded = self.usage.check(self.settings, decision.role, subject, chat_subject(envelope.key))
            if exceeded is not None:
                log.info("quota exceeded for %s: %s %s", envelope.key, exceeded.scope, exceeded.limit)
                return _answer(envelope, state, exceeded.text())
        return await self._handle(envelope, state, ctx, model_for)

    async def _handle(
        self, envelope: Envelope, state: ConversationState, ctx: Context, model_for: ModelFor | None = None
    ) -> Outcome:
        prompt = self.store.state.chat_settings(envelope.key).get("system_prompt")
        core = self.core.model_copy(update={"system_prompt": prompt}) if prompt else self.core
        name = ctx.current_model()
        metered = MeteredModel(model_for(name) if model_for is not None else self.models[name])
        outcome = await handle(envelope, state, metered, core)
        if metered.calls:
            identities = [chat_subject(envelope.key)] + ([ctx.subject] if ctx.subject else [])
            await self.usage.add(identities, metered.tokens)
        return outcome

    async def _refuse(self, envelope: Envelope, state: ConversationState, decision: Decision) -> Outcome:
        platform = envelope.conversation.platform.value
        telemetry.ACCESS_REFUSED.labels(platform=platform, reason=decision.reason).inc()
        subject = user_subject(envelope)
        if subject is None:
            return NOTHING  # no one to tell, nor to approve
        told = self.store.state.noticed(envelope.key, subject)
        pending = self.store.state.pairings()
        code = told.get("code") if told else None
        still_pending = code is not None and code in pending
        repeated = told is not None and told.get("envelope_id") != envelope.id
        if repeated and (decision.reason != "pairing" or still_pending):
            return NOTHING  # told once already: one polite answer, not one per message
        if decision.reason == "pairing":
            code = code if still_pending else access.new_pairing_code()
            text = REFUSED_PAIRING.format(code=code, minutes=self.settings.pairing_ttl_s // 60)
        else:
            code = None
            text = (REFUSED_GROUP if decision.reason == "group" else REFUSED_PRIVATE).format(subject=subject)
        if told is None or told.get("envelope_id") != envelope.id:
            await self.store.write(access.notice(envelope.key, subject, envelope.id, code, self.settings.pairing_ttl_s))
        log.info("refused %s in %s (%s)", subject, envelope.key, decision.reason)
        return _answer(envelope, state, text)
