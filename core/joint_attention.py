"""Prompt-to-Prompt on joint attention (SD3/SD3.5, Qwen-Image), pure torch.

A joint-attention transformer attends over one sequence ``[text tokens | image tokens]`` with one softmax per query.
The part of an image query's row over the text keys plays the role of SD's cross-attention map, the part over the
image keys that of its self-attention map. On the image-query rows of the edited prompts (conditional rows only):

- **cross** (``AttentionEdit.edit_cross``, inside the cross-replace window): the image -> text part becomes the
  edited map of the source row (word swap through the mapper, refine by the alignment, reweight by the equalizer),
  as on SD's cross-attention;
- **structure** (``AttentionEdit.edit_self``, inside the self-replace window): the image -> image part becomes the
  source row's, as SD's self-attention replacement (Shin et al., ICCV 2025, found that swapping whole joint maps
  drifts the text region and that the image -> image part carries the layout);
- the image -> image part is then rescaled to what the row's own image part held plus what its text part gave up
  (or minus what it gained), so the row keeps its total of 1; an unedited part is left exactly as it was, so
  identical prompts give exactly the unedited attention.

Text-query rows (the text stream updating itself) are never edited. Row 0 of a group is the source prompt.
"""

from __future__ import annotations

import torch

from .attention_edit import AttentionEdit


def edit_joint_rows(probs: torch.Tensor, edit: AttentionEdit, step: int, text: slice, image: slice, cross: bool,
                    structure: bool) -> torch.Tensor:
    """The image-query rows of one prompt group, edited.

    ``probs`` [n_prompts, heads, n_image_queries, N]: the joint-attention probabilities of the image queries (keys
    ``text`` and ``image`` are slices of the N keys). Returns the same shape; row 0 unchanged."""
    txt, img = probs[..., text], probs[..., image]
    new_txt = edit.edit_cross(txt, step) if cross else txt
    new_img = img[:1].expand_as(img) if structure else img
    given_up = txt.sum(dim=-1, keepdim=True) - new_txt.sum(dim=-1, keepdim=True)
    room = (img.sum(dim=-1, keepdim=True) + given_up).clamp(min=0.0)
    new_img = new_img * (room / new_img.sum(dim=-1, keepdim=True).clamp(min=1e-30))
    out = probs.clone()
    out[1:, ..., text] = new_txt[1:]
    out[1:, ..., image] = new_img[1:]
    return out
