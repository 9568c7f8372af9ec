"""The typed values our nodes pass along graph edges (host-independent dataclasses).

They hold tensors on the CPU (or the host's offload device) in float32; nodes move what they need to the
model's device only while it is used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import torch

from .attention_edit import BLEND_START, BLEND_THRESHOLD, CROSS_REPLACE, SELF_REPLACE
from .schedule import DDIMSchedule


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """A short content hash of tensors (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class Inversion:
    """A DDIM inversion: the pivot trajectory z_0 ... z_T (model latent space, DDPM scaling) and its schedule."""

    latents: torch.Tensor  # [steps + 1, 1, C, H, W] float32
    schedule: DDIMSchedule
    source_context: torch.Tensor  # the source prompt's embedding used for inversion, [1, tokens, dim]
    model_family: str = "SD1.x"
    fingerprint: str = ""
    source_fingerprint: str = ""
    model_fingerprint: str = ""  # of the checkpoint it was made with ("" = unknown)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = tensor_fingerprint(self.latents, torch.tensor(self.schedule.timesteps))
        if not self.source_fingerprint:
            self.source_fingerprint = tensor_fingerprint(self.source_context)

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def x_T(self) -> torch.Tensor:
        return self.latents[-1]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])


@dataclass
class NullEmbeddings:
    """Per-step unconditional embeddings for one inversion (``embeddings[i]`` is used at sampling step i)."""

    embeddings: torch.Tensor  # [steps, 1, tokens, dim] float32
    inversion_fingerprint: str
    guidance: float
    method: str = "null-text"  # or "negative-prompt", "direct-inversion"
    iterations: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    latent_offsets: Optional[torch.Tensor] = None  # direct inversion: [steps, 1, C, H, W], added to the source row

    @property
    def steps(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def total_iterations(self) -> int:
        return int(sum(self.iterations))


@dataclass
class EditResult:
    """Cross-attention statistics of one Edited Sample run (for attention-map pictures), and the edit mask it applied.

    ``cross_maps[p, y, x, k]`` is the attention of prompt row p (0 = source/reconstruction) to text position k,
    averaged over all steps, the cross-attention layers at ``map_hw`` (a quarter of the latent size where the model
    has such layers) and their heads. Edited rows hold the maps after the Prompt-to-Prompt edit (as the reference's
    attention store does); over k the source row sums to 1, edited rows under refine or reweight need not.
    """

    cross_maps: Optional[torch.Tensor] = None  # [n_prompts, h, w, tokens]
    map_hw: tuple[int, int] = (0, 0)
    latent_hw: tuple[int, int] = (0, 0)
    prompts: list = field(default_factory=list)  # PromptTokens per row when known (from the controller), else []
    # the mask applied to the edit rows at the last step that had one ([n_edits, 1, H, W] at the latent size,
    # core.masks): the user mask and/or the local-blend mask; None when nothing restricted the edit
    edit_mask: Optional[torch.Tensor] = None


@dataclass
class AttentionControl:
    """What the Attention Controller node decided: prompts (tokenised) and Prompt-to-Prompt settings.

    The step-dependent tensors are built by Edited Sample, when the inversion's step count is known.
    """

    source: "object"  # PromptTokens
    targets: list  # list[PromptTokens]
    mode: str = "replace"
    cross_replace: float = CROSS_REPLACE
    word_windows: dict = field(default_factory=dict)
    self_replace: float = SELF_REPLACE
    reweight: list = field(default_factory=list)  # [(word, factor)]
    blend_words: list = field(default_factory=list)
    blend_start: float = BLEND_START
    blend_threshold: float = BLEND_THRESHOLD
    source_fingerprint: str = ""
    target_fingerprint: str = ""
    family: str = ""  # the label of the model family whose tokenizers made the prompts ("": not recorded)
