"""Property tests: for generated markdown, the formatters never lose or reorder visible text, on
either platform, and every message they make fits the platform's limit.

The markdown is built from words (Latin, digits, CJK), text that looks like HTML or XML
(`List<String>`, `<b>`, `a < b`, `&amp;`), emphasis, code spans and blocks, links, lists,
headings and quotes, sometimes long enough to need several messages. What the user should read is
known from how it was built; what they do read is computed independently: Telegram shows the
messages' text as sent, a Feishu text message its text, and a card's markdown is read by a
CommonMark parser (markdown-it-py, which, like Feishu, takes inline HTML as markup, not text).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.settings import RendererSettings
from aibot_renderer.feishu_format import CARD_LIMIT_BYTES, TEXT_LIMIT_BYTES, body_bytes, format_for_feishu
from aibot_renderer.splitting import utf16_len
from aibot_renderer.telegram_format import MAX_TEXT, format_for_telegram

HTMLISH = [
    "<b>",
    "</b>",
    "List<String>",
    "a < b",
    "x<y",
    "&amp;",
    "&lt;",
    "Map<K, V>",
    "a && b",
    "<br>",
    "<script>",
    "<at id=all></at>",
    "<font color='red'>",
]
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789中文字", min_size=1, max_size=10)
COMMONMARK = MarkdownIt("commonmark")


def _kept(text: str) -> str:
    """The characters whose order is checked: letters, digits, CJK, and the two HTML-ish ones."""
    return "".join(c for c in text if c.isalnum() or c in "<&")


@st.composite
def inline(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["word", "word", "word", "html", "bold", "italic", "code", "link"]))
    word = draw(WORD)
    if kind == "html":
        html = draw(st.sampled_from(HTMLISH))
        return html, html
    if kind == "bold":
        return f"**{word}**", word
    if kind == "italic":
        return f"*{word}*", word
    if kind == "code":
        code = f"{word} {draw(st.sampled_from(HTMLISH))}"
        return f"`{code}`", code
    if kind == "link":
        return f"[{word}](https://example.com/page)", word
    return word, word


@st.composite
def block(draw: st.DrawFn) -> tuple[str, str]:
    items = draw(st.lists(inline(), min_size=1, max_size=8))
    line = " ".join(markdown for markdown, _ in items)
    visible = " ".join(text for _, text in items)
    kind = draw(st.sampled_from(["paragraph", "paragraph", "list", "numbered", "heading", "quote", "fence"]))
    if kind == "list":
        return f"- {line}", visible
    if kind == "numbered":
        return f"1. {line}", visible
    if kind == "heading":
        return f"## {line}", visible
    if kind == "quote":
        return f"> {line}", visible
    if kind == "fence":
        code = "\n".join(f"{draw(WORD)} = {draw(st.sampled_from(HTMLISH))};" for _ in range(draw(st.integers(1, 4))))
        return f"```java\n{code}\n```", code
    return line, visible


@st.composite
def document(draw: st.DrawFn) -> tuple[str, str]:
    blocks = draw(st.lists(block(), min_size=1, max_size=12))
    # Sometimes long: the same blocks many times over, past a message's limit.
    times = draw(st.sampled_from([1, 1, 1, 40, 120]))
    blocks = blocks * times
    return "\n\n".join(m for m, _ in blocks), " ".join(v for _, v in blocks)


def _reply(markdown: str, platform: Platform) -> Envelope:
    return Envelope(
        id="r-1",
        kind=Kind.REPLY,
        conversation=Conversation(platform=platform, chat_id="1"),
        parts=[TextPart(text=markdown, format="markdown")],
    )


def _is_subsequence(needle: str, haystack: str) -> bool:
    rest = iter(haystack)
    return all(char in rest for char in needle)


def _card_visible(markdown: str) -> str:
    seen: list[str] = []

    def walk(tokens) -> None:  # type: ignore[no-untyped-def]
        for token in tokens:
            if token.type in ("text", "code_inline", "fence", "code_block"):
                seen.append(token.content)
            if token.children:
                walk(token.children)

    walk(COMMONMARK.parse(markdown))
    return " ".join(seen)


def _feishu_visible(message: Envelope) -> str:
    part = message.parts[0]
    assert isinstance(part, TextPart) and part.rendered is not None
    content = json.loads(part.rendered)
    if part.format == "plain":
        assert body_bytes(part.rendered) <= TEXT_LIMIT_BYTES
        return content["text"]
    assert body_bytes(part.rendered) <= CARD_LIMIT_BYTES
    return " ".join(_card_visible(e["content"]) for e in content["body"]["elements"] if e["tag"] == "markdown")


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(document())
def test_telegram_shows_every_character_in_order_within_4096(doc: tuple[str, str]) -> None:
    markdown, visible = doc
    messages = format_for_telegram(_reply(markdown, Platform.TELEGRAM), RendererSettings())
    texts = [m.parts[0].text for m in messages if isinstance(m.parts[0], TextPart)]
    assert all(utf16_len(t) <= MAX_TEXT for t in texts)
    assert _is_subsequence(_kept(visible), _kept("".join(texts))), "text lost or reordered"


@PROPERTY
@given(document())
def test_feishu_shows_every_character_in_order_within_its_limits(doc: tuple[str, str]) -> None:
    markdown, visible = doc
    messages = format_for_feishu(_reply(markdown, Platform.FEISHU), RendererSettings())
    shown = "".join(_feishu_visible(m) for m in messages)
    assert _is_subsequence(_kept(visible), _kept(shown)), "text lost or reordered"


@PROPERTY
@given(document())
def test_feishu_streamed_answers_as_cards_keep_every_character_too(doc: tuple[str, str]) -> None:
    markdown, visible = doc
    reply = _reply(markdown, Platform.FEISHU).model_copy(update={"meta": {"streamed": "1"}})
    messages = format_for_feishu(reply, RendererSettings())
    assert all(m.parts[0].format == "feishu_card" for m in messages if isinstance(m.parts[0], TextPart))
    shown = "".join(_feishu_visible(m) for m in messages)
    assert _is_subsequence(_kept(visible), _kept(shown))
