"""The syntax of the Attention Controller's word fields (``reweight``, ``blend_words``, ``word_windows``) and of
Attention Maps' ``words``: widget text to the lists and windows ``core.attention_edit`` takes.

Its twin for the frontend helper is ``js/ntp_words.js`` (``parseWordValues``, ``parseWordList``,
``parseWordWindows``): one grammar, both checked against the cases of ``tests/word_syntax_cases.json``.
Items are separated by commas, semicolons or new lines; a word may be a phrase of several words. Errors are
:class:`PromptError` naming the item and the expected syntax.
"""

from __future__ import annotations

import math
import re

from ..core.attention_edit import check_window
from ..core.prompt_tokens import PromptError, normalize_word

__all__ = ["parse_word_list", "parse_word_values", "parse_word_windows"]

_SEP = re.compile(r"[,;\n]")
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_WINDOW_RANGE = re.compile(rf"^{_NUM}\s*(?:-|\.\.|to)\s*{_NUM}$")
_WINDOW_SINGLE = re.compile(rf"^{_NUM}$")


def _items(text: str, seps: re.Pattern = _SEP) -> list[str]:
    return [s.strip() for s in seps.split(text or "") if s.strip()]


def parse_word_values(text: str) -> list[tuple[str, float]]:
    """Parse ``"tiger=2, fluffy=0.5"`` into ``[("tiger", 2.0), ("fluffy", 0.5)]``.

    Items are separated by commas, semicolons or new lines; a word may be a multi-word phrase
    (``"red car=2"``). A value is what Python's ``float`` reads and must be finite. Empty input gives ``[]``.
    """
    syntax = "expected 'word=value' items separated by commas, e.g. 'tiger=2, fluffy=0.5'"
    out: list[tuple[str, float]] = []
    for item in _items(text):
        word, eq, value = item.partition("=")
        word, value = word.strip(), value.strip()
        if not eq or "=" in value or not normalize_word(word):
            raise PromptError(f"cannot read {item!r}: {syntax}")
        try:
            v = float(value)
        except ValueError:
            raise PromptError(f"cannot read the value of {item!r}: {syntax}") from None
        if not math.isfinite(v):
            raise PromptError(f"the value of {item!r} is not a finite number: {syntax}")
        out.append((word, v))
    return out


def parse_word_list(text: str) -> list[str]:
    """Parse ``"cat, tiger"`` into ``["cat", "tiger"]`` (commas, semicolons or new lines separate)."""
    out: list[str] = []
    for item in _items(text):
        if "=" in item or not normalize_word(item):
            raise PromptError(
                f"cannot read {item!r}: expected words or phrases separated by commas, e.g. 'cat, tiger'"
            )
        out.append(item)
    return out


def parse_word_windows(text: str) -> dict[str, tuple[float, float]]:
    """Parse ``"tiger=0.0-0.4; sofa=0.2"`` into ``{"tiger": (0.0, 0.4), "sofa": (0.0, 0.2)}``.

    Each window is ``start-end`` (also ``start..end`` or ``start to end``; fractions of the steps in [0, 1]) or a
    single number x meaning (0, x), like the reference. Items are separated by semicolons, commas or new lines.
    """
    syntax = "expected 'word=start-end' or 'word=end' items separated by ';', e.g. 'tiger=0.0-0.4; sofa=0.2'"
    out: dict[str, tuple[float, float]] = {}
    for item in _items(text):
        word, eq, value = item.partition("=")
        word, value = word.strip(), value.strip()
        if not eq or not normalize_word(word):
            raise PromptError(f"cannot read {item!r}: {syntax}")
        m = _WINDOW_RANGE.match(value)
        if m:
            window = (float(m.group(1)), float(m.group(2)))
        else:
            m = _WINDOW_SINGLE.match(value)
            if not m:
                raise PromptError(f"cannot read the window of {item!r}: {syntax}")
            window = (0.0, float(m.group(1)))
        if word in out:
            raise PromptError(f"the word {word!r} has two windows: {syntax}")
        out[word] = check_window(f"window of {word!r}", *window)
    return out
