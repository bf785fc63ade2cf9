"""Which comment documents each key of a values.yaml.

PyYAML drops comments, so this reads the lines: a key's comment is the comment block right above
it (or on the `- #` line that opens a list item). Paths are tuples; list items appear as "[]".
"""

from __future__ import annotations

import re

KEY = re.compile(r"^(\s*)(- )?([A-Za-z0-9_.\-/\"]+):( |$)")
ITEM_COMMENT = re.compile(r"^(\s*)- (#.*)$")


def key_comments(text: str) -> dict[tuple[str, ...], str]:
    out = {}
    stack: list[tuple[int, str]] = []  # (indent, key); "[]" marks a list item
    pending: list[str] = []

    def pop(at_or_above: int) -> None:
        while stack and stack[-1][0] >= at_or_above:
            stack.pop()

    for raw in text.split("\n"):
        line = raw.rstrip()
        s = line.strip()
        if not s:
            pending = []
            continue
        if s.startswith("#"):
            if not s.startswith("# yaml-language-server"):
                pending.append(s.lstrip("#").strip())
            continue
        ic = ITEM_COMMENT.match(line)
        if ic:
            d = len(ic.group(1))
            pop(d)
            stack.append((d, "[]"))
            pending.append(ic.group(2).lstrip("#").strip())
            continue
        km = KEY.match(line)
        if not km:
            continue
        d = len(km.group(1))
        if km.group(2):
            pop(d)
            stack.append((d, "[]"))
            d += 2
        pop(d)
        key = km.group(3).strip('"')
        path = (*(k for _, k in stack), key)
        out.setdefault(path, " ".join(pending))
        pending = []
        stack.append((d, key))
    return out
