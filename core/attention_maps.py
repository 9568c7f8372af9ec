"""Attention-map pictures from an Edited Sample run, pure torch (Pillow only to draw the labels).

From an :class:`~.values.EditResult` (``cross_maps[p, y, x, k]``: attention of prompt row p to text position k,
averaged over steps, layers and heads; edited rows after the edit; over k the source row sums to 1) this module
makes:

- :func:`word_maps`: one map per word (or per phrase given by the user) of one prompt row: the maps of the word's
  token positions summed, ``[n_words, h, w]``;
- :func:`normalize_maps`: each map divided by its own maximum ("each", like the reference ``show_cross_attention``)
  or all by the largest value of all of them ("shared", so tiles compare how strongly words are attended);
- :func:`heat_tiles`: the maps upsampled (bilinear) to the picture size and coloured with a jet-like colour map,
  blended over the image when one is given;
- :func:`assemble_grid` and :func:`GridLayout`: a labelled grid, one tile per word, the label under each tile.

Maps come at the model's map size (``map_hw``, a quarter of the latent size for SD 1.x, any aspect ratio); the
tiles are as large as the image (``latent_hw * 8`` when no image is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as nnf

from .prompt_tokens import PromptError, PromptTokens

__all__ = [
    "NORMALIZE_MODES",
    "GridLayout",
    "assemble_grid",
    "attention_grid",
    "colorize",
    "draw_label",
    "heat_tiles",
    "normalize_maps",
    "select_row",
    "word_maps",
]

NORMALIZE_MODES = ("each", "shared")

#: Overlay strength of the heat map over the image (0 = image only, 1 = heat map only).
OVERLAY_ALPHA = 0.55
#: Label band under each tile: this fraction of the tile width, within these bounds (px); the text is
#: LABEL_TEXT_FRACTION of the band.
LABEL_FRACTION = 0.15
LABEL_MIN_PX = 14
LABEL_MAX_PX = 200
LABEL_TEXT_FRACTION = 0.72


def select_row(cross_maps: torch.Tensor, prompts: Sequence[PromptTokens], row: int) -> tuple[torch.Tensor, PromptTokens]:
    """``(cross_maps[row], prompts[row])`` with errors that say which rows exist.

    Raises:
        PromptError: ``row`` is outside the run's rows, or the prompts (words) of the run are unknown.
    """
    if cross_maps is None or cross_maps.ndim != 4:
        raise PromptError("this run recorded no cross-attention maps (the model has no cross-attention layers?)")
    n = int(cross_maps.shape[0])
    if not 0 <= row < n:
        names = "row 0 (the reconstruction)" + (f" and rows 1..{n - 1} (the edits)" if n > 1 else " only")
        raise PromptError(f"row {row} does not exist: this run has {names}")
    if not prompts:
        raise PromptError("the words of the prompts are unknown: Edited Sample ran without an Attention Controller")
    if len(prompts) != n:
        raise PromptError(f"the run has {n} rows but {len(prompts)} prompts")
    return cross_maps[row], prompts[row]


def word_maps(maps: torch.Tensor, prompt: PromptTokens, words: Optional[Sequence[str]] = None) -> tuple[list[str], torch.Tensor]:
    """One map per word: the maps of the word's token positions summed.

    Args:
        maps: ``[h, w, tokens]`` cross-attention of one prompt row.
        prompt: that row's :class:`PromptTokens`.
        words: words or phrases to show (matched like the controller: case-insensitive, surrounding punctuation
            ignored; every occurrence counts). ``None`` or empty: every word of the prompt, in order.

    Returns:
        ``(labels, stacked)`` with ``stacked`` of shape ``[len(labels), h, w]``.

    Raises:
        PromptError: a word is not in the prompt (the message names it and lists the prompt's words).
    """
    if maps.ndim != 3:
        raise PromptError(f"expected maps of shape [h, w, tokens], got {list(maps.shape)}")
    if maps.shape[-1] < prompt.n_tokens:
        raise PromptError(f"the maps have {maps.shape[-1]} text positions but the prompt {prompt.text!r} needs {prompt.n_tokens}")
    if words:
        labels, positions = [], []
        for word in words:
            pos = prompt.find(word)
            if not pos:
                raise PromptError(f"the word {word!r} is not in the prompt {prompt.describe()}")
            labels.append(word.strip())
            positions.append(pos)
    else:
        labels = list(prompt.words)
        positions = [prompt.word_positions(i) for i in range(len(prompt.words))]
    stacked = torch.stack([maps[..., pos].sum(dim=-1) for pos in positions])
    return labels, stacked.to(torch.float32)


def normalize_maps(maps: torch.Tensor, mode: str = "each") -> torch.Tensor:
    """Scale ``[n, h, w]`` non-negative maps into [0, 1]: by each map's max ("each") or the overall max ("shared").

    A map that is zero everywhere stays zero.
    """
    if mode not in NORMALIZE_MODES:
        raise PromptError(f"unknown normalisation {mode!r}; expected one of {', '.join(NORMALIZE_MODES)}")
    maps = maps.clamp(min=0)
    if mode == "each":
        top = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    else:
        top = maps.max().view(1, 1, 1)
    return torch.where(top > 0, maps / top.clamp(min=1e-30), torch.zeros_like(maps))


def colorize(values: torch.Tensor) -> torch.Tensor:
    """Jet-like colour map: ``[...]`` values in [0, 1] -> ``[..., 3]`` RGB in [0, 1] (dark blue, cyan, yellow, red)."""
    v = values.clamp(0, 1).unsqueeze(-1)
    centers = torch.tensor([0.75, 0.5, 0.25], dtype=values.dtype, device=values.device)  # R, G, B
    return (1.5 - (4 * (v - centers)).abs()).clamp(0, 1)


def heat_tiles(maps: torch.Tensor, size_hw: tuple[int, int], image: Optional[torch.Tensor] = None,
               alpha: float = OVERLAY_ALPHA) -> torch.Tensor:
    """``[n, h, w]`` maps in [0, 1] -> ``[n, H, W, 3]`` tiles: upsampled (bilinear) and coloured, over ``image``
    (``[H, W, 3]`` in [0, 1]) when given."""
    H, W = int(size_hw[0]), int(size_hw[1])
    if H <= 0 or W <= 0:
        raise PromptError(f"the tile size must be positive, got {H}x{W}")
    up = nnf.interpolate(maps.unsqueeze(1).float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    heat = colorize(up.clamp(0, 1))
    if image is None:
        return heat
    if tuple(image.shape) != (H, W, 3):
        raise PromptError(f"the image is {list(image.shape)}, expected [{H}, {W}, 3]")
    img = image.to(heat.dtype).clamp(0, 1).unsqueeze(0)
    return img * (1 - alpha) + heat * alpha


@dataclass(frozen=True)
class GridLayout:
    """Where tile i of a grid of ``n`` tiles goes: tiles of ``tile_hw`` in ``columns`` columns, each with a label
    band of ``label_h`` rows under it, ``gap`` pixels between cells and around the grid."""

    n: int
    tile_hw: tuple[int, int]
    columns: int
    label_h: int
    gap: int

    @staticmethod
    def make(n: int, tile_hw: tuple[int, int], columns: int = 0) -> "GridLayout":
        """Auto layout: ``columns`` 0 picks about a square grid; the label band scales with the tile width.

        The band is about 15 % of the tile width (text 72 % of the band): a grid of 512 px tiles, three to a row,
        shown in a node about 400 px wide (scaled to about a quarter) still reads at 13-14 px. A band of a tenth
        capped at 48 px gave labels of about 6 px in such a preview.
        """
        if n <= 0:
            raise PromptError("no words to show")
        cols = columns if columns > 0 else math.ceil(math.sqrt(n))
        cols = max(1, min(cols, n))
        h, w = int(tile_hw[0]), int(tile_hw[1])
        label_h = max(LABEL_MIN_PX, min(LABEL_MAX_PX, round(w * LABEL_FRACTION)))
        gap = max(2, round(min(h, w) / 64))
        return GridLayout(n=n, tile_hw=(h, w), columns=cols, label_h=label_h, gap=gap)

    @property
    def rows(self) -> int:
        return math.ceil(self.n / self.columns)

    @property
    def cell_hw(self) -> tuple[int, int]:
        return self.tile_hw[0] + self.label_h, self.tile_hw[1]

    @property
    def size_hw(self) -> tuple[int, int]:
        ch, cw = self.cell_hw
        return self.rows * (ch + self.gap) + self.gap, self.columns * (cw + self.gap) + self.gap

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of tile i's picture (the label band is the ``label_h`` rows below)."""
        if not 0 <= i < self.n:
            raise IndexError(f"tile {i} of {self.n}")
        r, c = divmod(i, self.columns)
        ch, cw = self.cell_hw
        top = self.gap + r * (ch + self.gap)
        left = self.gap + c * (cw + self.gap)
        return top, left, top + self.tile_hw[0], left + self.tile_hw[1]


def draw_label(text: str, height: int, width: int) -> torch.Tensor:
    """``[height, width]`` float mask (1 = ink) with ``text`` centred (shortened with '…' if it does not fit).

    Uses Pillow (which ComfyUI requires); without Pillow the label band stays empty.
    """
    try:
        import numpy as np
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - the host always has Pillow
        return torch.zeros(height, width)
    size = max(8, int(height * LABEL_TEXT_FRACTION))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)

    def extent(s: str) -> tuple[int, int, int, int]:
        return draw.textbbox((0, 0), s, font=font)

    shown = text
    box = extent(shown)
    while box[2] - box[0] > width - 4 and len(shown) > 1:
        shown = shown[:-2] + "…"
        box = extent(shown)
    x = (width - (box[2] - box[0])) // 2 - box[0]
    y = (height - (box[3] - box[1])) // 2 - box[1]
    draw.text((x, y), shown, fill=255, font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)


def assemble_grid(tiles: torch.Tensor, labels: Sequence[str], columns: int = 0) -> tuple[torch.Tensor, GridLayout]:
    """``[n, H, W, 3]`` tiles + n labels -> (``[1, gh, gw, 3]`` grid image, its layout). Dark background, white labels."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise PromptError(f"expected tiles of shape [n, H, W, 3], got {list(tiles.shape)}")
    n = int(tiles.shape[0])
    if len(labels) != n:
        raise PromptError(f"{n} tiles but {len(labels)} labels")
    layout = GridLayout.make(n, (int(tiles.shape[1]), int(tiles.shape[2])), columns)
    gh, gw = layout.size_hw
    grid = torch.full((gh, gw, 3), 0.08, dtype=torch.float32)
    for i in range(n):
        t, l, b, r = layout.tile_box(i)
        grid[t:b, l:r] = tiles[i].to(torch.float32)
        ink = draw_label(str(labels[i]), layout.label_h, r - l)
        grid[b:b + layout.label_h, l:r] = ink.unsqueeze(-1).expand(-1, -1, 3)
    return grid.unsqueeze(0), layout


def attention_grid(cross_maps: torch.Tensor, prompts: Sequence[PromptTokens], row: int,
                   words: Optional[Sequence[str]] = None, image: Optional[torch.Tensor] = None,
                   size_hw: Optional[tuple[int, int]] = None, normalize: str = "each",
                   columns: int = 0) -> tuple[torch.Tensor, list[str], GridLayout]:
    """Everything at once: the labelled grid ``[1, gh, gw, 3]`` of one prompt row, its labels and layout.

    ``image`` (``[H, W, 3]``) sets the tile size and is shown under the heat maps; otherwise ``size_hw`` does.
    """
    maps, prompt = select_row(cross_maps, prompts, row)
    labels, stacked = word_maps(maps, prompt, words)
    stacked = normalize_maps(stacked, normalize)
    if image is not None:
        size_hw = (int(image.shape[0]), int(image.shape[1]))
    if size_hw is None:
        size_hw = (int(stacked.shape[1]), int(stacked.shape[2]))
    tiles = heat_tiles(stacked, size_hw, image)
    grid, layout = assemble_grid(tiles, labels, columns)
    return grid, labels, layout
