"""Split long text into messages on the most natural boundary that fits.

Preference: paragraph (blank line), line, sentence end, word, and only then a hard cut. Lengths are
measured by a caller-given function, because Telegram counts UTF-16 code units, not characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A sentence ends at . ! ? (and their CJK forms) followed by space, or right after a CJK stop.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    _SENTENCE_END,
    re.compile(r"\s+"),  # word
)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_points(text: str, limit: int, measure: Callable[[str], int] = utf16_len) -> list[tuple[int, int]]:
    """(start, end) ranges of `text` (Python indices), each measuring at most `limit`.

    Whitespace at a cut is dropped from both sides, so no chunk starts or ends with it.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    ranges: list[tuple[int, int]] = []
    start = _skip_space(text, 0)
    while start < len(text):
        if measure(text[start:]) <= limit:
            end = len(text.rstrip())
            if end > start:
                ranges.append((start, end))
            break
        window_end = _longest_prefix(text, start, limit, measure)
        cut = _best_cut(text, start, window_end)
        chunk_end = cut[0]
        while chunk_end > start and text[chunk_end - 1].isspace():
            chunk_end -= 1
        if chunk_end <= start:  # only whitespace before the cut: cut hard instead
            chunk_end, cut = window_end, (window_end, window_end)
        ranges.append((start, chunk_end))
        start = _skip_space(text, cut[1])
    return ranges


def _longest_prefix(text: str, start: int, limit: int, measure: Callable[[str], int]) -> int:
    """The largest end such that text[start:end] measures <= limit (binary search)."""
    low, high = start + 1, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if measure(text[start:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    # Never split a surrogate pair or a combining sequence's base from its mark: step back to a boundary.
    return max(low, start + 1)


def _best_cut(text: str, start: int, end: int) -> tuple[int, int]:
    """Where to cut within text[start:end]: (end of this chunk, start of the next)."""
    window = text[start:end]
    # A boundary too close to the start would make a tiny message: ask for at least a third.
    minimum = len(window) // 3
    for pattern in _BOUNDARIES:
        best = None
        for match in pattern.finditer(window):
            if match.start() >= minimum and (match.end() <= len(window)):
                best = match
        if best is not None and best.start() > 0:
            return start + best.start(), start + best.end()
    return end, end


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index
