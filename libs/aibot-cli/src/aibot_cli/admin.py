"""`ai-bot admin`: the operator's access commands, written straight to the access topic.

They need only Kafka (the configuration's `kafka:` block), not a running service: that is how the
first admin token is made, and how an operator approves or grants when no admin can chat yet. Every
change is audited with the actor `cli:<login name>`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import time

from aibot_common import access
from aibot_common.access import Role, read_state, valid_subject, write_changes
from aibot_common.settings import Settings, load_settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container with an arbitrary uid)
        return "cli:unknown"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    actor = _actor()
    if args.admin_command == "token" and args.action in ("list", "revoke"):
        return _tokens(args, settings, actor)
    if args.admin_command == "token":
        if not args.role:
            print("ai-bot: token create needs --role admin|developer|user")
            return 2
        token = access.new_token()
        name = args.name or f"{args.role}-{time.strftime('%Y%m%d%H%M%S')}"
        asyncio.run(write_changes(settings.kafka, [access.create_token(actor, token, Role(args.role), name)]))
        print(f"token {name!r} with role {args.role} (shown once; only its hash is stored):\n{token}")
        return 0
    if args.admin_command == "approve":
        state = asyncio.run(read_state(settings.kafka, settings.access))
        code = args.code.upper()
        request = state.pairings().get(code)
        if request is None:
            print(f"ai-bot: no pending pairing request has the code {code} (it may have expired)")
            return 1
        asyncio.run(write_changes(settings.kafka, [access.approve(actor, code, request)]))
        print(f"approved: {request['subject']} may now use the bot")
        return 0
    if args.admin_command == "pairings":
        state = asyncio.run(read_state(settings.kafka, settings.access))
        for code, request in sorted(state.pairings().items()):
            left = int(request["expires_at"] - time.time()) // 60
            print(f"{code}  {request['subject']:30} {request['conversation']:30} expires in {left} min")
        return 0
    if not valid_subject(args.subject):
        print(f"ai-bot: {args.subject!r} is not telegram:<user id>, feishu:<open_id> or chat:<platform>:<chat id>")
        return 2
    if args.admin_command == "grant":
        change = access.grant(actor, args.subject, Role(args.role), args.chat)
    else:
        change = access.revoke(actor, args.subject, args.chat)
    asyncio.run(write_changes(settings.kafka, [change]))
    print(f"{args.admin_command}: {args.subject}" + (f" {args.role}" if args.admin_command == "grant" else ""))
    return 0


def _tokens(args: argparse.Namespace, settings: Settings, actor: str) -> int:
    state = asyncio.run(read_state(settings.kafka, settings.access))
    tokens = {
        key.removeprefix("token/"): value
        for key, value in state.records.items()
        if key.startswith("token/") and not value.get("revoked")
    }
    if args.action == "list":
        for value in sorted(tokens.values(), key=lambda v: v.get("created_at", "")):
            name, created, by = value.get("name", "?"), value.get("created_at"), value.get("by")
            print(f"{name:30} {value['role']:10} created {created} by {by}")
        return 0
    if not args.name:
        print("ai-bot: token revoke needs --name (see ai-bot admin token list)")
        return 2
    found = [digest for digest, value in tokens.items() if value.get("name") == args.name]
    if not found:
        print(f"ai-bot: no token named {args.name!r}")
        return 1
    asyncio.run(write_changes(settings.kafka, [access.revoke_token(actor, digest, args.name) for digest in found]))
    print(f"revoked {len(found)} token(s) named {args.name!r}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="access control: admin API tokens, pairing approvals, role bindings")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    token = commands.add_parser("token", help="create (printed once), list or revoke admin API tokens")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("--role", choices=[r.value for r in Role], help="the token's role (create)")
    token.add_argument("--name", help="a name for the audit trail (create; default: role and time), or to revoke")
    approve = commands.add_parser("approve", help="approve a pairing code a user was given")
    approve.add_argument("code")
    commands.add_parser("pairings", help="list the pending pairing requests")
    grant = commands.add_parser("grant", help="bind a role to a user or chat")
    grant.add_argument("subject", help="telegram:<user id>, feishu:<open_id> or chat:<platform>:<chat id>")
    grant.add_argument("role", choices=[r.value for r in Role])
    grant.add_argument("--chat", help="only in this conversation (e.g. telegram:-100123)")
    revoke = commands.add_parser("revoke", help="take a binding away")
    revoke.add_argument("subject")
    revoke.add_argument("--chat")
    admin.set_defaults(func=run)
