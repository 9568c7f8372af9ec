"""Tests for core.prompt_tokens, core.seq_aligner and core.attention_edit (no ComfyUI needed).

The ``ref_*`` functions below are an independent re-statement, for this test only, of the behaviour of the
reference code in google/prompt-to-prompt (``seq_aligner.py``, ``ptp_utils.py`` and the controllers of
``null_text_w_ptp.ipynb``), written against a tiny fake tokenizer with the same ``encode``/``decode``
interface as the CLIP tokenizer. The module under test never sees the fake tokenizer: it gets
:class:`PromptTokens` built from per-word token ids, as the host will build them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from nulltext_p2p.core.attention_edit import AttentionEdit, build_attention_edit
from nulltext_p2p.core.prompt_tokens import PromptError, PromptTokens, normalize_word, split_prompt
from nulltext_p2p.core.seq_aligner import refinement_mapper, replacement_mapper

L = 77


# --------------------------------------------------------------------------------------------------------
# A fake BPE-like tokenizer: some words split into 2-3 pieces, punctuation is its own token.
# --------------------------------------------------------------------------------------------------------


class FakeTokenizer:
    BOS, EOS = 49406, 49407
    SPLITS = {
        "tiger": ["ti", "ger"],
        "squirrel": ["squ", "ir", "rel"],
        "butterfly": ["butter", "fly"],
        "bicycle": ["bi", "cycle"],
        "origami": ["ori", "ga", "mi"],
        "watercolor": ["water", "color"],
    }
    PUNCT = ",.!?;:"

    def __init__(self):
        self.vocab: dict[str, int] = {}
        self.inv: dict[int, str] = {self.BOS: "<|startoftext|>", self.EOS: "<|endoftext|>"}

    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = 1000 + len(self.vocab)
            self.inv[self.vocab[piece]] = piece
        return self.vocab[piece]

    def word_pieces(self, word: str) -> list[str]:
        w = word.lower()
        lead, trail = [], []
        while w and w[0] in self.PUNCT:
            lead.append(w[0])
            w = w[1:]
        while w and w[-1] in self.PUNCT:
            trail.insert(0, w[-1])
            w = w[:-1]
        core = self.SPLITS.get(w, [w] if w else [])
        return lead + core + trail

    def encode_word(self, word: str) -> list[int]:
        return [self._id(p) for p in self.word_pieces(word)]

    def encode(self, text: str) -> list[int]:
        out = [self.BOS]
        for w in text.split(" "):
            out += self.encode_word(w)
        return out + [self.EOS]

    def decode(self, ids) -> str:
        return "".join(self.inv[int(i)] for i in ids)


TOK = FakeTokenizer()


def pt(text: str, max_len: int = L) -> PromptTokens:
    """What the host does: split into words, tokenise each word."""
    words = split_prompt(text)
    return PromptTokens(text, words, tuple(tuple(TOK.encode_word(w)) for w in words), TOK.BOS, TOK.EOS, max_len)


# --------------------------------------------------------------------------------------------------------
# Reference behaviour, re-stated (see module docstring).
# --------------------------------------------------------------------------------------------------------


def ref_word_inds(text: str, place, tok=TOK) -> np.ndarray:
    """ptp_utils.get_word_inds: walk the decoded pieces, counting characters against the split words."""
    words = text.split(" ")
    if isinstance(place, str):
        targets = [k for k, w in enumerate(words) if w == place]
    else:
        targets = [place]
    res = []
    if targets:
        pieces = [tok.decode([t]).strip("#") for t in tok.encode(text)][1:-1]
        n_chars, cur = 0, 0
        for k, piece in enumerate(pieces):
            n_chars += len(piece)
            if cur in targets:
                res.append(k + 1)
            if n_chars >= len(words[cur]):
                cur += 1
                n_chars = 0
    return np.array(res, dtype=np.int64)


def ref_replacement_mapper(x: str, y: str, max_len=L, tok=TOK) -> torch.Tensor:
    """seq_aligner.get_replacement_mapper_ (including its tail behaviour m[j, j] = 1)."""
    wx, wy = x.split(" "), y.split(" ")
    if len(wx) != len(wy):
        raise ValueError("word counts differ")
    diff = [k for k in range(len(wy)) if wy[k] != wx[k]]
    src = [ref_word_inds(x, k, tok) for k in diff]
    tgt = [ref_word_inds(y, k, tok) for k in diff]
    m = np.zeros((max_len, max_len))
    i = j = c = 0
    while i < max_len and j < max_len:
        if c < len(src) and src[c][0] == i:
            s, t = src[c], tgt[c]
            if len(s) == len(t):
                m[s, t] = 1
            else:
                for tt in t:
                    m[s, tt] = 1 / len(t)
            c += 1
            i += len(s)
            j += len(t)
        elif c < len(src):
            m[i, j] = 1
            i, j = i + 1, j + 1
        else:
            m[j, j] = 1
            i, j = i + 1, j + 1
    return torch.from_numpy(m).float()


def ref_global_align(x, y, gap=0, match=1, mismatch=-1):
    """seq_aligner.global_align: score matrix and traceback (1 left, 2 up, 3 diag, 4 origin)."""
    S = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int32)
    S[0, 1:] = (np.arange(len(y)) + 1) * gap
    S[1:, 0] = (np.arange(len(x)) + 1) * gap
    T = np.zeros_like(S)
    T[0, 1:], T[1:, 0], T[0, 0] = 1, 2, 4
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            cand_left = S[i, j - 1] + gap
            cand_up = S[i - 1, j] + gap
            cand_diag = S[i - 1, j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            S[i, j] = max(cand_left, cand_up, cand_diag)
            T[i, j] = 1 if S[i, j] == cand_left else (2 if S[i, j] == cand_up else 3)
    return S, T


def ref_get_mapper(x: str, y: str, max_len=L, tok=TOK):
    """seq_aligner.get_mapper (via get_aligned_sequences)."""
    xs, ys = tok.encode(x), tok.encode(y)
    _, T = ref_global_align(xs, ys)
    i, j, pairs = len(xs), len(ys), []
    while i > 0 or j > 0:
        if T[i, j] == 3:
            i, j = i - 1, j - 1
            pairs.append((j, i))
        elif T[i, j] == 1:
            j -= 1
            pairs.append((j, -1))
        elif T[i, j] == 2:
            i -= 1
        else:
            break
    base = torch.tensor(pairs[::-1], dtype=torch.int64)
    alphas = torch.ones(max_len)
    alphas[: base.shape[0]] = base[:, 1].ne(-1).float()
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[: base.shape[0]] = base[:, 1]
    mapper[base.shape[0]:] = len(ys) + torch.arange(max_len - len(ys))
    return mapper, alphas


def ref_time_words_alpha(prompts, num_steps, cross_replace_steps, max_len=L):
    """ptp_utils.get_time_words_attention_alpha (+ update_alpha_time_word); returns [S+1, E, 1, 1, L]."""

    def update(alpha, bounds, p, inds=None):
        if isinstance(bounds, float):
            bounds = 0, bounds
        start, end = int(bounds[0] * alpha.shape[0]), int(bounds[1] * alpha.shape[0])
        if inds is None:
            inds = torch.arange(alpha.shape[2])
        alpha[:start, p, inds] = 0
        alpha[start:end, p, inds] = 1
        alpha[end:, p, inds] = 0
        return alpha

    steps = dict(cross_replace_steps) if isinstance(cross_replace_steps, dict) else {"default_": cross_replace_steps}
    steps.setdefault("default_", (0.0, 1.0))
    a = torch.zeros(num_steps + 1, len(prompts) - 1, max_len)
    for p in range(len(prompts) - 1):
        a = update(a, steps["default_"], p)
    for key, item in steps.items():
        if key == "default_":
            continue
        for p, inds in enumerate([ref_word_inds(prompts[k], key) for k in range(1, len(prompts))]):
            if len(inds) > 0:
                a = update(a, item, p, inds)
    return a.reshape(num_steps + 1, len(prompts) - 1, 1, 1, max_len)


def ref_equalizer(text, words, values, max_len=L):
    """Notebook get_equalizer: [1, L], ones except the chosen words' tokens."""
    eq = torch.ones(1, max_len)
    for w, v in zip(words, values):
        eq[:, ref_word_inds(text, w)] = v
    return eq


class RefController:
    """Notebook AttentionControlEdit.forward with AttentionReplace / AttentionRefine / AttentionReweight."""

    def __init__(self, prompts, num_steps, cross_replace_steps, self_replace_steps, kind, equalizer=None, prev=None):
        self.batch_size = len(prompts)
        self.alpha = ref_time_words_alpha(prompts, num_steps, cross_replace_steps)
        if isinstance(self_replace_steps, float):
            self_replace_steps = 0, self_replace_steps
        self.num_self_replace = int(num_steps * self_replace_steps[0]), int(num_steps * self_replace_steps[1])
        self.kind, self.prev, self.cur_step = kind, prev, 0
        if kind == "replace":
            self.mapper = torch.stack([ref_replacement_mapper(prompts[0], p) for p in prompts[1:]])
        elif kind == "refine":
            ms, als = zip(*[ref_get_mapper(prompts[0], p) for p in prompts[1:]])
            self.mapper = torch.stack(ms)
            a = torch.stack(als)
            self.alphas = a.reshape(a.shape[0], 1, 1, a.shape[1])
        else:
            self.equalizer = equalizer

    def replace_cross(self, base, rep):
        if self.kind == "replace":
            return torch.einsum("hpw,bwn->bhpn", base, self.mapper)
        if self.kind == "refine":
            b = base[:, :, self.mapper].permute(2, 0, 1, 3)
            return b * self.alphas + rep * (1 - self.alphas)
        if self.prev is not None:
            base = self.prev.replace_cross(base, rep)
        return base[None, :, :, :] * self.equalizer[:, None, None, :]

    def forward(self, attn, is_cross):
        """attn: [batch * heads, Q, K] (the conditional half)."""
        attn = attn.clone()
        if is_cross or (self.num_self_replace[0] <= self.cur_step < self.num_self_replace[1]):
            h = attn.shape[0] // self.batch_size
            attn = attn.reshape(self.batch_size, h, *attn.shape[1:])
            base, rep = attn[0], attn[1:]
            if is_cross:
                a = self.alpha[self.cur_step]
                attn[1:] = self.replace_cross(base, rep) * a + (1 - a) * rep
            elif rep.shape[2] <= 32**2:
                attn[1:] = base.unsqueeze(0).expand(rep.shape[0], *base.shape)
            attn = attn.reshape(self.batch_size * h, *attn.shape[2:])
        return attn


def ref_blend(prompts, words, num_steps, maps_list, x_t, start_blend=0.2, th=(0.3, 0.3)):
    """Notebook LocalBlend: returns a function (step) -> blended x_t, counting calls like the reference."""
    alpha_layers = torch.zeros(len(prompts), 1, 1, 1, 1, L)
    for i, (p, ws) in enumerate(zip(prompts, words)):
        if isinstance(ws, str):
            ws = [ws]
        for w in ws:
            alpha_layers[i, :, :, :, :, ref_word_inds(p, w)] = 1

    def get_mask(maps, alpha, use_pool):
        k = 1
        maps = (maps * alpha).sum(-1).mean(1)
        if use_pool:
            maps = nnf.max_pool2d(maps, (k * 2 + 1, k * 2 + 1), (1, 1), padding=(k, k))
        mask = nnf.interpolate(maps, size=(x_t.shape[2:]))
        mask = mask / mask.max(2, keepdims=True)[0].max(3, keepdims=True)[0]
        mask = mask.gt(th[1 - int(use_pool)])
        return mask[:1] + mask

    state = {"counter": 0, "start": int(start_blend * num_steps)}

    def call(x):
        state["counter"] += 1
        if state["counter"] > state["start"]:
            maps = [m.reshape(alpha_layers.shape[0], -1, 1, 16, 16, L) for m in maps_list]
            maps = torch.cat(maps, dim=1)
            mask = get_mask(maps, alpha_layers, True).float()
            x = x[:1] + mask * (x - x[:1])
        return x

    return call, alpha_layers


# --------------------------------------------------------------------------------------------------------
# Prompt pairs
# --------------------------------------------------------------------------------------------------------

REPLACE_PAIRS = [
    ("a cat sitting on a sofa", "a dog sitting on a sofa"),  # 1 -> 1 token
    ("a cat sitting on a sofa", "a tiger sitting on a sofa"),  # 1 -> 2 tokens
    ("a tiger sitting on a sofa", "a cat sitting on a sofa"),  # 2 -> 1 tokens
    ("a cat sitting on a sofa", "a squirrel sitting on a bicycle"),  # 1 -> 3 and 1 -> 2
    ("a butterfly on a sofa", "a squirrel on a bicycle"),  # 2 -> 3 and 1 -> 2
    ("a tiger on a bicycle", "a butterfly on a watercolor"),  # 2 -> 2 (token to token)
    ("photo of a cat, sitting.", "photo of a dog, sitting."),  # punctuation tokens inside words
    ("a cat sitting on a sofa", "a cat sitting on a sofa"),  # identical
    ("origami cat", "watercolor tiger"),  # every word swapped, 3 -> 2 and 1 -> 2
]

REFINE_PAIRS = [
    ("a cat sitting on a sofa", "a fluffy cat sitting on a sofa"),  # added word
    ("a cat sitting on a sofa", "a cat sitting on a red sofa"),
    ("a cat sitting on a sofa", "a squirrel cat sitting on a big bicycle"),  # multi-token added / swapped
    ("a big red cat on a sofa", "a cat on a sofa"),  # removed words
    ("a tiger", "a watercolor tiger, origami style"),
    ("a cat sitting on a sofa", "a cat sitting on a sofa"),  # identical
    ("a cat", "the dog runs"),  # nothing in common but BOS/EOS
]


# --------------------------------------------------------------------------------------------------------
# PromptTokens
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", sorted({p for pair in REPLACE_PAIRS + REFINE_PAIRS for p in pair}))
def test_prompt_tokens_match_reference_word_inds(text):
    p = pt(text)
    assert p.ids() == TOK.encode(text)
    assert p.n_tokens == len(TOK.encode(text))
    for i in range(len(p.words)):
        assert p.word_positions(i) == ref_word_inds(text, i).tolist()
    for w in set(text.split(" ")):
        if w == normalize_word(w):  # plain lower-case word without punctuation: find == get_word_inds(str)
            assert p.find(w) == ref_word_inds(text, w).tolist()


def test_find_phrases_case_and_punctuation():
    p = pt("A Tiger, a cat and a tiger.")
    ti = p.word_positions(1)
    ti2 = p.word_positions(6)
    assert p.find("tiger") == sorted(ti + ti2)
    assert p.find("TIGER!") == sorted(ti + ti2)
    assert p.find("a tiger") == sorted(p.word_positions(0) + ti + p.word_positions(5) + ti2)
    assert p.find("cat and") == p.word_positions(3) + p.word_positions(4)
    assert p.find("dog") == []
    assert p.find("  ") == []
    assert normalize_word(' "(Tiger)!" ') == "tiger"


def test_prompt_tokens_whitespace_and_limits():
    p = pt("  a   cat \t on  a sofa ")
    assert p.words == ("a", "cat", "on", "a", "sofa")
    assert p.word_positions(4) == [5]
    with pytest.raises(IndexError):
        p.word_positions(5)
    with pytest.raises(PromptError) as e:
        pt(" ".join(["squirrel"] * 26))  # 78 tokens
    assert "78 tokens" in str(e.value) and "75" in str(e.value)
    pt(" ".join(["squirrel"] * 25))  # 75 tokens: fits
    with pytest.raises(PromptError):
        PromptTokens("a cat", ("a",), ((1,),), 0, 1)
    with pytest.raises(PromptError):
        PromptTokens("a cat", ("a", "cat"), ((1,), ()), 0, 1)
    assert p == pt(p.text) and hash(p) == hash(pt(p.text))  # frozen: comparable, hashable


# --------------------------------------------------------------------------------------------------------
# Mappers
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x,y", REPLACE_PAIRS)
def test_replacement_mapper_matches_reference(x, y):
    got = replacement_mapper(pt(x), pt(y))
    want = ref_replacement_mapper(x, y)
    assert got.dtype == torch.float32 and got.shape == (L, L)
    assert torch.equal(got, want)


def test_replacement_mapper_tail_fix():
    x, y = "a cat sitting on a sofa", "a tiger sitting on a sofa"
    fixed = replacement_mapper(pt(x), pt(y), fix_tail_alignment=True)
    src, tgt = pt(x), pt(y)
    for k in (2, 3, 4, 5):  # words after the swap stay aligned
        assert fixed[src.word_positions(k)[0], tgt.word_positions(k)[0]] == 1
    ref = replacement_mapper(src, tgt)
    assert ref[src.word_positions(5)[0], tgt.word_positions(5)[0]] == 0  # the reference misaligns them
    same = ("a cat sitting on a sofa", "a dog sitting on a sofa")
    assert torch.equal(replacement_mapper(pt(same[0]), pt(same[1]), fix_tail_alignment=True),
                       replacement_mapper(pt(same[0]), pt(same[1])))


def test_replacement_mapper_word_count_error():
    with pytest.raises(PromptError) as e:
        replacement_mapper(pt("a cat on a sofa"), pt("a big cat on a sofa"))
    msg = str(e.value)
    # the counts only: the advice (mode 'refine') is the node's fix, said once (nodes/attention_controller.py)
    assert "5 words" in msg and "6 words" in msg and "refine" not in msg


@pytest.mark.parametrize("x,y", REFINE_PAIRS + REPLACE_PAIRS)
def test_refinement_mapper_matches_reference(x, y):
    m, a = refinement_mapper(pt(x), pt(y))
    rm, ra = ref_get_mapper(x, y)
    assert m.dtype == torch.int64 and m.shape == (L,)
    assert torch.equal(m, rm)
    assert torch.equal(a, ra)


def test_refinement_mapper_identity_for_same_prompt():
    m, a = refinement_mapper(pt("a cat on a sofa"), pt("a cat on a sofa"))
    assert torch.equal(m, torch.arange(L)) and torch.equal(a, torch.ones(L))


# --------------------------------------------------------------------------------------------------------
# edit_cross / edit_self against the reference controllers
# --------------------------------------------------------------------------------------------------------


def rand_attn(n, heads, q, k=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, heads, q, k, generator=g).softmax(-1)


def run_both(prompts, mode, num_steps=10, cross=0.8, windows=None, self_rep=0.4, reweight=None, heads=2, q=16):
    edit = build_attention_edit(pt(prompts[0]), [pt(p) for p in prompts[1:]], mode, num_steps=num_steps,
                                cross_replace=cross, word_windows=windows, self_replace=self_rep, reweight=reweight)
    crs = {"default_": cross}
    crs.update(windows or {})
    ctrl = RefController(prompts, num_steps, crs, self_rep, mode)
    if reweight:
        eq = ref_equalizer(prompts[1], [w for w, _ in reweight], [v for _, v in reweight])
        ctrl = RefController(prompts, num_steps, crs, self_rep, "reweight", equalizer=eq, prev=ctrl)
    P = len(prompts)
    for step in range(num_steps):
        ctrl.cur_step = step
        attn = rand_attn(P, heads, q, seed=step)
        want = ctrl.forward(attn.reshape(P * heads, q, L), True).reshape(P, heads, q, L)
        got = edit.edit_cross(attn, step)
        assert got.shape == attn.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert torch.equal(got[0], attn[0])
        sa = rand_attn(P, heads, q, k=q, seed=100 + step)
        want_s = ctrl.forward(sa.reshape(P * heads, q, q), False).reshape(P, heads, q, q)
        assert torch.equal(edit.edit_self(sa, step), want_s)
        assert edit.self_active(step) == (ctrl.num_self_replace[0] <= step < ctrl.num_self_replace[1])
    return edit


@pytest.mark.parametrize("x,y", REPLACE_PAIRS)
def test_edit_cross_replace_matches_reference(x, y):
    run_both([x, y], "replace")


@pytest.mark.parametrize("x,y", REFINE_PAIRS)
def test_edit_cross_refine_matches_reference(x, y):
    run_both([x, y], "refine")


@pytest.mark.parametrize("mode,x,y,words", [
    ("replace", "a cat sitting on a sofa", "a tiger sitting on a sofa", [("tiger", 2.0), ("sofa", 0.5)]),
    ("replace", "a cat sitting on a sofa", "a squirrel sitting on a bicycle", [("squirrel", -1.0)]),
    ("refine", "a cat sitting on a sofa", "a fluffy cat sitting on a sofa", [("fluffy", 3.0)]),
    ("refine", "a tiger", "a watercolor tiger", [("watercolor", 0.2), ("tiger", 2.5)]),
])
def test_edit_cross_reweight_matches_reference(mode, x, y, words):
    edit = run_both([x, y], mode, reweight=words)
    assert edit.equalizer.shape == (1, L)
    torch.testing.assert_close(edit.equalizer, ref_equalizer(y, [w for w, _ in words], [v for _, v in words]))


def test_edit_cross_windows_and_several_edits_match_reference():
    prompts = ["a cat sitting on a sofa", "a dog sitting on a sofa", "a cat sitting on a bicycle",
               "a tiger sitting on a sofa"]
    edit = run_both(prompts, "replace", num_steps=20, cross=(0.1, 0.9),
                    windows={"sofa": (0.0, 0.3), "bicycle": 0.5, "tiger": (0.2, 0.6)}, self_rep=(0.2, 0.6))
    assert edit.cross_alpha.shape == (21, 3, L)
    assert edit.self_replace == (4, 12)
    prompts = ["a cat sitting on a sofa", "a fluffy cat sitting on a sofa", "a cat sitting on a big bicycle"]
    run_both(prompts, "refine", num_steps=15, windows={"fluffy": 0.2, "bicycle": (0.5, 1.0)})


def test_cross_alpha_defaults_match_reference():
    prompts = ["a cat sitting on a sofa", "a tiger sitting on a sofa"]
    # self-replace 0.4: the prompt-to-prompt notebook's word-swap example (the default is null_text_w_ptp's 0.5)
    edit = build_attention_edit(pt(prompts[0]), [pt(prompts[1])], "replace", self_replace=0.4)
    ref = ref_time_words_alpha(prompts, 50, {"default_": 0.8}).reshape(51, 1, L)
    assert torch.equal(edit.cross_alpha, ref)
    # 0.8 of 51 rows: rows 0..39 edited, 40..50 not.
    assert edit.cross_alpha[:40].eq(1).all() and edit.cross_alpha[40:].eq(0).all()
    assert edit.cross_active(39) and not edit.cross_active(40)
    assert edit.self_replace == (0, 20)
    assert edit.num_steps == 50 and edit.n_prompts == 2 and edit.n_edits == 1


def test_defaults_are_the_null_text_notebooks():
    """One definition of each default (core.attention_edit), the authors' null_text_w_ptp.ipynb settings: cross
    replace 0.8, self replace 0.5 (steps 0..24 of 50), local blend from 0.2 (step 10) at threshold 0.3; the
    controller's value type has the same defaults."""
    from nulltext_p2p.core.attention_edit import BLEND_START, BLEND_THRESHOLD, CROSS_REPLACE, SELF_REPLACE
    from nulltext_p2p.core.values import AttentionControl

    assert (CROSS_REPLACE, SELF_REPLACE, BLEND_START, BLEND_THRESHOLD) == (0.8, 0.5, 0.2, 0.3)
    edit = build_attention_edit(pt("a cat sitting on a sofa"), [pt("a tiger sitting on a sofa")], "replace",
                                blend_words=["cat", "tiger"])
    assert edit.self_replace == (0, 25)
    assert edit.cross_alpha[:40].eq(1).all() and edit.cross_alpha[40:].eq(0).all()
    assert edit.blend_start == 10 and edit.blend_threshold == 0.3
    control = AttentionControl(source=None, targets=[])
    assert (control.cross_replace, control.self_replace, control.blend_start, control.blend_threshold) == \
        (0.8, 0.5, 0.2, 0.3)


def test_reweight_per_edit_rows():
    src = pt("a cat sitting on a sofa")
    t1, t2 = pt("a tiger sitting on a sofa"), pt("a dog sitting on a bicycle")
    edit = build_attention_edit(src, [t1, t2], "replace", reweight=[("tiger", 2.0), ("sofa", 0.5)])
    eq = edit.equalizer
    assert eq.shape == (2, L)
    assert eq[0, t1.find("tiger")].eq(2).all() and eq[0, t1.find("sofa")].eq(0.5).all()
    assert eq[1].eq(1).all()  # neither word is in the second edited prompt
    assert (eq[0] != 1).sum() == len(t1.find("tiger")) + len(t1.find("sofa"))


@pytest.mark.parametrize("mode,prompts", [
    ("replace", ["a cat sitting on a sofa", "a tiger sitting on a sofa", "a tiger sitting on a bicycle"]),
    ("refine", ["a cat sitting on a sofa", "a big tiger sitting on a sofa", "a red tiger on a sofa"]),
])
def test_reweight_equalizer_per_edit_matches_reference(mode, prompts):
    """Reweight builds one equalizer per edited prompt; where the word has the same tokens in every edit that is the
    reference's single equalizer from prompts[1], applied to all edits (cross edit checked step by step)."""
    edit = run_both(prompts, mode, reweight=[("tiger", 2.0)])
    ref = ref_equalizer(prompts[1], ["tiger"], [2.0])
    assert torch.equal(edit.equalizer, ref.expand(2, L))


def test_reweight_equalizer_follows_the_word_in_each_edit():
    """Where the word moves in a later edit the reference's equalizer (from prompts[1]) scales other tokens there;
    the pack's row for that edit scales the word."""
    prompts = ["a cat sitting on a sofa", "a tiger sitting on a sofa", "a big red tiger sitting on a sofa"]
    t2 = pt(prompts[2])
    edit = build_attention_edit(pt(prompts[0]), [pt(p) for p in prompts[1:]], "refine", reweight=[("tiger", 2.0)])
    ref = ref_equalizer(prompts[1], ["tiger"], [2.0])[0]
    torch.testing.assert_close(edit.equalizer[0], ref)  # the first edit: the reference
    assert edit.equalizer[1, t2.find("tiger")].eq(2).all() and (edit.equalizer[1] != 1).sum() == 2
    assert ref[t2.find("big") + t2.find("red")].eq(2).all()  # the reference's row lands on "big red" in edit 2


@pytest.mark.parametrize("mode", ["replace", "refine"])
def test_identical_prompts_give_identity_edit(mode):
    src = "a cat sitting on a sofa"
    prompts = [src, src, "a dog sitting on a sofa" if mode == "replace" else "a big dog sitting on a sofa", src]
    edit = build_attention_edit(pt(src), [pt(p) for p in prompts[1:]], mode, num_steps=10,
                                cross_replace=1.0, self_replace=1.0)
    attn = rand_attn(4, 3, 64, seed=5)
    attn[1] = attn[0]
    attn[3] = attn[0]
    for step in range(10):
        out = edit.edit_cross(attn, step)
        for r in (0, 1, 3):
            torch.testing.assert_close(out[r], attn[r], rtol=0, atol=1e-6)
        assert not torch.allclose(out[2], attn[2], atol=1e-3)  # the real edit does change its row
    sa = rand_attn(4, 3, 16, k=16, seed=6)
    sa[1] = sa[0]
    out = edit.edit_self(sa, 3)
    assert torch.equal(out[1], sa[0]) and torch.equal(out[2], sa[0])


def test_edit_cross_does_not_modify_input_and_checks_shapes():
    edit = build_attention_edit(pt("a cat"), [pt("a dog")], "replace", num_steps=5)
    attn = rand_attn(2, 2, 4)
    keep = attn.clone()
    edit.edit_cross(attn, 0)
    assert torch.equal(attn, keep)
    with pytest.raises(ValueError, match="77"):
        edit.edit_cross(rand_attn(2, 2, 4, k=154), 0)
    with pytest.raises(ValueError, match="n_prompts=2"):
        edit.edit_cross(rand_attn(3, 2, 4), 0)
    with pytest.raises(ValueError, match="step"):
        edit.edit_cross(attn, 6)
    # fp16 / bf16 inputs keep their dtype
    for dt in (torch.float16, torch.bfloat16):
        out = edit.edit_cross(attn.to(dt), 1)
        assert out.dtype == dt
        torch.testing.assert_close(out.float(), edit.edit_cross(attn, 1), atol=2e-2, rtol=2e-2)


# --------------------------------------------------------------------------------------------------------
# Local blend
# --------------------------------------------------------------------------------------------------------


def test_blend_matches_reference_localblend():
    prompts = ["a cat sitting on a sofa", "a tiger sitting on a sofa"]
    heads, num_steps = 2, 50
    g = torch.Generator().manual_seed(1)
    # The reference store: five 16x16 cross-attention layers, each [batch * heads, 256, 77].
    maps_list = [torch.rand(2 * heads, 256, L, generator=g).softmax(-1) for _ in range(5)]
    x_t = torch.randn(2, 4, 64, 64, generator=g)
    ref_call, alpha_layers = ref_blend(prompts, [("cat",), ("tiger",)], num_steps, maps_list, x_t)
    edit = build_attention_edit(pt(prompts[0]), [pt(prompts[1])], "replace", num_steps=num_steps,
                                blend_words=["cat", "tiger"])
    assert torch.equal(edit.word_alpha, alpha_layers.reshape(2, L))
    assert edit.blend_start == 10 and edit.blend_threshold == 0.3
    maps = torch.cat([m.reshape(2, heads, 16, 16, L) for m in maps_list], dim=1)  # [P, 5*heads, 16, 16, L]
    mask = edit.blend_mask(maps, (64, 64))
    assert mask.shape == (2, 1, 64, 64) and mask.dtype == torch.float32
    for step in range(num_steps):
        want = ref_call(x_t)
        got = edit.apply_blend(x_t, mask) if edit.blend_active(step) else x_t
        assert torch.equal(got, want), step
    assert [s for s in range(num_steps) if edit.blend_active(s)] == list(range(10, 50))


@pytest.mark.parametrize("x,y,blend,ref_words", [
    ("a cat sitting on a sofa", "a tiger sitting on a sofa", ["cat", "tiger"], (("cat",), ("tiger",))),
    ("a cat sitting on a sofa", "a fluffy cat sitting on a sofa", ["cat"], (("cat",), ("cat",))),  # cat moves 2 -> 3
    ("a cat sitting on a sofa", "a squirrel sitting on a big bicycle", ["cat", "squirrel", "bicycle"],
     (("cat",), ("squirrel", "bicycle"))),
])
def test_blend_words_in_every_prompt_match_reference(x, y, blend, ref_words):
    """One edit: the pack's blend words, looked up in every prompt, give the reference's word-per-prompt alphas and
    mask (the reference's usual calls name, per prompt, the blend words that prompt contains)."""
    g = torch.Generator().manual_seed(2)
    maps_list = [torch.rand(2 * 2, 256, L, generator=g).softmax(-1) for _ in range(5)]
    x_t = torch.randn(2, 4, 64, 64, generator=g)
    ref_call, alpha_layers = ref_blend([x, y], ref_words, 10, maps_list, x_t)
    edit = build_attention_edit(pt(x), [pt(y)], "refine", num_steps=10, blend_words=blend)
    assert torch.equal(edit.word_alpha, alpha_layers.reshape(2, L))
    maps = torch.cat([m.reshape(2, 2, 16, 16, L) for m in maps_list], dim=1)
    want = [ref_call(x_t) for _ in range(3)][-1]  # step 3 > int(0.2 * 10): blended
    assert edit.blend_active(2)
    assert torch.equal(edit.apply_blend(x_t, edit.blend_mask(maps, (64, 64))), want)
    # all blend words for every prompt: the reference call that is the pack's rule, for any number of edits
    _, all_words = ref_blend([x, y], [tuple(blend)] * 2, 10, maps_list, x_t)
    assert torch.equal(edit.word_alpha, all_words.reshape(2, L))


def test_blend_mask_on_known_blob():
    src, tgt = pt("a cat on a sofa"), pt("a tiger on a sofa")
    edit = build_attention_edit(src, [tgt], "replace", num_steps=50, blend_words=["cat", "tiger"],
                                blend_threshold=0.3)
    maps = torch.zeros(2, 3, 16, 16, L)
    maps[0, :, 4:8, 5:10, src.find("cat")[0]] = 1.0  # source: cat blob
    for p in tgt.find("tiger"):  # target: tiger blob elsewhere, split over its two tokens
        maps[1, :, 10:12, 1:3, p] = 0.5
    maps[:, :, :, :, 0] = 5.0  # BOS attention everywhere: must be ignored
    mask = edit.blend_mask(maps, (64, 48))
    src_mask = torch.zeros(64, 48)
    src_mask[12:36, 12:33] = 1  # rows 3..8 -> 12..35 (x4); cols 4..10 -> 12..32 (x3)
    tgt_mask = torch.zeros(64, 48)
    tgt_mask[36:52, 0:12] = 1  # rows 9..12 -> 36..51; cols 0..3 -> 0..11
    # Nearest resize 16 -> 48 picks source column floor(c / 3); check against that exactly.
    expect_src = torch.zeros(16, 16)
    expect_src[3:9, 4:11] = 1
    expect_tgt = torch.zeros(16, 16)
    expect_tgt[9:13, 0:4] = 1
    up = lambda m: nnf.interpolate(m[None, None], size=(64, 48))[0, 0]
    assert torch.equal(up(expect_src), src_mask) and torch.equal(up(expect_tgt), tgt_mask)
    assert torch.equal(mask[0, 0], src_mask)
    assert torch.equal(mask[1, 0], torch.maximum(src_mask, tgt_mask))
    x = torch.randn(2, 4, 64, 48)
    out = edit.apply_blend(x, mask)
    assert torch.equal(out[0], x[0])
    inside = mask[1, 0].bool()
    torch.testing.assert_close(out[1][:, inside], x[1][:, inside])  # x0 + (x1 - x0): equal up to rounding
    assert torch.equal(out[1][:, ~inside], x[0][:, ~inside])


def test_blend_word_only_in_some_prompts_and_errors():
    src, tgt = pt("a cat on a sofa"), pt("a tiger on a sofa")
    edit = build_attention_edit(src, [tgt], "replace", blend_words=["tiger"])
    assert edit.word_alpha[0].eq(0).all() and edit.word_alpha[1, tgt.find("tiger")].eq(1).all()
    with pytest.raises(PromptError) as e:
        build_attention_edit(src, [tgt], "replace", blend_words=["cat", "horse"])
    assert "'horse'" in str(e.value) and "'tiger'" in str(e.value) and "'sofa'" in str(e.value)
    with pytest.raises(ValueError, match="no local blend"):
        build_attention_edit(src, [tgt], "replace").blend_mask(torch.zeros(2, 1, 16, 16, L), (64, 64))


# --------------------------------------------------------------------------------------------------------
# Copy / device, validation
# --------------------------------------------------------------------------------------------------------


def test_deepcopy_and_to():
    edit = build_attention_edit(pt("a cat on a sofa"), [pt("a fluffy cat on a sofa")], "refine",
                                reweight=[("fluffy", 2.0)], blend_words=["cat"])
    c = copy.deepcopy(edit)
    assert isinstance(c, AttentionEdit)
    for name in ("mapper", "refine_alphas", "equalizer", "cross_alpha", "word_alpha"):
        assert torch.equal(getattr(c, name), getattr(edit, name))
        assert getattr(c, name).data_ptr() != getattr(edit, name).data_ptr()
    assert (c.num_steps, c.mode, c.self_replace, c.blend_start) == (edit.num_steps, edit.mode, edit.self_replace,
                                                                    edit.blend_start)
    h = edit.to("cpu", torch.float16)
    assert h is not edit and h.mapper.dtype == torch.int64 and h.cross_alpha.dtype == torch.float16
    assert h.equalizer.dtype == torch.float16 and edit.cross_alpha.dtype == torch.float32
    attn = rand_attn(2, 2, 8).half()
    torch.testing.assert_close(h.edit_cross(attn, 3).float(), edit.edit_cross(attn.float(), 3), atol=1e-2, rtol=1e-2)


def test_build_validation_messages():
    src, tgt = pt("a cat on a sofa"), pt("a dog on a sofa")
    with pytest.raises(PromptError, match="unknown edit mode"):
        build_attention_edit(src, [tgt], "swap")
    with pytest.raises(PromptError, match=r"within \[0, 1\]"):
        build_attention_edit(src, [tgt], "replace", cross_replace=1.2)
    with pytest.raises(PromptError, match="after its end"):
        build_attention_edit(src, [tgt], "replace", self_replace=(0.6, 0.2))
    with pytest.raises(PromptError, match="'sofa'.*after its end"):
        build_attention_edit(src, [tgt], "replace", word_windows={"sofa": (0.5, 0.1)})
    with pytest.raises(PromptError) as e:
        build_attention_edit(src, [tgt], "replace", reweight=[("tigr", 2.0)])
    assert "'tigr'" in str(e.value) and "'dog'" in str(e.value)
    with pytest.raises(PromptError) as e:
        build_attention_edit(src, [tgt], "replace", word_windows={"horse": 0.3})
    assert "'horse'" in str(e.value)
    with pytest.raises(PromptError) as e:
        build_attention_edit(src, [pt("a dog on the big sofa")], "replace")
    assert "5 words" in str(e.value) and "6 words" in str(e.value) and "refine" not in str(e.value)
    with pytest.raises(PromptError, match="blend_threshold"):
        build_attention_edit(src, [tgt], "replace", blend_words=["dog"], blend_threshold=1.5)
    with pytest.raises(PromptError, match="at least one"):
        build_attention_edit(src, [], "replace")
    # reweight word only in the source: nothing to reweight
    with pytest.raises(PromptError, match="'cat'"):
        build_attention_edit(src, [tgt], "replace", reweight=[("cat", 2.0)])
    # multi-word phrase and case-insensitive match
    e2 = build_attention_edit(src, [pt("a Dog on a Sofa.")], "replace", reweight=[("dog on", 2.0)])
    assert e2.equalizer[0, 2:4].eq(2).all() and (e2.equalizer != 1).sum() == 2


# --------------------------------------------------------------------------------------------------------
# Optional: the real CLIP tokenizer (skipped unless transformers and an SD1 tokenizer folder are present)
# --------------------------------------------------------------------------------------------------------


def _clip_tokenizer():
    try:
        from transformers import CLIPTokenizer
    except Exception:
        return None
    here = Path(__file__).resolve().parent.parent
    host = os.environ.get("COMFYUI_PATH", "")
    candidates = [os.environ.get("NULLTEXT_P2P_CLIP_TOKENIZER", ""),
                  Path(host) / "comfy" / "sd1_tokenizer" if host else "",  # the host under test
                  here.parent.parent / "comfy" / "sd1_tokenizer",  # custom_nodes/<pack> inside ComfyUI
                  Path.home() / "ComfyUI" / "comfy" / "sd1_tokenizer"]
    for c in candidates:
        if c and (Path(c) / "vocab.json").is_file():
            try:
                return CLIPTokenizer.from_pretrained(str(c))
            except Exception:
                return None
    return None


CLIP_PAIRS = [
    ("a cat sitting on a sofa", "a tiger sitting on a sofa"),
    ("A photo of a Squirrel, eating pizza.", "A photo of a Hedgehog, eating pizza."),
    ("watercolor origami tiger's tail", "watercolor origami lion's tail"),
    ("a butterfly-shaped cafe on a hill", "a dragonfly-shaped cafe on a hill"),
    ("a cat sitting on a sofa", "a fluffy orange cat sitting on a velvet sofa"),
]


@pytest.mark.parametrize("x,y", CLIP_PAIRS)
def test_real_clip_tokenizer_matches_reference(x, y):
    tok = _clip_tokenizer()
    if tok is None:
        pytest.skip("transformers or an SD1 CLIP tokenizer folder is not available")

    def real_pt(text):
        words = split_prompt(text)
        wt = tuple(tuple(tok.encode(w, add_special_tokens=False)) for w in words)
        return PromptTokens(text, words, wt, tok.bos_token_id, tok.eos_token_id)

    px, py = real_pt(x), real_pt(y)
    assert px.ids() == tok.encode(x) and py.ids() == tok.encode(y)
    for p, text in ((px, x), (py, y)):
        for i in range(len(p.words)):
            assert p.word_positions(i) == ref_word_inds(text, i, tok).tolist()
    m, a = refinement_mapper(px, py)
    rm, ra = ref_get_mapper(x, y, tok=tok)
    assert torch.equal(m, rm) and torch.equal(a, ra)
    if len(px.words) == len(py.words):
        assert torch.equal(replacement_mapper(px, py), ref_replacement_mapper(x, y, tok=tok))
