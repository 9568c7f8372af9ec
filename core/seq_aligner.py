"""Token mappers between a source prompt and an edited prompt (Prompt-to-Prompt).

Re-implements the semantics of ``seq_aligner.py`` in google/prompt-to-prompt on :class:`PromptTokens`
(the host has already tokenised the words), with identical results:

* :func:`replacement_mapper` -- ``get_replacement_mapper_`` (word swap, same number of words);
* :func:`refinement_mapper` -- ``get_mapper`` (global alignment of the token lists, for added words).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .prompt_tokens import PromptError, PromptTokens

__all__ = ["global_align", "aligned_target_to_source", "replacement_mapper", "refinement_mapper"]

# Traceback codes, as in the reference.
_LEFT, _UP, _DIAG, _ORIGIN = 1, 2, 3, 4


def global_align(
    x: Sequence[int], y: Sequence[int], gap: int = 0, match: int = 1, mismatch: int = -1
) -> list[list[int]]:
    """Needleman-Wunsch traceback table for ``x`` (rows) against ``y`` (columns).

    Scores and tie-breaking follow the reference ``global_align``: in a cell, "left" (gap in x) wins over
    "up" (gap in y), which wins over the diagonal. Returns the traceback codes (1 left, 2 up, 3 diagonal,
    4 origin), an ``(len(x)+1) x (len(y)+1)`` nested list.
    """
    nx, ny = len(x), len(y)
    score = [[0] * (ny + 1) for _ in range(nx + 1)]
    trace = [[0] * (ny + 1) for _ in range(nx + 1)]
    for j in range(1, ny + 1):
        score[0][j] = j * gap
        trace[0][j] = _LEFT
    for i in range(1, nx + 1):
        score[i][0] = i * gap
        trace[i][0] = _UP
    trace[0][0] = _ORIGIN
    for i in range(1, nx + 1):
        for j in range(1, ny + 1):
            left = score[i][j - 1] + gap
            up = score[i - 1][j] + gap
            diag = score[i - 1][j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = _LEFT if best == left else (_UP if best == up else _DIAG)
    return trace


def aligned_target_to_source(x: Sequence[int], y: Sequence[int]) -> list[int]:
    """For each position of ``y``, the aligned position in ``x`` or -1 (reference ``get_aligned_sequences``)."""
    trace = global_align(x, y)
    i, j = len(x), len(y)
    out: list[int] = []
    while i > 0 or j > 0:
        code = trace[i][j]
        if code == _DIAG:
            i, j = i - 1, j - 1
            out.append(i)
        elif code == _LEFT:
            j -= 1
            out.append(-1)
        elif code == _UP:
            i -= 1
        else:
            break
    out.reverse()
    return out


def _check_same_len(source: PromptTokens, target: PromptTokens) -> int:
    if source.max_len != target.max_len:
        raise PromptError(f"prompts have different max_len ({source.max_len} and {target.max_len})")
    return source.max_len


def replacement_mapper(
    source: PromptTokens, target: PromptTokens, *, fix_tail_alignment: bool = False
) -> torch.Tensor:
    """Word-swap mapper ``M`` [max_len, max_len]: edited maps are ``attn_src @ M`` (M[source pos, target pos]).

    Same as the reference ``get_replacement_mapper_``: the prompts must have the same number of words;
    tokens of unchanged words map one to one; a swapped word with the same token count maps token to
    token, otherwise every source token of the word maps to each of its k target tokens with weight 1/k.

    Reference quirk (kept by default): after the last swapped word, the reference writes ``M[j, j] = 1``
    (diagonal in the *target* position) instead of ``M[i, j]``, so when the swapped words differ in token
    count the tokens after the last swap are misaligned by the difference. ``fix_tail_alignment=True``
    writes ``M[i, j]`` there instead (keeps unchanged words aligned).
    """
    max_len = _check_same_len(source, target)
    nx, ny = len(source.words), len(target.words)
    if nx != ny:
        raise PromptError(
            f"mode 'replace' (word swap) needs prompts with the same number of words, but the source prompt "
            f"has {nx} words and the edited prompt {target.text!r} has {ny} words"
        )
    swapped = [k for k in range(nx) if source.words[k] != target.words[k]]
    src_blocks = [source.word_positions(k) for k in swapped]
    tgt_blocks = [target.word_positions(k) for k in swapped]

    mapper = torch.zeros(max_len, max_len, dtype=torch.float64)
    i = j = 0
    b = 0
    while i < max_len and j < max_len:
        if b < len(src_blocks) and src_blocks[b][0] == i:
            s_blk, t_blk = src_blocks[b], tgt_blocks[b]
            if len(s_blk) == len(t_blk):
                for s, t in zip(s_blk, t_blk):
                    mapper[s, t] = 1.0
            else:
                w = 1.0 / len(t_blk)
                for s in s_blk:
                    for t in t_blk:
                        mapper[s, t] = w
            b += 1
            i += len(s_blk)
            j += len(t_blk)
        elif b < len(src_blocks) or fix_tail_alignment:
            mapper[i, j] = 1.0
            i += 1
            j += 1
        else:
            mapper[j, j] = 1.0
            i += 1
            j += 1
    return mapper.float()


def refinement_mapper(source: PromptTokens, target: PromptTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment mapper for added/removed words (reference ``get_mapper``).

    The full token lists (BOS and EOS included) are globally aligned (gap 0, match 1, mismatch -1).
    Returns ``(mapper, alphas)``, both [max_len]: for a target position p < len(target ids),
    ``mapper[p]`` is the aligned source position (-1 when the target token has no counterpart) and
    ``alphas[p]`` is 1.0 when aligned else 0.0; for the padding positions p >= len(target ids),
    ``mapper[p] = p`` and ``alphas[p] = 1``. Edited maps are ``attn_src[..., mapper] * alphas +
    attn_tgt * (1 - alphas)``.
    """
    max_len = _check_same_len(source, target)
    x, y = source.ids(), target.ids()
    base = aligned_target_to_source(x, y)
    assert len(base) == len(y)
    mapper = torch.zeros(max_len, dtype=torch.int64)
    alphas = torch.ones(max_len)
    n = len(base)
    mapper[:n] = torch.tensor(base, dtype=torch.int64)
    alphas[:n] = torch.tensor([0.0 if s == -1 else 1.0 for s in base])
    mapper[n:] = len(y) + torch.arange(max_len - len(y))
    return mapper, alphas
