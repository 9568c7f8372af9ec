"""Attention Maps node: which region each word of a prompt attended to, as a labelled grid of heat maps."""

from __future__ import annotations

from typing import Optional

import torch

import comfy.model_management
from comfy_api.latest import io, ui

from ..core.attention_maps import NORMALIZE_MODES, attention_grid
from ..core.prompt_tokens import PromptError
from ..core.values import EditResult  # noqa: F401  (the type of 'attention'; checked by its fields)
from ..host.errors import NodeInputError
from . import types
from .word_syntax import parse_word_list

NODE = types.display_name("Attention Maps")


def pick_image(image: Optional[torch.Tensor], row: int, n_rows: int) -> Optional[torch.Tensor]:
    """The picture of ``row`` from the decoded batch ``[B, H, W, C]`` (B = the run's rows, or 1 for all rows)."""
    if image is None:
        return None
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise NodeInputError(NODE, "image", "expected an IMAGE batch [batch, height, width, channels].",
                             "connect the VAE Decode of Edited Sample's latent (or leave 'image' empty).")
    b = int(image.shape[0])
    if b == n_rows:
        picked = image[row]
    elif b == 1:
        picked = image[0]
    else:
        raise NodeInputError(NODE, "image", f"the batch has {b} images but the run has {n_rows} rows "
                                            f"(reconstruction + {n_rows - 1} edits).",
                             "connect the VAE Decode of the same Edited Sample's latent (or a single image).")
    picked = picked.to(torch.float32).cpu()
    if picked.shape[-1] == 1:
        picked = picked.expand(-1, -1, 3)
    return picked[..., :3]


def make_grid(attention: "EditResult", image: Optional[torch.Tensor], row: int, words: str, normalize: str,
              columns: int) -> tuple[torch.Tensor, list[str]]:
    """The node's work without the preview: ``([1, gh, gw, 3] grid, labels)``; errors name the input to fix."""
    if not all(hasattr(attention, a) for a in ("cross_maps", "map_hw", "latent_hw", "prompts")):  # an EditResult
        raise NodeInputError(NODE, "attention", f"expected attention maps, got {type(attention).__name__}.",
                             "connect the 'attention' output of Edited Sample.")
    maps = attention.cross_maps
    if maps is None:
        raise NodeInputError(NODE, "attention", "Edited Sample recorded no cross-attention maps.",
                             "use a model the pack edits (SD 1.x/2.x, SDXL, SD3/SD3.5, Qwen-Image, Flux, Chroma) and run Edited Sample again.")
    n_rows = int(maps.shape[0])
    if not 0 <= row < n_rows:
        rows = "only row 0 (the reconstruction)" if n_rows == 1 else f"rows 0 (reconstruction) to {n_rows - 1}"
        raise NodeInputError(NODE, "row", f"row {row} does not exist: the run has {rows}.",
                             f"choose a row from 0 to {n_rows - 1}" + ("" if n_rows > 1 else
                             " (connect target prompts and a control to Edited Sample for edit rows)") + ".")
    if not attention.prompts:
        raise NodeInputError(NODE, "attention", "the words of the prompts are unknown: Edited Sample ran without "
                                                "an Attention Controller.",
                             "connect an Attention Controller's 'control' and 'target' to Edited Sample.")
    if normalize not in NORMALIZE_MODES:
        raise NodeInputError(NODE, "normalize", f"unknown normalisation '{normalize}'.", f"choose one of {', '.join(NORMALIZE_MODES)}.")
    try:
        wanted = parse_word_list(words) if words.strip() else None
    except PromptError as e:
        raise NodeInputError(NODE, "words", str(e), "write words of the prompt separated by commas, e.g. 'cat, table'.") from e
    picture = pick_image(image, row, n_rows)
    lh, lw = attention.latent_hw
    size_hw = (int(lh) * 8, int(lw) * 8) if lh and lw else None
    try:
        grid, labels, _ = attention_grid(maps.to(torch.float32).cpu(), attention.prompts, row, wanted, picture,
                                         size_hw, normalize, columns)
    except PromptError as e:
        name = "words" if "word" in str(e) else "attention"
        prompt = attention.prompts[row]
        raise NodeInputError(NODE, name, str(e),
                             f"choose words of row {row}'s prompt '{prompt.text}' (empty: all its words).") from e
    return grid.to(comfy.model_management.intermediate_device()), labels


class AttentionMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_AttentionMaps",
            display_name=NODE,
            **types.search_aliases('cross attention', 'heat map', 'heatmap', 'attention map', 'daam'),
            category=f"{types.CATEGORY}/editing",
            description="Shows which region each word of a prompt attended to during Edited Sample (cross-attention "
                        "averaged over steps, layers and heads): one labelled heat-map tile per word, over the "
                        "decoded image when connected. Use it to choose words for reweight and local blend.",
            inputs=[
                types.AttentionMaps.Input("attention", tooltip="The 'attention' output of Edited Sample."),
                io.Image.Input("image", optional=True, tooltip="Optional: the decoded batch of the same Edited Sample (VAE Decode); the heat maps are drawn over the picture of the chosen row. A single image is used for every row."),
                io.Int.Input("row", default=1, min=0, max=63, tooltip="Which prompt: 0 = the source prompt (reconstruction), 1 = the first edit, 2 = the second, ..."),
                io.String.Input("words", default="", tooltip="Optional words or phrases of that prompt, separated by commas (e.g. 'tiger, table'). Empty: every word of the prompt."),
                io.Combo.Input("normalize", options=list(NORMALIZE_MODES), default="each", tooltip="each: every tile scaled to its own maximum (shows where each word looks). shared: one scale for all tiles (also shows how strongly)."),
                io.Int.Input("columns", default=0, min=0, max=32, tooltip="Tiles per grid row; 0 picks a near-square grid."),
            ],
            outputs=[
                io.Image.Output("grid", display_name="grid", tooltip="The labelled grid of heat maps (one tile per word)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, attention, row, words, normalize, columns, image=None) -> io.NodeOutput:
        grid, _ = make_grid(attention, image, row, words, normalize, columns)
        return io.NodeOutput(grid, ui=ui.PreviewImage(grid, cls=cls))
