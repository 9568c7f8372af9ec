"""Prompt-to-Prompt on the joint attention of SD3/SD3.5 and Qwen-Image, through the host's public
``optimized_attention_override`` (``transformer_options``), composed with what other nodes put there.

The override is called for every attention of the diffusion model as ``override(func, *args, **kwargs)``: ``func``
is the host's attention, ``args`` start with q, k, v (``(B, N, heads * dim)``, or ``(B, heads, N, dim)`` with
``skip_reshape``), then heads and mask where the model passes them positionally; ``kwargs`` carry
``transformer_options`` with ``cond_or_uncond`` and ``sigmas``. A joint call has ``N = n_text + n_image`` with the
text tokens first (``n_image`` follows from the latent size; calls of another length, such as SD3.5 Medium's second,
image-only attention, are left alone).

- The step is derived from the sigma (no call counters: under gradients SD3's blocks are recomputed).
- Only the conditional chunk's rows are edited (``cond_or_uncond``); rows of a chunk are the prompt rows.
- Prompts padded to a common length (Qwen-Image: prompts of different token counts) get their padding keys masked
  on every call, so a padded row attends exactly as the unpadded prompt does.
- The host's attention (or an ``optimized_attention_override`` another node installed: upstream) computes every
  row; an edited row then gets ``upstream + (P_edit - P) V`` with ``P`` its own probabilities, which is the SD rule
  ``edit + (upstream - plain)`` (``host.attention_patch``) and leaves an unchanged probability exactly unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from ..core.attention_edit import AttentionEdit
from ..core.joint_attention import edit_joint_rows
from .attention_patch import AttentionMapStore
from .compat import SharedOnClone

OVERRIDE_KEY = "optimized_attention_override"
HEAD_CHUNK = 4  # heads per probability block (bounds the memory of the float32 maps)


class AttentionCall:
    """One call of the host's attention, its q/k/v as (B, heads, N, dim) and how to call it again."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs
        q, k, v = args[:3]
        self.heads = int(kwargs["heads"] if "heads" in kwargs else args[3])
        self.skip_reshape = bool(kwargs.get("skip_reshape", False))
        self.skip_output_reshape = bool(kwargs.get("skip_output_reshape", False))
        self.dim_head = int(q.shape[-1]) if self.skip_reshape else int(q.shape[-1]) // self.heads
        self.q, self.k, self.v = (self._split(t) for t in (q, k, v))
        self.scale = kwargs.get("scale") or 1.0 / math.sqrt(self.dim_head)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, dim) of a tensor the host reshapes as the queries' batch x heads (SD3 passes v as (B, N, heads,
        dim), q and k as (B, N, heads * dim))."""
        if self.skip_reshape:
            return t
        return t.reshape(t.shape[0], -1, self.heads, self.dim_head).transpose(1, 2)

    @property
    def batch(self) -> int:
        return int(self.q.shape[0])

    @property
    def length(self) -> int:
        return int(self.q.shape[2])

    @property
    def mask(self) -> Optional[torch.Tensor]:
        if "mask" in self.kwargs:
            return self.kwargs["mask"]
        return self.args[4] if len(self.args) > 4 else None

    def with_mask(self, mask: Optional[torch.Tensor]) -> tuple[tuple, dict]:
        """The call's arguments with ``mask`` in the mask's place."""
        args, kwargs = list(self.args), dict(self.kwargs)
        if "mask" in kwargs or len(args) <= 4:
            if len(args) == 3 and "heads" not in kwargs:
                raise ValueError("attention call without heads")
            kwargs["mask"] = mask
        else:
            args[4] = mask
        return tuple(args), kwargs

    def add_to_output(self, out: torch.Tensor, rows: slice, heads: slice, queries: slice, delta: torch.Tensor) -> None:
        """Add ``delta`` (B', heads', Q, dim) to ``out`` (the host's output layout) at rows x heads x queries."""
        if self.skip_output_reshape:
            out[rows, heads, queries] += delta.to(out.dtype)
            return
        b, n, hd = out.shape
        view = out.view(b, n, self.heads, self.dim_head)
        view[rows, queries, heads] += delta.transpose(1, 2).to(out.dtype)


def joint_probs(q: torch.Tensor, k: torch.Tensor, scale: float, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """softmax(q k^T * scale + mask) in float32: q (B, H, Q, D), k (B, H, N, D), mask broadcastable to (B, H, Q, N)."""
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits + mask.float()
    return torch.softmax(logits, dim=-1)


class JointAttentionPatch(SharedOnClone):
    """The ``optimized_attention_override`` of an Edited Sample run on a joint-attention model.

    ``text_len``: text positions of the conditioning (padded length); ``text_lengths``: each prompt row's real
    length (None: no padding); ``n_image``: image tokens (latent cells / patch area). Maps of the image queries over
    the text keys are recorded into ``store`` (after the edit, as on SD) for local blend and attention-map pictures.
    """

    def __init__(self, edit: Optional[AttentionEdit], schedule, n_prompts: int, text_len: int, n_image: int,
                 map_hw: tuple[int, int], text_lengths: Optional[list[int]] = None,
                 upstream: Optional[Callable] = None) -> None:
        self.edit = edit
        self.schedule = schedule
        self.n_prompts = n_prompts
        self.text_len = text_len
        self.n_image = n_image
        self.map_hw = map_hw
        self.text_lengths = text_lengths if text_lengths and min(text_lengths) < text_len else None
        self.upstream = upstream
        self.store = AttentionMapStore(set())

    # -- helpers ---------------------------------------------------------------------------------------------
    def _step(self, options: dict) -> Optional[int]:
        sig = options.get("sigmas")
        return None if sig is None else self.schedule.step_of_sigma(float(sig.reshape(-1)[0]))

    def _cond_groups(self, options: dict, batch: int) -> list[slice]:
        cou = options.get("cond_or_uncond") or [0]
        chunk = batch // len(cou)
        return [slice(i * chunk, (i + 1) * chunk) for i, c in enumerate(cou) if c == 0]

    def _padding_mask(self, call: AttentionCall, groups: list[slice], text_start: int) -> Optional[torch.Tensor]:
        """An additive key mask (B, 1, 1, N): -inf-like on the padding of each padded prompt row, added to the call's
        own mask."""
        if self.text_lengths is None or not groups:
            return call.mask
        q = call.q
        pad = torch.zeros(call.batch, 1, 1, call.length, device=q.device, dtype=q.dtype)
        low = torch.finfo(q.dtype).min
        for rows in groups:
            for p, r in enumerate(range(rows.start, rows.stop)):
                n = self.text_lengths[p] if p < len(self.text_lengths) else self.text_len
                pad[r, ..., text_start + n:text_start + self.text_len] = low
        return pad if call.mask is None else _four_dims(call.mask) + pad

    def _attend(self, func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        if self.upstream is not None:
            return self.upstream(func, *args, **kwargs)
        return func(*args, **kwargs)

    # -- the override ----------------------------------------------------------------------------------------
    def __call__(self, func: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        options = kwargs.get("transformer_options") or {}
        call = AttentionCall(args, kwargs)
        text_start = call.length - self.n_image - self.text_len
        if text_start < 0 or call.length == self.n_image:
            return self._attend(func, args, kwargs)  # not a joint call of this run
        groups = self._cond_groups(options, call.batch)
        mask = self._padding_mask(call, groups, text_start)
        if mask is not call.mask:
            args, kwargs = call.with_mask(mask)
        out = self._attend(func, args, kwargs)
        step = self._step(options)
        if step is None or not groups:
            return out
        edit = self.edit
        cross = edit is not None and edit.cross_active(step)
        structure = edit is not None and edit.self_active(step)
        text = slice(text_start, text_start + self.text_len)
        image = slice(call.length - self.n_image, call.length)
        edit_now = cross or structure
        out = out.clone() if edit_now else out
        for rows in groups:
            if rows.stop - rows.start != self.n_prompts:
                raise RuntimeError(f"expected {self.n_prompts} prompt rows per conditional chunk, got {rows.stop - rows.start}")
            maps = []
            edited = slice(rows.start + 1, rows.stop)
            for h0 in range(0, call.heads, HEAD_CHUNK):
                hs = slice(h0, min(h0 + HEAD_CHUNK, call.heads))
                probs = joint_probs(call.q[rows, hs, image], call.k[rows, hs], call.scale,
                                    _mask_block(mask, rows, call.batch, hs, image))
                if edit_now:
                    new = edit_joint_rows(probs, edit, step, text, image, cross, structure)
                    # upstream + (edit - plain) on the edited rows: the host's (or upstream's) output plus what the
                    # edit changes in the probabilities, applied to the row's own values
                    delta = torch.matmul(new[1:] - probs[1:], call.v[edited, hs].float())
                    call.add_to_output(out, edited, hs, image, delta)
                    probs = new
                maps.append(probs[..., text].sum(dim=1))
            self.store.record_sum(torch.stack(maps).sum(dim=0), call.heads, self.map_hw)
        return out


def _four_dims(mask: torch.Tensor) -> torch.Tensor:
    """An additive mask as the host's kernels broadcast it: (B, H|1, Q|1, N) (a 3-D mask gains the heads axis, a 2-D
    one the batch axis first)."""
    while mask.ndim < 4:
        mask = mask.unsqueeze(1) if mask.ndim == 3 else mask.unsqueeze(0)
    return mask


def _mask_block(mask: Optional[torch.Tensor], rows: slice, batch: int, hs: slice, queries: slice) -> Optional[torch.Tensor]:
    """The part of an additive mask (any of the host's shapes: (N,), (B, N), (B, 1, N), (B, H|1, Q|1, N)) for
    ``rows`` x ``hs`` x ``queries``."""
    if mask is None:
        return None
    mask = _four_dims(mask)
    mask = mask[rows] if mask.shape[0] == batch else mask
    mask = mask[:, hs] if mask.shape[1] > 1 else mask
    return mask[:, :, queries] if mask.shape[2] > 1 else mask


