"""Which tokens belong to which word, for any of the host's tokenizers (T5, Qwen's BPE, CLIP), through the public
``clip.tokenize`` only.

A word's tokens are the tokens its prompt prefix adds: ``stream(words[:i + 1])`` minus ``stream(words[:i])``, where
``stream`` is the tokenizer's real tokens of a text (no start, end, template or padding tokens). This follows the
tokenizer's own rules for spaces (BPE tokenizers attach the space to the next word: " cat") without knowing them. The
tokens of all words must join up to the stream of the whole prompt, and every weight must be 1 (plain words).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from ..core.prompt_tokens import PromptError, PromptTokens, split_prompt

Stream = Callable[[str], list[int]]
SYNTAX = ("the prompt uses syntax that cannot be mapped to words (weights like '(word:1.2)', embeddings or escapes); "
          "write it as plain words for Prompt-to-Prompt.")


def plain_ids(pairs: Sequence) -> list[int]:
    """Token ids of the host's ``(token, weight[, word id])`` pairs; PromptError for weights or embeddings."""
    ids = []
    for pair in pairs:
        token, weight = pair[0], pair[1]
        if not isinstance(token, int) or abs(float(weight) - 1.0) > 1e-9:
            raise PromptError(SYNTAX)
        ids.append(int(token))
    return ids


def word_tokens(stream: Stream, text: str) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """(words, tokens of each word) of ``text`` for the tokenizer behind ``stream``."""
    words = split_prompt(text)
    if not words:
        raise PromptError("the prompt is empty; type a caption of the image (e.g. 'a cat sitting on a table').")
    per_word, before = [], stream("")
    for i in range(len(words)):
        upto = stream(" ".join(words[: i + 1]))
        if upto[: len(before)] != before or len(upto) == len(before):
            raise PromptError(f"the word {words[i]!r} cannot be told apart in the tokens of the prompt; {SYNTAX}")
        per_word.append(tuple(upto[len(before):]))
        before = upto
    if [t for w in per_word for t in w] != stream(" ".join(words)) or stream(text) != stream(" ".join(words)):
        raise PromptError(SYNTAX)
    return words, tuple(per_word)


#: T5's end-of-text token (the host's T5 tokenizers: no start token; padding after the end token).
T5_EOS = 1


def t5_ids(clip, text: str, key: str = "t5xxl") -> list[int]:
    """The real T5 tokens of ``text`` (no end token, no padding) in the CLIP's ``key`` tokenizer."""
    ids = plain_ids(clip.tokenize(text)[key][0])
    return ids[: ids.index(T5_EOS)] if T5_EOS in ids else ids


def t5_prompt_tokens(clip, text: str, max_len: Optional[int] = None, key: str = "t5xxl") -> PromptTokens:
    """The words of ``text`` at T5 positions 0.. (no start token), the end token after them, then padding:
    ``max_len`` positions (None: as many as the tokenizer gives, its padding included)."""
    words, per_word = word_tokens(lambda t: t5_ids(clip, t, key), text)
    length = len(clip.tokenize(text)[key][0]) if max_len is None else int(max_len)
    return PromptTokens(" ".join(words), words, per_word, -1, T5_EOS, max_len=length, prefix=(), suffix=(T5_EOS,))
