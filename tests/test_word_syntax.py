"""The syntax of the word fields (nodes/word_syntax.py) and its twin in js/ntp_words.js: one grammar, one set of cases.

``tests/word_syntax_cases.json`` lists, per parser, texts with the items they give or the error they raise; every
case runs through the Python parser and, under node, through the JS one (all JS calls in one node process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_words

pytestmark = pytest.mark.host  # nulltext_p2p.nodes imports the host's comfy_api

CASES = json.loads(Path(__file__).with_name("word_syntax_cases.json").read_text(encoding="utf-8"))
#: cases file section -> (Python parser in nodes/word_syntax.py, JS parser in js/ntp_words.js)
PARSERS = {
    "word_values": ("parse_word_values", "parseWordValues"),
    "word_list": ("parse_word_list", "parseWordList"),
    "word_windows": ("parse_word_windows", "parseWordWindows"),
}
ALL_CASES = [(kind, i, case) for kind in PARSERS for i, case in enumerate(CASES[kind])]


def python_items(kind: str, text: str) -> list:
    """The Python parser's result in the cases file's form (lists, windows as [word, [start, end]])."""
    from nulltext_p2p.nodes import word_syntax

    result = getattr(word_syntax, PARSERS[kind][0])(text)
    if kind == "word_windows":
        return [[word, list(window)] for word, window in result.items()]
    if kind == "word_values":
        return [[word, value] for word, value in result]
    return list(result)


@pytest.fixture(scope="module")
def js_results() -> dict:
    """``(kind, index) -> {"items": ..., "errors": [...]}`` from js/ntp_words.js for every case."""
    results = run_words([[PARSERS[kind][1], case["text"]] for kind, _, case in ALL_CASES])
    return {(kind, i): result for (kind, i, _), result in zip(ALL_CASES, results)}


def test_cases_cover_every_parser_with_results_and_errors():
    for kind in PARSERS:
        assert any("items" in c for c in CASES[kind]) and any("error" in c for c in CASES[kind]), kind
        assert all(("items" in c) != ("error" in c) for c in CASES[kind]), kind


@pytest.mark.parametrize("kind,index,case", ALL_CASES, ids=[f"{kind}-{i}" for kind, i, _ in ALL_CASES])
def test_python_and_js_read_each_case_alike(kind, index, case, js_results):
    """The text gives the case's items on both sides, or both refuse it with an error naming the same problem."""
    from nulltext_p2p.core.prompt_tokens import PromptError

    js = js_results[(kind, index)]
    if "items" in case:
        assert python_items(kind, case["text"]) == case["items"]
        assert js == {"items": case["items"], "errors": []}
        return
    with pytest.raises(PromptError) as e:
        python_items(kind, case["text"])
    assert js["errors"], f"ntp_words.js accepted {case['text']!r}: {js['items']}"
    for phrase in case["error"]:
        assert phrase in str(e.value), (phrase, str(e.value))
        assert phrase in js["errors"][0], (phrase, js["errors"])


def test_parse_helpers():
    from nulltext_p2p.core.prompt_tokens import PromptError
    from nulltext_p2p.nodes.word_syntax import parse_word_list, parse_word_values, parse_word_windows

    assert parse_word_values("tiger=2, fluffy=0.5") == [("tiger", 2.0), ("fluffy", 0.5)]
    assert parse_word_values(" red car = -1.5 ;\n cat=3 ") == [("red car", -1.5), ("cat", 3.0)]
    assert parse_word_values("") == [] and parse_word_values("  ,  ") == []
    for bad in ("tiger", "tiger=abc", "=2", "tiger=2=3", "tiger=inf"):
        with pytest.raises(PromptError, match="word=value"):
            parse_word_values(bad)
    assert parse_word_list("cat, tiger") == ["cat", "tiger"]
    assert parse_word_list("red car; cat\n") == ["red car", "cat"]
    assert parse_word_list("") == []
    with pytest.raises(PromptError, match="separated by commas"):
        parse_word_list("cat=2")
    assert parse_word_windows("tiger=0.0-0.4; sofa=0.2") == {"tiger": (0.0, 0.4), "sofa": (0.0, 0.2)}
    assert parse_word_windows("tiger = .1 - 1, sofa=0.2..0.5") == {"tiger": (0.1, 1.0), "sofa": (0.2, 0.5)}
    assert parse_word_windows("") == {}
    for bad in ("tiger", "tiger=a-b", "tiger=0.1-", "tiger=-0.2"):
        with pytest.raises(PromptError, match="word=start-end"):
            parse_word_windows(bad)
    with pytest.raises(PromptError, match=r"within \[0, 1\]"):
        parse_word_windows("tiger=0.2-1.5")
    with pytest.raises(PromptError, match="after its end"):
        parse_word_windows("tiger=0.6-0.2")
    with pytest.raises(PromptError, match="two windows"):
        parse_word_windows("tiger=0.2; tiger=0.3")
