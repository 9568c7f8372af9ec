"""Prompt-to-Prompt through the host's public attention patch API, composed with what other nodes put there.

One ``P2PAttentionPatch`` object is registered as the attn1/attn2 replace patch of every transformer block of a
*cloned* ModelPatcher. It edits only the conditional rows (read from the host's ``cond_or_uncond``), derives the DDIM
step from the sigmas (no call counters), and keeps its state when the host copies model options on ``clone()``
(``compat.SharedOnClone``). What it edits is recorded by an ``AttentionMapStore``, as the reference separates
``AttentionStore`` from ``AttentionControlEdit``.

Other packs' attention patches stay in effect (``UpstreamAttention``):

- A replace patch already on a block (IPAdapter's ``CrossAttentionPatch``, Self-Attention Guidance's recorder) is
  wrapped: it computes every row, so rows the pack does not edit (the reconstruction row, the unconditional rows)
  get exactly what it computed without the pack. An edited row gets the Prompt-to-Prompt attention plus what the
  upstream patch adds to the host's plain attention on that row: ``edit + (upstream - plain)``. An IPAdapter keeps
  adding its image attention to every row; a patch that only records (SAG) or changes nothing adds zero.
- ``optimized_attention_override`` in ``transformer_options`` is treated the same way (it is the upstream attention).
- attn1/attn2 ``*_patch`` and output patches run in the host's block around the replace patch, untouched; tiling
  ones (Hypertile: ``(b tiles) tokens c`` queries against untiled keys) are followed: prompts are grouped per tile,
  and keys/values take the queries' batch as the host's kernels do.
- Where the pack installs its patch at a block's (name, number) key, a per-call replace set on the same key by a
  sampler function (Perturbed-Attention Guidance's perturbed pass) replaces it for that call, as it would without
  the pack.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..core.schedule import DDIMSchedule
from .compat import SharedOnClone, host_optimized_attention
from .unet_layers import AttentionLayer

OVERRIDE_KEY = "optimized_attention_override"
ReplacePatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


def _batched_like(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t`` [b, n, c] viewed with ``batch`` rows, as the host's kernels reshape keys and values by the queries' batch
    (Hypertile tiles the queries only)."""
    return t if t.shape[0] == batch else t.reshape(batch, -1, t.shape[-1])


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, hd = t.shape
    return t.view(b, n, heads, hd // heads).transpose(1, 2)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) per head in float32: [B, heads, Nq, Nk]."""
    qh, kh = _split_heads(q.float(), heads), _split_heads(_batched_like(k, q.shape[0]).float(), heads)
    scale = 1.0 / math.sqrt(qh.shape[-1])
    return torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * scale, dim=-1)


def apply_probs(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """probs @ V, heads merged back: [B, N, heads * dim]."""
    out = torch.matmul(probs, _split_heads(_batched_like(v, probs.shape[0]).float(), heads))
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d).to(v.dtype)


def host_attention_call(q, k, v, extra_options: dict, with_override: bool = True) -> torch.Tensor:
    """The host's attention for a block (``optimized_attention`` with the block's heads and precision and its
    ``transformer_options``, so an ``optimized_attention_override`` applies); ``with_override=False`` computes the
    plain attention without the override."""
    options = extra_options
    if not with_override and OVERRIDE_KEY in extra_options:
        options = {k_: v_ for k_, v_ in extra_options.items() if k_ != OVERRIDE_KEY}
    return host_optimized_attention(q, k, v, extra_options["n_heads"], extra_options.get("attn_precision"), options)


class UpstreamAttention:
    """What a block's attention computes without the pack: the replace patch that was there, else the host's
    attention (with any ``optimized_attention_override``)."""

    def __init__(self, replace: Optional[ReplacePatch] = None) -> None:
        self.replace = replace

    def __call__(self, q, k, v, extra_options: dict) -> torch.Tensor:
        if self.replace is not None:
            return self.replace(q, k, v, extra_options)
        return host_attention_call(q, k, v, extra_options)

    def changes_attention(self, extra_options: dict) -> bool:
        """True where it may differ from the host's plain attention (a replace patch or an override)."""
        return self.replace is not None or OVERRIDE_KEY in extra_options

    def added_to_plain(self, upstream_out: torch.Tensor, q, k, v, extra_options: dict) -> Optional[torch.Tensor]:
        """``upstream - plain`` on every row (None where nothing upstream changes the attention)."""
        if not self.changes_attention(extra_options):
            return None
        return upstream_out - host_attention_call(q, k, v, extra_options, with_override=False)


PLAIN = UpstreamAttention()


def prompt_row_groups(extra_options: dict, batch_rows: int) -> tuple[list[slice], int]:
    """The rows of the prompts of each conditional chunk, one slice per chunk and tile, and the tile count.

    The host batches chunks of equal size ([uncond rows | cond rows] by ``cond_or_uncond``); a tiling attn1 patch
    (Hypertile) turns each sample row ``b`` into rows ``b * tiles + j``, so a chunk's prompts for tile ``j`` are a
    strided slice."""
    cou = extra_options.get("cond_or_uncond") or [0]
    shape = extra_options.get("original_shape")
    samples = int(shape[0]) if shape else batch_rows
    tiles = batch_rows // samples if samples and batch_rows % samples == 0 else 1
    chunk = samples // len(cou)
    groups = [slice(i * chunk * tiles + j, (i + 1) * chunk * tiles, tiles)
              for i, c in enumerate(cou) if c == 0 for j in range(tiles)]
    return groups, tiles


def _edited_rows(group: slice, tiles: int) -> slice:
    """The rows of a prompt group after its first (the source) row."""
    return slice(group.start + tiles, group.stop, group.step)


class AttentionMapStore:
    """Cross-attention maps of the map layers, summed over heads, steps and layers (the reference's
    ``AttentionStore`` restricted to the layers local blend and the attention-map pictures read)."""

    def __init__(self, map_keys: set[tuple[str, int, int]]) -> None:
        self.map_keys = map_keys
        self.reset()

    def reset(self) -> None:
        """Forget recorded maps (a new sampling run)."""
        self.map_sum: Optional[torch.Tensor] = None  # [n_prompts, Q, tokens], float32
        self.map_hw: tuple[int, int] = (0, 0)
        self.map_count = 0

    def record(self, probs: torch.Tensor, extra_options: dict) -> None:
        """Add one layer's maps ``probs`` [n_prompts, heads, Q, tokens]."""
        shape = extra_options.get("activations_shape")
        hw = (int(shape[2]), int(shape[3])) if shape is not None else self.map_hw
        self.record_sum(probs.sum(dim=1), probs.shape[1], hw)  # sum over heads: [n, Q, K]

    def record_sum(self, summed: torch.Tensor, heads: int, hw: tuple[int, int]) -> None:
        """Add maps already summed over ``heads`` heads, [n_prompts, Q, tokens] for a ``hw`` grid of queries."""
        summed = summed.detach().to("cpu", torch.float32)
        if self.map_sum is None or self.map_sum.shape != summed.shape:
            self.map_sum = torch.zeros_like(summed)
            self.map_hw = (int(hw[0]), int(hw[1]))
        self.map_sum += summed
        self.map_count += heads

    def mean_maps(self) -> Optional[torch.Tensor]:
        """Cross-attention maps averaged over recorded steps, layers and heads: [n_prompts, h, w, tokens]."""
        if self.map_sum is None or self.map_count == 0:
            return None
        h, w = self.map_hw
        return (self.map_sum / self.map_count).reshape(self.map_sum.shape[0], h, w, -1)


class P2PAttentionPatch(SharedOnClone):
    """Attention replacement implementing the Prompt-to-Prompt edits of an ``AttentionEdit``.

    Cross-attention maps are recorded into ``store`` after ``edit_cross``: the edited rows hold the maps they were
    sampled with, as in the reference (``AttentionStore.forward`` stores the tensor that
    ``AttentionControlEdit.forward`` then edits in place), so local blend and the attention-map pictures see the
    edited maps.
    ``edit`` may be None: then the patch only records cross-attention maps (attention-map pictures).
    Upstream attention (the replace patch each block had, an attention override) computes every row; edited rows
    are ``edit + (upstream - plain)`` (module docstring).
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
        self.self_keys = {l.key for l in layers if l.downsample >= self_max_downsample_exclusive}
        self.store = AttentionMapStore({l.key for l in layers if l.has_cross and l.downsample == map_downsample})
        self.upstream: dict[tuple[str, tuple[str, int, int]], UpstreamAttention] = {}

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

    def _attend(self, kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict,
                edit_rows: Optional[Callable[[torch.Tensor, int], torch.Tensor]], record: bool) -> torch.Tensor:
        """Upstream attention on every row; ``edit_rows(probs, step)`` on each conditional prompt group (rows 1..
        replaced); cross-attention maps recorded when ``record``."""
        key = self.key_of(extra_options)
        upstream = self.upstream.get((kind, key), PLAIN)
        out = upstream(q, k, v, extra_options)
        if edit_rows is None and not record:
            return out
        groups, tiles = prompt_row_groups(extra_options, q.shape[0])
        if not groups:
            return out
        step = self.step_of(extra_options)
        heads = extra_options["n_heads"]
        k, v = _batched_like(k, q.shape[0]), _batched_like(v, q.shape[0])
        added = upstream.added_to_plain(out, q, k, v, extra_options) if edit_rows is not None else None
        out = out.clone() if edit_rows is not None else out
        for rows in groups:
            probs = attention_probs(q[rows], k[rows], heads)  # [n_prompts, heads, Q, K]
            if probs.shape[0] != self.n_prompts:
                raise RuntimeError(f"expected {self.n_prompts} prompt rows per conditional chunk, got {probs.shape[0]}")
            if edit_rows is not None:
                probs = edit_rows(probs, step)
                edited = _edited_rows(rows, tiles)
                new = apply_probs(probs[1:], v[edited], heads)
                out[edited] = new if added is None else new + added[edited]
            if record and tiles == 1:  # after the edit: the reference's store holds the edited rows (in place)
                self.store.record(probs, extra_options)
        return out

    def cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        step = self.step_of(extra_options)
        record = step is not None and self.key_of(extra_options) in self.store.map_keys
        edit_now = self.edit is not None and step is not None and self.edit.cross_active(step)
        return self._attend("attn2", q, k, v, extra_options, self.edit.edit_cross if edit_now else None, record)

    def self_attn(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        step = self.step_of(extra_options)
        active = (self.edit is not None and step is not None and self.key_of(extra_options) in self.self_keys
                  and self.edit.self_active(step))
        return self._attend("attn1", q, k, v, extra_options, self.edit.edit_self if active else None, False)

    def install(self, patcher, layers: list[AttentionLayer]) -> None:
        """Register on every transformer block of ``patcher`` (a clone), wrapping the replace patch each block had.

        A block whose upstream patch sits at its full (name, number, index) key gets the pack's patch there; every
        other block gets it at its (name, number) key, the level a per-call replace (PAG) uses, so such a replace
        still takes the block for its own pass."""
        replaces = patcher.model_options.get("transformer_options", {}).get("patches_replace", {})
        for layer in layers:
            name, number, index = layer.key
            kinds = [("attn1", self.self_attn, patcher.set_model_attn1_replace)]
            if layer.has_cross:
                kinds.append(("attn2", self.cross, patcher.set_model_attn2_replace))
            for kind, fn, register in kinds:
                present = replaces.get(kind, {})
                full = present.get(layer.key)
                block = present.get((name, number))
                if full is not None:
                    self.upstream[(kind, layer.key)] = UpstreamAttention(full)
                    register(fn, name, number, index)
                else:
                    if block is not None:
                        self.upstream[(kind, layer.key)] = UpstreamAttention(block)
                    register(fn, name, number)
