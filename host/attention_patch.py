"""Prompt-to-Prompt through the host's public attention patch API.

One ``P2PAttentionPatch`` object is registered with ``set_model_attn1_replace`` / ``set_model_attn2_replace``
for every transformer block of a *cloned* ModelPatcher. It edits only the conditional rows (read from the
host's ``cond_or_uncond``), derives the DDIM step from the sigmas (no call counters), and keeps its state when
the host copies model options on ``clone()`` (``__deepcopy__`` returns the same object: 0.3.64 deep-copies them;
from 0.14 on only the dicts and lists are copied, which keeps the same object anyway).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

import comfy.ldm.modules.attention as host_attention

from ..core.schedule import DDIMSchedule
from .unet_layers import AttentionLayer


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, hd = t.shape
    return t.view(b, n, heads, hd // heads).transpose(1, 2)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) per head in float32: [B, heads, Nq, Nk]."""
    qh, kh = _split_heads(q.float(), heads), _split_heads(k.float(), heads)
    scale = 1.0 / math.sqrt(qh.shape[-1])
    return torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * scale, dim=-1)


def apply_probs(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """probs @ V, heads merged back: [B, N, heads * dim]."""
    out = torch.matmul(probs, _split_heads(v.float(), heads))
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d).to(v.dtype)


class P2PAttentionPatch:
    """Attention replacement implementing the Prompt-to-Prompt edits of an ``AttentionEdit``.

    Cross-attention maps are recorded after ``edit_cross``: the edited rows hold the maps they were sampled with,
    as in the reference (``AttentionStore.forward`` stores the tensor that ``AttentionControlEdit.forward`` then
    edits in place), so local blend and the attention-map pictures see the edited maps.
    ``edit`` may be None: then the patch only records cross-attention maps (attention-map pictures).
    """

    def __init__(
        self,
        edit,
        schedule: DDIMSchedule,
        n_prompts: int,
        layers: list[AttentionLayer],
        map_downsample: int,
        self_max_downsample_exclusive: int = 2,
    ) -> None:
        self.edit = edit
        self.schedule = schedule
        self.n_prompts = n_prompts
        self.sigmas = schedule.sigmas()[:-1].tolist()
        self.self_keys = {l.key for l in layers if l.downsample >= self_max_downsample_exclusive}
        self.map_keys = {l.key for l in layers if l.has_cross and l.downsample == map_downsample}
        self.map_downsample = map_downsample
        self.reset()

    def reset(self) -> None:
        """Forget recorded maps (a new sampling run)."""
        self.map_sum: Optional[torch.Tensor] = None  # [n_prompts, Q, tokens], float32
        self.map_hw: tuple[int, int] = (0, 0)
        self.map_count = 0
        self.step_maps_done: set[int] = set()

    def __deepcopy__(self, memo):  # model options are deep-copied on clone: keep one shared state
        return self

    def step_of(self, extra_options: dict) -> Optional[int]:
        sig = extra_options.get("sigmas")
        if sig is None:
            return None
        s = float(sig.reshape(-1)[0])
        return self.schedule.step_of_sigma(s)

    @staticmethod
    def key_of(extra_options: dict) -> tuple[str, int, int]:
        block = extra_options.get("block") or ("", 0)
        return (block[0], int(block[1]), int(extra_options.get("block_index", 0)))

    def _cond_rows(self, extra_options: dict, batch: int) -> list[slice]:
        cou = extra_options.get("cond_or_uncond") or [0]
        chunk = batch // len(cou)
        return [slice(i * chunk, (i + 1) * chunk) for i, c in enumerate(cou) if c == 0]

    def _default(self, q, k, v, extra_options):
        # transformer_options: the host's attention override (optimized_attention_override) and kernels that read
        # them apply to patched layers too (both hosts accept the keyword; 0.33 needs it for the new kernels).
        return host_attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                                  attn_precision=extra_options.get("attn_precision"),
                                                  transformer_options=extra_options)

    def cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        step = self.step_of(extra_options)
        key = self.key_of(extra_options)
        record = key in self.map_keys
        edit_now = self.edit is not None and step is not None and self.edit.cross_active(step)
        rows = self._cond_rows(extra_options, q.shape[0])
        if step is None or not rows or not (record or edit_now):
            return self._default(q, k, v, extra_options)
        heads = extra_options["n_heads"]
        out = self._default(q, k, v, extra_options)
        for r in rows:
            probs = attention_probs(q[r], k[r], heads)  # [n_prompts, heads, Q, K]
            if probs.shape[0] != self.n_prompts:
                raise RuntimeError(f"expected {self.n_prompts} prompt rows per conditional chunk, got {probs.shape[0]}")
            if edit_now:
                probs = self.edit.edit_cross(probs, step)
                out[r] = apply_probs(probs, v[r], heads)
            if record:  # after the edit: the reference's store holds the edited rows (written into it in place)
                self._record(probs, extra_options)
        return out

    def self_attn(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        step = self.step_of(extra_options)
        key = self.key_of(extra_options)
        rows = self._cond_rows(extra_options, q.shape[0])
        active = (self.edit is not None and step is not None and key in self.self_keys and bool(rows)
                  and self.edit.self_active(step))
        if not active:
            return self._default(q, k, v, extra_options)
        heads = extra_options["n_heads"]
        out = self._default(q, k, v, extra_options)
        for r in rows:
            probs = self.edit.edit_self(attention_probs(q[r], k[r], heads), step)
            out[r] = apply_probs(probs, v[r], heads)
        return out

    def _record(self, probs: torch.Tensor, extra_options: dict) -> None:
        shape = extra_options.get("activations_shape")
        summed = probs.sum(dim=1).detach().to("cpu", torch.float32)  # sum over heads: [n, Q, K]
        if self.map_sum is None or self.map_sum.shape != summed.shape:
            self.map_sum = torch.zeros_like(summed)
            if shape is not None:
                self.map_hw = (int(shape[2]), int(shape[3]))
        self.map_sum += summed
        self.map_count += probs.shape[1]

    def mean_maps(self) -> Optional[torch.Tensor]:
        """Cross-attention maps (edited rows after the edit) averaged over recorded steps, layers and heads:
        [n_prompts, h, w, tokens]."""
        if self.map_sum is None or self.map_count == 0:
            return None
        h, w = self.map_hw
        return (self.map_sum / self.map_count).reshape(self.map_sum.shape[0], h, w, -1)

    def install(self, patcher, layers: list[AttentionLayer]) -> None:
        """Register on every transformer block of ``patcher`` (a clone)."""
        for layer in layers:
            name, number, index = layer.key
            patcher.set_model_attn1_replace(self.self_attn, name, number, index)
            if layer.has_cross:
                patcher.set_model_attn2_replace(self.cross, name, number, index)
