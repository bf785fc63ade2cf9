"""Telegram text formatting as the Bot API server applies it: parse_mode or entities → plain text + entities.

The fake must refuse what Telegram refuses (a renderer that forgets to escape a '.' in MarkdownV2 has to
see "can't parse entities" in tests, not in production), and it must count the length the way Telegram
does: after parsing, in UTF-16 code units. The rules follow the Bot API documentation and the behaviour of
TDLib's parsers (td/telegram/MessageEntity.cpp), which python-telegram-bot does not implement (it only
escapes). Offsets and lengths are UTF-16 code units, as in the Bot API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

MAX_TEXT_UTF16 = 4096
MARKDOWN_V2_RESERVED = "_*[]()~`>#+-=|{}.!"

ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)

# TDLib's names for entity types, as they appear in its error messages.
_TD_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "pre_code": "PreCode",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
    "blockquote": "BlockQuote",
    "expandable_blockquote": "ExpandableBlockQuote",
}


class EntityParseError(ValueError):
    """The text does not parse in the given parse_mode; str() is Telegram's wording after "can't parse entities: "."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _char_u16(c: str) -> int:
    return 2 if ord(c) > 0xFFFF else 1


@dataclass
class _Open:
    kind: str  # a key of _TD_NAMES
    offset: int  # UTF-16 offset in the output
    byte_offset: int  # in the input, for error messages
    argument: str = ""
    begin: int = 0  # index into the output characters, for `[url]` links whose text is the URL


def _reserved_error(c: str) -> EntityParseError:
    return EntityParseError(f"Character '{c}' is reserved and must be escaped with the preceding '\\'")


def _unclosed_error(opened: _Open) -> EntityParseError:
    name = _TD_NAMES[opened.kind]
    return EntityParseError(f"Can't find end of {name} entity at byte offset {opened.byte_offset}")


_URL_RE = re.compile(r"^(?:(?:https?|ftp|tg)://\S+|[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?:[/?#]\S*)?)$")


def _valid_url(url: str) -> bool:
    return bool(_URL_RE.match(url))


def _entity(kind: str, offset: int, length: int, argument: str) -> dict[str, Any]:
    if kind == "pre_code":
        return {"type": "pre", "offset": offset, "length": length, "language": argument}
    entity: dict[str, Any] = {"type": kind, "offset": offset, "length": length}
    if kind == "text_link":
        entity["url"] = argument
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = argument
    return entity


class _MarkdownV2:
    """One pass over the text, keeping a stack of open entities, the way TDLib's parse_markdown_v2 does."""

    def __init__(self, text: str) -> None:
        self.src = text
        self.out: list[str] = []
        self.u16 = 0
        self.stack: list[_Open] = []
        self.quote: _Open | None = None
        self.entities: list[dict[str, Any]] = []

    def at(self, i: int) -> str:
        return self.src[i] if i < len(self.src) else ""

    def emit(self, c: str) -> None:
        self.out.append(c)
        self.u16 += _char_u16(c)

    def close(self, opened: _Open) -> None:
        if self.u16 != opened.offset:  # empty entities are dropped, not refused
            self.entities.append(_entity(opened.kind, opened.offset, self.u16 - opened.offset, opened.argument))

    def in_code(self) -> bool:
        return bool(self.stack) and self.stack[-1].kind in ("code", "pre", "pre_code")

    def close_quote(self) -> None:
        assert self.quote is not None
        if self.stack:
            raise _unclosed_error(self.stack[-1])
        # The quote ends before the newline that ended its last line.
        end = self.u16 - (1 if self.out and self.out[-1] == "\n" else 0)
        if end > self.quote.offset:
            self.entities.append(_entity(self.quote.kind, self.quote.offset, end - self.quote.offset, ""))
        self.quote = None

    def line_start(self, i: int) -> int:
        """Blockquote markers at the start of a line; returns how many characters they used."""
        src = self.src
        if self.in_code():
            return 0
        if self.quote is None and not self.stack and src.startswith("**>", i):
            self.quote = _Open("expandable_blockquote", self.u16, _byte_offset(src, i))
            return 3
        if src.startswith(">", i) and (self.quote is not None or not self.stack):
            if self.quote is None:
                self.quote = _Open("blockquote", self.u16, _byte_offset(src, i))
            return 1
        if self.quote is not None:
            self.close_quote()
        return 0

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        src = self.src
        i = 0
        while i < len(src):
            if i == 0 or src[i - 1] == "\n":
                used = self.line_start(i)
                if used:
                    i += used
                    continue
            i = self.step(i)
        if self.stack:
            raise _unclosed_error(self.stack[-1])
        if self.quote is not None:
            self.close_quote()
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.out), self.entities

    def step(self, i: int) -> int:
        c = self.src[i]
        nxt = self.at(i + 1)
        if c == "\\" and nxt and 0 < ord(nxt) <= 126:
            self.emit(nxt)
            return i + 2
        reserved = "`" if self.in_code() else MARKDOWN_V2_RESERVED
        if c not in reserved:
            self.emit(c)
            return i + 1
        if self.ends_expandable_quote(i):
            self.close_quote()
            return i + 2
        if self.stack and self.ends(self.stack[-1].kind, i):
            return self.end(i)
        return self.begin(i)

    def ends_expandable_quote(self, i: int) -> bool:
        """`||` at the end of a line of a `**>` quote closes it, unless it closes a spoiler."""
        if self.quote is None or self.quote.kind != "expandable_blockquote" or not self.src.startswith("||", i):
            return False
        closes_spoiler = bool(self.stack) and self.stack[-1].kind == "spoiler"
        return not closes_spoiler and self.at(i + 2) in ("", "\n")

    def ends(self, kind: str, i: int) -> bool:
        c, nxt = self.src[i], self.at(i + 1)
        return {
            "bold": c == "*",
            "italic": c == "_" and nxt != "_",
            "underline": c == "_" and nxt == "_",
            "strikethrough": c == "~",
            "spoiler": c == "|" and nxt == "|",
            "code": c == "`",
            "pre": self.src.startswith("```", i),
            "pre_code": self.src.startswith("```", i),
            "text_link": c == "]",
            "custom_emoji": c == "]",
        }[kind]

    def begin(self, i: int) -> int:
        src, c = self.src, self.src[i]
        start = i
        argument = ""
        if c == "_" and self.at(i + 1) == "_":
            kind, i = "underline", i + 1
        elif c in "_*~[":
            kind = {"_": "italic", "*": "bold", "~": "strikethrough", "[": "text_link"}[c]
        elif c == "|" and self.at(i + 1) == "|":
            kind, i = "spoiler", i + 1
        elif c == "!" and self.at(i + 1) == "[":
            kind, i = "custom_emoji", i + 1
        elif c == "`" and src.startswith("```", i):
            kind, i = "pre", i + 3
            lang_end = i
            while lang_end < len(src) and not src[lang_end].isspace() and src[lang_end] != "`":
                lang_end += 1
            if lang_end != i and lang_end < len(src) and src[lang_end] != "`":
                kind, argument, i = "pre_code", src[i:lang_end], lang_end
            # One line break right after the opening fence is not part of the code.
            if src[i : i + 2] in ("\r\n", "\n\r"):
                i += 2
            elif self.at(i) in ("\n", "\r"):
                i += 1
            i -= 1
        elif c == "`":
            kind = "code"
        else:
            raise _reserved_error(c)
        self.stack.append(_Open(kind, self.u16, _byte_offset(src, start), argument, len(self.out)))
        return i + 1

    def end(self, i: int) -> int:
        src = self.src
        opened = self.stack.pop()
        kind = opened.kind
        if kind in ("underline", "spoiler"):
            i += 1
        elif kind in ("pre", "pre_code"):
            i += 2
        elif kind in ("text_link", "custom_emoji"):
            url = ""
            if self.at(i + 1) != "(":
                if kind == "custom_emoji":
                    raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
                url = "".join(self.out[opened.begin :])
            else:
                i += 2
                url_begin = i
                chars: list[str] = []
                while i < len(src) and src[i] != ")":
                    if src[i] == "\\" and self.at(i + 1) and 0 < ord(self.at(i + 1)) <= 126:
                        chars.append(src[i + 1])
                        i += 2
                        continue
                    chars.append(src[i])
                    i += 1
                if i >= len(src):
                    raise EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(src, url_begin)}")
                url = "".join(chars)
            if kind == "custom_emoji":
                match = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
                if not match:
                    raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
                opened.argument = match.group(1)
            elif _valid_url(url):
                opened.argument = url
            else:
                return i + 1  # Telegram keeps the text and silently drops a link with an invalid URL
        self.close(opened)
        return i + 1


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    return _MarkdownV2(text).parse()


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The legacy `Markdown` mode: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    u16 = 0
    i, n = 0, len(text)
    ends = {"_": "_", "*": "*", "`": "`", "[": "]"}
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        if c not in ends:
            out.append(c)
            u16 += _char_u16(c)
            i += 1
            continue
        begin = i
        is_pre = text.startswith("```", i)
        language = ""
        if is_pre:
            i += 3
            lang_end = i
            while lang_end < n and not text[lang_end].isspace() and text[lang_end] != "`":
                lang_end += 1
            if lang_end != i and lang_end < n and text[lang_end] != "`":
                language, i = text[i:lang_end], lang_end
            if i < n and text[i] in "\r\n":
                i += 1
        else:
            i += 1
        offset = u16
        while i < n and (text[i] != ends[c] or (is_pre and not text.startswith("```", i))):
            out.append(text[i])
            u16 += _char_u16(text[i])
            i += 1
        if i >= n:
            raise EntityParseError(f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}")
        length = u16 - offset
        if c == "[":
            if text.startswith("(", i + 1):
                close = text.find(")", i + 2)
                if close < 0:
                    raise EntityParseError(
                        f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
                    )
                url, i = text[i + 2 : close], close
            else:
                url = "".join(out)[-length:] if length else ""
            if length and _valid_url(url):
                entities.append(_entity("text_link", offset, length, url))
        elif length:
            kind = {"_": "italic", "*": "bold", "`": "pre_code" if language else ("pre" if is_pre else "code")}[c]
            entities.append(_entity(kind, offset, length, language))
        i += 3 if is_pre else 1
    return "".join(out), entities


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}


@dataclass
class _HtmlOpen:
    tag: str
    kind: str
    offset: int
    argument: str = ""
    entity: dict[str, Any] | None = field(default=None)


class _Html(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.src = text
        self.out: list[str] = []
        self.u16 = 0
        self.stack: list[_HtmlOpen] = []
        self.entities: list[dict[str, Any]] = []

    def _byte_pos(self) -> int:
        line, col = self.getpos()
        index = sum(len(part) + 1 for part in self.src.split("\n")[: line - 1]) + col
        return _byte_offset(self.src, index)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        kind = _HTML_TAGS.get(tag)
        if kind is None:
            raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {self._byte_pos()}')
        argument = ""
        if tag == "span" and values.get("class") != "tg-spoiler":
            raise EntityParseError('Tag "span" must have class "tg-spoiler"')
        if tag == "a":
            argument = values.get("href", "")
        elif tag == "code":
            argument = values.get("class", "").removeprefix("language-") if "class" in values else ""
        elif tag == "blockquote" and "expandable" in values:
            kind = "expandable_blockquote"
        elif tag == "tg-emoji":
            argument = values.get("emoji-id", "")
            if not argument.isdigit():
                raise EntityParseError("Custom emoji entity must contain a valid emoji-id")
        self.stack.append(_HtmlOpen(tag, kind, self.u16, argument))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {self._byte_pos()}')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {self._byte_pos()}")
        opened = self.stack.pop()
        if opened.tag != tag:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {self._byte_pos()}, expected "</{opened.tag}>", found "</{tag}>"'
            )
        length = self.u16 - opened.offset
        if opened.kind == "code" and self.stack and self.stack[-1].kind == "pre" and opened.argument:
            self.stack[-1].argument = opened.argument  # <pre><code class="language-x"> is one pre entity
            return
        if length <= 0:
            return
        if opened.kind == "text_link":
            if not _valid_url(opened.argument):
                return
            self.entities.append(_entity("text_link", opened.offset, length, opened.argument))
        elif opened.kind == "pre" and opened.argument:
            self.entities.append(_entity("pre_code", opened.offset, length, opened.argument))
        elif opened.kind == "code":
            self.entities.append(_entity("code", opened.offset, length, ""))
        else:
            self.entities.append(_entity(opened.kind, opened.offset, length, opened.argument))

    def handle_data(self, data: str) -> None:
        self.out.append(data)
        self.u16 += utf16_len(data)


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    parser = _Html(text)
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1].tag}"')
    parser.entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(parser.out), parser.entities


def check_entities(raw: Any) -> list[dict[str, Any]]:
    """Entities a bot passed explicitly: the same shape checks the Bot API makes."""
    if not isinstance(raw, list):
        raise EntityParseError("entities must be an Array of MessageEntity")
    checked: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise EntityParseError("MessageEntity must be an Object")
        kind, offset, length = item.get("type"), item.get("offset"), item.get("length")
        if not isinstance(kind, str) or kind not in ENTITY_TYPES:
            raise EntityParseError("Unsupported type specified")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise EntityParseError('Field "offset" and "length" must be non-negative Integers')
        if kind == "text_link" and not isinstance(item.get("url"), str):
            raise EntityParseError('Field "url" must be of type String')
        checked.append(dict(item))
    return checked


def strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims surrounding whitespace from a message and clips entities to what remains."""
    stripped = text.strip()
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def format_text(text: str, *, parse_mode: str | None, entities: Any) -> tuple[str, list[dict[str, Any]]]:
    """Plain text and entities of a message, as Telegram stores it. Raises EntityParseError."""
    if entities:  # explicit entities win over parse_mode, as on the Bot API
        plain, parsed = text, check_entities(entities)
    elif not parse_mode:
        plain, parsed = text, []
    else:
        mode = parse_mode.lower()
        if mode == "markdownv2":
            plain, parsed = parse_markdown_v2(text)
        elif mode == "markdown":
            plain, parsed = parse_markdown(text)
        elif mode == "html":
            plain, parsed = parse_html(text)
        else:
            raise ValueError("unsupported parse_mode")
    return strip_text(plain, parsed)


_DETECT = [
    ("bot_command", re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")),
    ("mention", re.compile(r"(?<![\w@])@[A-Za-z0-9_]{4,32}(?!\w)")),
    ("url", re.compile(r"\bhttps?://[^\s<>]+")),
]


def detect_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram finds by itself in a user's plain text (commands, @mentions, links)."""
    found: list[dict[str, Any]] = []
    for kind, pattern in _DETECT:
        for match in pattern.finditer(text):
            offset = utf16_len(text[: match.start()])
            found.append({"type": kind, "offset": offset, "length": utf16_len(match.group())})
    found.sort(key=lambda e: (e["offset"], -e["length"]))
    return found
