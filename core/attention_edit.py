"""Prompt-to-Prompt attention editing (replace / refine / reweight / local blend), pure torch.

Re-implements, on tokenised prompts (:class:`PromptTokens`), the semantics of the controllers in the
reference notebook ``null_text_w_ptp.ipynb`` (google/prompt-to-prompt): ``AttentionControlEdit.forward``,
``AttentionReplace`` / ``AttentionRefine`` / ``AttentionReweight.replace_cross_attention``,
``replace_self_attention``, ``LocalBlend`` and ``get_equalizer``, plus ``ptp_utils``'s
``get_time_words_attention_alpha``.

Batch convention: row 0 of every tensor is the source prompt, rows 1.. the edited prompts. Steps are DDIM
step indices, 0-based; step 0 is the first sampling step (highest noise), ``num_steps - 1`` the last.
Only the conditional branch's attention is edited.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import torch
import torch.nn.functional as nnf

from .prompt_tokens import PromptError, PromptLayout, PromptTokens, segments_of
from .seq_aligner import refinement_mapper, replacement_mapper

__all__ = [
    "AttentionEdit",
    "PromptError",
    "build_attention_edit",
    "check_window",
    "MODES",
    "CROSS_REPLACE",
    "SELF_REPLACE",
    "BLEND_START",
    "BLEND_THRESHOLD",
]

#: The edit kinds (the Attention Controller's ``mode``): word swap, added or removed words.
MODES = ("replace", "refine")

# The default settings, those of the authors' null_text_w_ptp.ipynb: cross_replace_steps 0.8, self_replace_steps
# 0.5 (the prompt-to-prompt notebook's first word-swap example uses 0.4; the paper gives 0.4..0.6), LocalBlend from
# start_blend 0.2 at threshold 0.3. The Attention Controller's widgets and core.values.AttentionControl use them.
CROSS_REPLACE = 0.8
SELF_REPLACE = 0.5
BLEND_START = 0.2
BLEND_THRESHOLD = 0.3


def check_window(what: str, start: float, end: float) -> tuple[float, float]:
    """``(start, end)`` as floats when ``0 <= start <= end <= 1`` (fractions of the steps); else :class:`PromptError`
    (``what`` names the window)."""
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise PromptError(f"{what}: the window ({start}, {end}) must lie within [0, 1] (fractions of the steps)")
    if start > end:
        raise PromptError(f"{what}: the window start {start} is after its end {end}")
    return float(start), float(end)


def _as_window(what: str, value: float | Sequence[float]) -> tuple[float, float]:
    """A number x means (0, x) like the reference; a pair is (start, end)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_window(what, 0.0, float(value))
    try:
        start, end = value  # type: ignore[misc]
        return check_window(what, float(start), float(end))
    except (TypeError, ValueError) as e:
        if isinstance(e, PromptError):
            raise
        raise PromptError(f"{what}: expected a number or a (start, end) pair, got {value!r}") from None


# --------------------------------------------------------------------------------------------------------
# The edit
# --------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class AttentionEdit:
    """Everything needed to edit attention during sampling; tensors and plain numbers only.

    Methods never modify the stored tensors in place, so copies may share them. Equality is identity.

    Attributes:
        num_steps: number of DDIM steps the edit was built for.
        n_prompts: 1 source + number of edited prompts (rows of the batch).
        mode: "replace" (word swap) or "refine" (words added).
        max_len: number of text tokens (cross-attention keys), 77.
        mapper: replace: [n_edits, max_len, max_len] float (source pos -> target pos weights);
            refine: [n_edits, max_len] int64 (aligned source position per target position, -1 = none).
        refine_alphas: refine only, [n_edits, max_len] float: 1 where the target token is aligned.
        equalizer: optional [n_edits, max_len] float: reweight factors (1 = unchanged).
        cross_alpha: [num_steps + 1, n_edits, max_len] float: 1 where the edited map is used at that step.
        self_replace: (start, end): self-attention is replaced for steps ``start <= step < end``.
        word_alpha: optional [n_prompts, max_len] float: 1 at the tokens of the local-blend words.
        blend_start: local blend is applied to the latent produced by step ``step`` iff ``step >= blend_start``
            (reference: ``counter > int(start_blend * num_steps)`` with the counter incremented once per step
            before the test, so with 50 steps and start 0.2 steps 10..49 are blended, 0..9 are not).
        blend_threshold: threshold on the max-normalised map (reference ``th[0]`` = 0.3).
    """

    num_steps: int
    n_prompts: int
    mode: str
    max_len: int
    mapper: torch.Tensor
    cross_alpha: torch.Tensor
    self_replace: tuple[int, int]
    refine_alphas: torch.Tensor | None = None
    equalizer: torch.Tensor | None = None
    word_alpha: torch.Tensor | None = None
    blend_start: int = 10
    blend_threshold: float = BLEND_THRESHOLD

    # ---- bookkeeping -------------------------------------------------------------------------------------

    @property
    def n_edits(self) -> int:
        return self.n_prompts - 1

    @property
    def has_blend(self) -> bool:
        return self.word_alpha is not None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AttentionEdit":
        """A copy with the float tensors on ``device`` in ``dtype`` (integer tensors keep their dtype)."""
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
                kw[f.name] = v
            else:
                kw[f.name] = copy.deepcopy(v)
        return AttentionEdit(**kw)

    def cross_active(self, step: int) -> bool:
        """Whether :meth:`edit_cross` changes anything at ``step``."""
        self._check_step(step)
        return bool((self.cross_alpha[step] != 0).any())

    def self_active(self, step: int) -> bool:
        """Whether :meth:`edit_self` replaces the maps at ``step``."""
        return self.self_replace[0] <= step < self.self_replace[1]

    def blend_active(self, step: int) -> bool:
        """Whether the latent produced by DDIM step ``step`` is locally blended."""
        return self.word_alpha is not None and step >= self.blend_start

    def _check_step(self, step: int) -> None:
        if not 0 <= step <= self.num_steps:
            raise ValueError(f"step {step} is outside 0..{self.num_steps} for an edit built for {self.num_steps} steps")

    # ---- attention ---------------------------------------------------------------------------------------

    def edit_cross(self, attn: torch.Tensor, step: int) -> torch.Tensor:
        """Edit conditional cross-attention probabilities ``attn`` [n_prompts, heads, Q, max_len] at ``step``.

        Row 0 (source) is returned unchanged; rows 1.. become
        ``edited * cross_alpha[step] + attn_i * (1 - cross_alpha[step])`` where ``edited`` is the source map
        through the mapper (replace: ``einsum(hpw,bwn->bhpn)``; refine: gather by the alignment, then
        ``* alphas + attn_i * (1 - alphas)``), multiplied by the equalizer if reweighting. Returns a new tensor.
        """
        self._check_step(step)
        if attn.dim() != 4 or attn.shape[0] != self.n_prompts:
            raise ValueError(
                f"edit_cross expects attention [n_prompts={self.n_prompts}, heads, queries, keys], got {tuple(attn.shape)}"
            )
        if attn.shape[-1] != self.max_len:
            raise ValueError(
                f"edit_cross expects exactly {self.max_len} text tokens (keys) per prompt, got {attn.shape[-1]}; "
                f"longer or chunked text contexts are not supported"
            )
        dev, dt = attn.device, attn.dtype
        base, rep = attn[0], attn[1:]
        if self.mode == "replace":
            new = torch.einsum("hpw,bwn->bhpn", base, self.mapper.to(dev, dt))
        else:
            assert self.refine_alphas is not None
            a = self.refine_alphas.to(dev, dt)[:, None, None, :]
            new = base[:, :, self.mapper.to(dev)].permute(2, 0, 1, 3)
            new = new * a + rep * (1 - a)
        if self.equalizer is not None:
            new = new * self.equalizer.to(dev, dt)[:, None, None, :]
        alpha = self.cross_alpha[step].to(dev, dt)[:, None, None, :]
        out_rep = new * alpha + (1 - alpha) * rep
        return torch.cat([base[None], out_rep], dim=0)

    def edit_self(self, attn: torch.Tensor, step: int) -> torch.Tensor:
        """Self-attention ``attn`` [n_prompts, heads, Q, Q]: inside the self-replace range rows 1.. take row 0.

        The caller decides which layers are eligible (reference: layers with Q <= 32**2 at 512 px).
        Outside the range the input itself is returned.
        """
        if attn.dim() != 4 or attn.shape[0] != self.n_prompts:
            raise ValueError(
                f"edit_self expects attention [n_prompts={self.n_prompts}, heads, queries, keys], got {tuple(attn.shape)}"
            )
        if not self.self_active(step):
            return attn
        return attn[:1].expand(self.n_prompts, *attn.shape[1:]).clone()

    # ---- local blend -------------------------------------------------------------------------------------

    def blend_mask(self, maps: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Local-blend mask [n_prompts, 1, H, W] (float 0/1) from cross-attention maps.

        ``maps`` [n_prompts, n_maps, h, w, max_len]: the conditional cross-attention probabilities of the
        chosen layers (reference: the five 16x16 layers at 512 px) after :meth:`edit_cross` (the reference's
        store holds the edited rows as edited), all heads as separate maps, summed or averaged over all steps
        so far including the current one (the reference passes its running sum; the scale cancels in the
        normalisation). Reference ``LocalBlend.get_mask(use_pool=True)``: sum over the
        blend words' tokens, mean over maps, 3x3 max-pool (stride 1, pad 1), nearest resize to ``latent_hw``,
        divide by each prompt's max, ``> blend_threshold``, union with the source's mask.
        """
        if self.word_alpha is None:
            raise ValueError("this edit has no local blend (no blend words were given)")
        if maps.dim() != 5 or maps.shape[0] != self.n_prompts or maps.shape[-1] != self.max_len:
            raise ValueError(
                f"blend_mask expects maps [n_prompts={self.n_prompts}, n_maps, h, w, {self.max_len}], "
                f"got {tuple(maps.shape)}"
            )
        m = maps.float()
        alpha = self.word_alpha.to(m.device, torch.float32)[:, None, None, None, :]
        m = (m * alpha).sum(-1).mean(1, keepdim=True)
        m = nnf.max_pool2d(m, (3, 3), (1, 1), padding=(1, 1))
        mask = nnf.interpolate(m, size=tuple(int(s) for s in latent_hw))
        mask = mask / mask.amax(dim=(2, 3), keepdim=True)
        mask = mask.gt(self.blend_threshold)
        mask = mask[:1] | mask
        return mask.float()

    @staticmethod
    def apply_blend(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x[:1] + mask * (x - x[:1])`` for latents ``x`` [n_prompts, C, H, W]: outside the mask, rows take the source."""
        mask = mask.to(x.device, x.dtype)
        return x[:1] + mask * (x - x[:1])


# --------------------------------------------------------------------------------------------------------
# Building an edit
# --------------------------------------------------------------------------------------------------------


def _prompt_list(prompts: Iterable[PromptTokens]) -> str:
    return "; ".join(f"{i}: {p.describe()}" for i, p in enumerate(prompts))


def _find_in_prompts(word: str, prompts: Sequence[PromptTokens], what: str, where: str = "edited prompt",
                     listed: str = "edited prompts") -> list[tuple[int, list[int]]]:
    """``(prompt index, token positions)`` for every prompt of ``prompts`` that contains ``word``.

    Raises :class:`PromptError` ("``what`` is not in any ``where``; ``listed``: the prompts") when none does.
    """
    found = [(i, pos) for i, p in enumerate(prompts) if (pos := p.find(word))]
    if not found:
        raise PromptError(f"{what} is not in any {where}; {listed}: {_prompt_list(prompts)}")
    return found


def _set_window(alpha: torch.Tensor, window: tuple[float, float], edit: int, positions: Sequence[int] | None) -> None:
    """Reference ``update_alpha_time_word``: rows [int(s*R), int(e*R)) = 1, others 0, R = alpha.shape[0]."""
    rows = alpha.shape[0]
    start, end = int(window[0] * rows), int(window[1] * rows)
    cols = torch.arange(alpha.shape[2]) if positions is None else torch.tensor(list(positions), dtype=torch.long)
    alpha[:start, edit, cols] = 0
    alpha[start:end, edit, cols] = 1
    alpha[end:, edit, cols] = 0


def _segment_pairs(source: PromptTokens | PromptLayout,
                   target: PromptTokens | PromptLayout) -> list[tuple[int, PromptTokens, PromptTokens]]:
    """``(offset, source segment, target segment)`` of two prompts laid out alike (``core.prompt_tokens``)."""
    src, tgt = segments_of(source), segments_of(target)
    if [(o, p.max_len) for o, p in src] != [(o, p.max_len) for o, p in tgt]:
        raise PromptError(
            f"the edited prompt {target.text!r} is laid out in other token segments than the source prompt (a "
            f"75-token CLIP chunk boundary moved); keep both prompts within 75 tokens, or change words so that each "
            f"chunk keeps its words")
    return [(o, s, t) for (o, s), (_, t) in zip(src, tgt)]


def _replace_mapper(source, target, max_len: int, fix_tail_alignment: bool) -> torch.Tensor:
    """The word-swap mapper, segment by segment (identity outside the segments)."""
    pairs = _segment_pairs(source, target)
    if len(pairs) == 1 and pairs[0][0] == 0 and pairs[0][1].max_len == max_len:
        return replacement_mapper(source if isinstance(source, PromptTokens) else pairs[0][1],
                                  target if isinstance(target, PromptTokens) else pairs[0][2],
                                  fix_tail_alignment=fix_tail_alignment)
    mapper = torch.eye(max_len)
    for offset, s, t in pairs:
        n = s.max_len
        mapper[offset:offset + n, offset:offset + n] = replacement_mapper(s, t, fix_tail_alignment=fix_tail_alignment)
    return mapper


def _refine_mapper(source, target, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The refinement mapper and alphas, segment by segment (identity with alpha 1 outside the segments)."""
    pairs = _segment_pairs(source, target)
    mapper = torch.arange(max_len, dtype=torch.int64)
    alphas = torch.ones(max_len)
    for offset, s, t in pairs:
        m, a = refinement_mapper(s, t)
        n = s.max_len
        mapper[offset:offset + n] = torch.where(m >= 0, m + offset, m)
        alphas[offset:offset + n] = a
    return mapper, alphas


def _mappers(source, targets: list, mode: str, fix_tail_alignment: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mapper, refine alphas or None), one row per edit (see :class:`AttentionEdit`)."""
    max_len = source.max_len
    if mode == "replace":
        return torch.stack([_replace_mapper(source, t, max_len, fix_tail_alignment) for t in targets]), None
    pairs = [_refine_mapper(source, t, max_len) for t in targets]
    return torch.stack([m for m, _ in pairs]), torch.stack([a for _, a in pairs])


def _cross_alpha(targets: list[PromptTokens], num_steps: int, max_len: int, cross_replace,
                 word_windows: dict | None) -> torch.Tensor:
    """Cross-attention schedule [num_steps + 1, n_edits, max_len] (reference ``get_time_words_attention_alpha``):
    the default window everywhere, then each word's window at its tokens in the edited prompts."""
    default_window = _as_window("cross_replace", cross_replace)
    cross_alpha = torch.zeros(num_steps + 1, len(targets), max_len)
    for e in range(len(targets)):
        _set_window(cross_alpha, default_window, e, None)
    for word, value in (word_windows or {}).items():
        window = _as_window(f"window of {word!r}", value)
        for e, pos in _find_in_prompts(word, targets, f"the word {word!r} (cross-attention window)"):
            _set_window(cross_alpha, window, e, pos)
    return cross_alpha


def _equalizer(targets: list[PromptTokens], max_len: int, reweight: list[tuple[str, float]]) -> torch.Tensor:
    """Reweight factors [n_edits, max_len] (1 = unchanged) at each word's tokens in each edited prompt."""
    equalizer = torch.ones(len(targets), max_len)
    for word, value in reweight:
        value = float(value)
        if not math.isfinite(value):
            raise PromptError(f"the reweight factor of {word!r} is not a finite number: {value}")
        for e, pos in _find_in_prompts(word, targets, f"the reweight word {word!r}"):
            equalizer[e, pos] = value
    return equalizer


def _word_alpha(prompts: list[PromptTokens], max_len: int, blend_words: list[str]) -> torch.Tensor:
    """Local-blend word marks [n_prompts, max_len]: 1 at each blend word's tokens in every prompt that has it."""
    word_alpha = torch.zeros(len(prompts), max_len)
    for word in blend_words:
        for i, pos in _find_in_prompts(word, prompts, f"the blend word {word!r}", "prompt", "prompts (0 = source)"):
            word_alpha[i, pos] = 1
    return word_alpha


def build_attention_edit(
    source: PromptTokens,
    targets: list[PromptTokens],
    mode: str,
    num_steps: int = 50,
    cross_replace: float | tuple[float, float] = CROSS_REPLACE,
    word_windows: dict[str, float | tuple[float, float]] | None = None,
    self_replace: float | tuple[float, float] = SELF_REPLACE,
    reweight: list[tuple[str, float]] | None = None,
    blend_words: list[str] | None = None,
    blend_start: float = BLEND_START,
    blend_threshold: float = BLEND_THRESHOLD,
    *,
    fix_tail_alignment: bool = False,
) -> AttentionEdit:
    """Build an :class:`AttentionEdit` for ``source`` -> each of ``targets``.

    Args:
        mode: "replace" (word swap; same number of words) or "refine" (added/removed words).
        num_steps: DDIM steps of the sampling run.
        cross_replace: default cross-attention window, a fraction x (= (0, x)) or (start, end) of the
            ``num_steps + 1`` rows (reference ``get_time_words_attention_alpha``).
        word_windows: per-word windows overriding the default at that word's tokens in the edited prompts.
        self_replace: self-attention window; steps [int(num_steps*start), int(num_steps*end)).
        reweight: (word, factor) pairs; the word's tokens in each edited prompt get their maps multiplied, one
            equalizer row per edit (the reference builds one from the first edited prompt for all; equal for one
            edit), applied after replace/refine like ``AttentionReweight`` with a previous controller. As in the
            reference it only acts where ``cross_alpha`` is 1 (inside the cross-replace window). For a
            reweight-only edit use mode "replace" with the edited prompt equal to the source.
        blend_words: local-blend words, marked in every prompt that contains them (the reference looks up its
            word list i in prompt i only: equal when every prompt is given all the words).
        blend_start: blend the latents of steps >= int(blend_start * num_steps).
        blend_threshold: local-blend threshold on the max-normalised maps.
        fix_tail_alignment: see :func:`replacement_mapper` (default False = reference behaviour).

    The defaults are the reference's (:data:`CROSS_REPLACE`, :data:`SELF_REPLACE`, :data:`BLEND_START`,
    :data:`BLEND_THRESHOLD`). Words are matched case-insensitively, ignoring surrounding punctuation; a reweight,
    window or blend word that occurs in none of the prompts it is looked up in raises :class:`PromptError`.
    """
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise PromptError(f"unknown edit mode {mode!r}; expected one of {', '.join(MODES)}")
    targets = list(targets)
    if not targets:
        raise PromptError("at least one edited prompt is needed")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise PromptError(f"num_steps must be a positive integer, got {num_steps!r}")
    prompts = [source, *targets]
    max_len = source.max_len
    for p in targets:
        if p.max_len != max_len:
            raise PromptError(f"all prompts must have the same max_len, got {source.max_len} and {p.max_len}")

    mapper, refine_alphas = _mappers(source, targets, mode, fix_tail_alignment)
    cross_alpha = _cross_alpha(targets, num_steps, max_len, cross_replace, word_windows)
    s0, s1 = _as_window("self_replace", self_replace)
    equalizer = _equalizer(targets, max_len, reweight) if reweight else None
    word_alpha = None
    start_step = 0
    if blend_words:
        if not 0.0 <= float(blend_start) <= 1.0:
            raise PromptError(f"blend_start must be a fraction of the steps in [0, 1], got {blend_start}")
        if not 0.0 <= float(blend_threshold) < 1.0:
            raise PromptError(f"blend_threshold must be in [0, 1), got {blend_threshold}")
        word_alpha = _word_alpha(prompts, max_len, blend_words)
        start_step = int(float(blend_start) * num_steps)

    return AttentionEdit(
        num_steps=num_steps,
        n_prompts=len(prompts),
        mode=mode,
        max_len=max_len,
        mapper=mapper,
        cross_alpha=cross_alpha,
        self_replace=(int(num_steps * s0), int(num_steps * s1)),
        refine_alphas=refine_alphas,
        equalizer=equalizer,
        word_alpha=word_alpha,
        blend_start=start_step,
        blend_threshold=float(blend_threshold),
    )
