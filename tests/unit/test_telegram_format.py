from aibot_renderer.splitting import split_points, utf16_len
from aibot_renderer.telegram_format import markdown_to_telegram, split_message, with_transcript


def test_markdown_becomes_entities_without_escaping() -> None:
    message = markdown_to_telegram("**Bold** and `x_y` cost 1+1=2! See [docs](https://example.com).")
    assert message.text == "Bold and x_y cost 1+1=2! See docs."
    kinds = {e["type"] for e in message.entities}
    assert {"bold", "code", "text_link"} <= kinds
    link = next(e for e in message.entities if e["type"] == "text_link")
    assert message.text[link["offset"] : link["offset"] + link["length"]] == "docs"


def test_short_text_is_one_message() -> None:
    assert [m.text for m in split_message(markdown_to_telegram("Hello."))] == ["Hello."]


def test_long_text_splits_on_paragraphs_within_the_limit() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(12)]
    parts = split_message(markdown_to_telegram("\n\n".join(paragraphs)))
    assert len(parts) > 1
    assert all(utf16_len(p.text) <= 4096 for p in parts)
    assert all(p.text.startswith("Paragraph") for p in parts)  # cuts fell between paragraphs
    assert " ".join(" ".join(p.text.split()) for p in parts) == " ".join(" ".join(paragraphs).split())


def test_a_long_paragraph_splits_at_sentence_ends() -> None:
    text = " ".join(f"Sentence number {i} ends here." for i in range(400))
    ranges = split_points(text, 500)
    chunks = [text[a:b] for a, b in ranges]
    assert all(len(c) <= 500 for c in chunks)
    assert all(c.endswith("ends here.") for c in chunks)


def test_utf16_is_what_is_counted() -> None:
    text = "😀" * 3000  # 2 UTF-16 units each
    parts = split_points(text, 4096)
    assert [utf16_len(text[a:b]) for a, b in parts] == [4096, 1904]


def test_cjk_text_splits_after_full_stops() -> None:
    text = "这是一个句子。" * 1000
    chunks = [text[a:b] for a, b in split_points(text, 4096)]
    assert all(c.endswith("。") for c in chunks)
    assert "".join(chunks) == text


def test_entities_are_clipped_to_each_part() -> None:
    bold = "**" + "strong words " * 500 + "end**"
    parts = split_message(markdown_to_telegram(bold))
    assert len(parts) == 2
    for part in parts:
        (entity,) = part.entities
        assert entity["type"] == "bold"
        assert entity["offset"] + entity["length"] <= utf16_len(part.text)


def test_transcript_is_quoted_above_the_answer() -> None:
    message = with_transcript("what time is it", markdown_to_telegram("It is **noon**."))
    assert message.text == "🎤 what time is it\n\nIt is noon."
    quote = message.entities[0]
    assert quote["type"] == "blockquote" and quote["offset"] == 0
    bold = message.entities[1]
    assert (
        message.text.encode("utf-16-le")[bold["offset"] * 2 : (bold["offset"] + bold["length"]) * 2].decode("utf-16-le")
        == "noon"
    )


def test_text_that_looks_like_html_reaches_the_user_whole() -> None:
    # The markdown parser used to read these as inline HTML or entities and drop them.
    for answer in ("Use List<String> here", "<b>not bold</b>", "a < b > c", "x <div>hi</div> y", "a & b &amp; c"):
        assert markdown_to_telegram(answer).text == answer


def test_angle_brackets_survive_inside_code_and_emphasis() -> None:
    message = markdown_to_telegram("**Map<K, V>** and `a<b>`\n\n```java\nList<String> names;\n```")
    assert message.text == "Map<K, V> and a<b>\n\nList<String> names;"
    kinds = [(e["type"], message.text[e["offset"] : e["offset"] + e["length"]]) for e in message.entities]
    assert ("bold", "Map<K, V>") in kinds
    assert ("code", "a<b>") in kinds
    assert ("pre", "List<String> names;") in kinds
