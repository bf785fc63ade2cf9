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
from aibot_common.settings import load_settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container with an arbitrary uid)
        return "cli:unknown"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    actor = _actor()
    if args.admin_command == "token":
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="access control: admin API tokens, pairing approvals, role bindings")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    token = commands.add_parser("token", help="create an admin API token (printed once)")
    token.add_argument("action", choices=["create"])
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--name", help="a name for the audit trail (default: role and time)")
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
