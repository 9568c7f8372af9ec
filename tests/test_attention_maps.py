"""Attention Maps: per-word maps, normalisation, the labelled grid, and the node on square and non-square latents."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
import torch

from nulltext_p2p.host.compat import new_prompt_executor
from helpers import control_for

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"


# ------------------------------------------------------------------------------------------------------------
# Pure core (no host)
# ------------------------------------------------------------------------------------------------------------
def toy_prompt(text: str = "A fluffy cat, sitting"):
    from nulltext_p2p.core.prompt_tokens import PromptTokens, split_prompt

    words = split_prompt(text)
    # "fluffy" takes two tokens, the others one
    word_tokens = [(100 + i, 200 + i) if w == "fluffy" else (100 + i,) for i, w in enumerate(words)]
    return PromptTokens(text=text, words=words, word_tokens=word_tokens, bos=1, eos=2)


def toy_maps(h: int = 3, w: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(h, w, 77, generator=g) * 3, dim=-1)


def test_word_maps_sum_each_words_token_maps():
    from nulltext_p2p.core.attention_maps import word_maps

    prompt, maps = toy_prompt(), toy_maps()
    labels, stacked = word_maps(maps, prompt)
    assert labels == ["A", "fluffy", "cat,", "sitting"]
    assert stacked.shape == (4, 3, 5)
    assert torch.allclose(stacked[0], maps[..., 1])
    assert torch.allclose(stacked[1], maps[..., 2] + maps[..., 3])  # two tokens summed
    assert torch.allclose(stacked[3], maps[..., 5])
    labels, picked = word_maps(maps, prompt, ["CAT", "fluffy cat"])  # matched like the controller
    assert labels == ["CAT", "fluffy cat"]
    assert torch.allclose(picked[0], maps[..., 4])
    assert torch.allclose(picked[1], maps[..., 2] + maps[..., 3] + maps[..., 4])


def test_word_selection_error_names_the_word():
    from nulltext_p2p.core.attention_maps import word_maps
    from nulltext_p2p.core.prompt_tokens import PromptError

    with pytest.raises(PromptError, match=r"'dog' is not in the prompt \['A', 'fluffy', 'cat,', 'sitting'\]"):
        word_maps(toy_maps(), toy_prompt(), ["cat", "dog"])


def test_normalize_each_and_shared():
    from nulltext_p2p.core.attention_maps import normalize_maps
    from nulltext_p2p.core.prompt_tokens import PromptError

    maps = torch.stack([torch.full((2, 3), 0.5), torch.zeros(2, 3), torch.arange(6.0).view(2, 3) / 10])
    each = normalize_maps(maps, "each")
    assert torch.allclose(each[0], torch.ones(2, 3)) and torch.equal(each[1], torch.zeros(2, 3))
    assert float(each[2].max()) == 1.0
    shared = normalize_maps(maps, "shared")
    assert float(shared.max()) == 1.0 and torch.allclose(shared[2], maps[2] / 0.5)
    with pytest.raises(PromptError, match="normalisation"):
        normalize_maps(maps, "bogus")


@pytest.mark.parametrize("n,columns,expect_cols", [(1, 0, 1), (5, 0, 3), (7, 2, 2), (3, 10, 3)])
def test_grid_has_one_tile_per_word(n, columns, expect_cols):
    from nulltext_p2p.core.attention_maps import assemble_grid

    H, W = 40, 64  # non-square tiles
    tiles = torch.stack([torch.full((H, W, 3), (i + 1) / (n + 1)) for i in range(n)])
    grid, layout = assemble_grid(tiles, [f"w{i}" for i in range(n)], columns)
    assert layout.n == n and layout.columns == expect_cols
    rows = -(-n // expect_cols)
    gh = rows * (H + layout.label_h + layout.gap) + layout.gap
    gw = expect_cols * (W + layout.gap) + layout.gap
    assert grid.shape == (1, gh, gw, 3)
    boxes = [layout.tile_box(i) for i in range(n)]
    assert len(set(boxes)) == n
    for i, (t, l, b, r) in enumerate(boxes):
        assert torch.equal(grid[0, t:b, l:r], tiles[i])  # exactly tile i, nothing else drawn over it
        label = grid[0, b:b + layout.label_h, l:r]
        assert float(label.max()) > 0.5, "label text drawn under the tile"


@pytest.mark.parametrize("tile,n", [(512, 6), (512, 9), (1024, 6), (768, 4)])
def test_labels_read_in_a_node_preview(tile, n):
    """The grid shown in a node about 400 px wide (the preview scales it to fit): the label text is at least 11 px
    high on screen at 100 % zoom (it used to be about 6 px), and the ink really is that tall."""
    from nulltext_p2p.core.attention_maps import assemble_grid

    tiles = torch.zeros(n, tile, tile, 3)
    labels = ["sitting"] * n  # ascender to descender: 't', 'g'
    grid, layout = assemble_grid(tiles, labels)
    scale = 400 / grid.shape[2]
    t, l, b, r = layout.tile_box(0)
    ink = grid[0, b:b + layout.label_h, l:r, 0] > 0.5
    rows = ink.any(dim=1).nonzero()
    ink_px = int(rows.max() - rows.min() + 1)
    assert ink_px * scale >= 11, (ink_px, scale, layout.label_h)
    cols = ink.any(dim=0).nonzero()
    assert int(cols.max() - cols.min() + 1) < r - l - 4, "the word fits its tile"


def test_heat_tiles_any_aspect_ratio_and_overlay():
    from nulltext_p2p.core.attention_maps import colorize, heat_tiles

    maps = torch.zeros(2, 3, 5)
    maps[0, 1, 2] = 1.0
    tiles = heat_tiles(maps, (24, 40))
    assert tiles.shape == (2, 24, 40, 3)
    assert torch.allclose(tiles[1], colorize(torch.zeros(24, 40)))  # all cold
    r, g, b = tiles[0, 12, 20].tolist()  # the hot centre is at the red end of the colour map
    assert r > 0.5 and g < 0.2 and b < 0.05, (r, g, b)
    assert torch.allclose(colorize(torch.tensor(1.0)), torch.tensor([0.5, 0.0, 0.0]))
    assert torch.allclose(colorize(torch.tensor(0.0)), torch.tensor([0.0, 0.0, 0.5]))
    img = torch.full((24, 40, 3), 0.25)
    over = heat_tiles(maps, (24, 40), img, alpha=0.5)
    assert torch.allclose(over, 0.5 * img + 0.5 * tiles)


# ------------------------------------------------------------------------------------------------------------
# With the host: real Edited Sample runs, square and non-square
# ------------------------------------------------------------------------------------------------------------
def _control(clip, target=TARGET, **kw):
    return control_for(clip, target, SOURCE, **kw)


def _unoptimised_null(inv, null_cond):
    """Null embeddings for ``inv`` without optimisation (the maps' shapes do not depend on them): fast."""
    from nulltext_p2p.core.values import NullEmbeddings

    emb = null_cond[0][0].to(torch.float32).unsqueeze(0).repeat(inv.steps, 1, 1, 1)
    return NullEmbeddings(embeddings=emb, inversion_fingerprint=inv.fingerprint, guidance=7.5)


def _run(model, inv, null, source, target, control):
    from nulltext_p2p.nodes.edited_sample import run_edit

    with torch.inference_mode():
        return run_edit(model, inv, null, source, target, control, 7.5, preview=False)


@pytest.fixture(scope="module")
def edits(tiny_model):
    """{(h, w): EditResult} for a 16x16 and a 16x24 latent (4 DDIM steps, unoptimised null embeddings)."""
    from helpers import encode, image_latent
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip, vae = tiny_model
    control, src_cond, tgt_cond = _control(clip, TARGET + "\n" + "a dog sitting on a table")
    null = encode(clip, "")
    out = {}
    for hw in ((16, 16), (16, 24)):
        with torch.inference_mode():
            inv = run_inversion(model, src_cond, image_latent(model, *hw), 4)
        latent, stats = _run(model, inv, _unoptimised_null(inv, null), src_cond, tgt_cond, control)
        assert latent.shape == (3, 4, *hw)
        out[hw] = stats
    return out


@pytest.mark.parametrize("hw", [(16, 16), (16, 24)])
def test_maps_shape_and_sum(edits, hw):
    stats = edits[hw]
    maps = stats.cross_maps
    h, w = stats.map_hw
    print(f"latent {hw}: maps {list(maps.shape)} at map_hw {stats.map_hw}")
    assert stats.latent_hw == hw
    assert maps.shape == (3, h, w, 77)
    assert h * hw[1] == w * hw[0], "the maps keep the latent's aspect ratio"
    assert hw[0] % h == 0 and hw[0] // h in (1, 2, 4, 8)
    sums = maps.sum(dim=-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-4), float((sums - 1).abs().max())
    assert [p.text for p in stats.prompts] == [SOURCE, TARGET, "a dog sitting on a table"]


@pytest.mark.parametrize("hw", [(16, 16), (16, 24)])
def test_node_grid_one_tile_per_word_with_and_without_image(edits, hw):
    from nulltext_p2p.nodes.attention_maps import make_grid

    stats = edits[hw]
    H, W = hw[0] * 8, hw[1] * 8
    grid, labels = make_grid(stats, None, 1, "", "each", 0)
    assert labels == TARGET.split()
    from nulltext_p2p.core.attention_maps import GridLayout

    layout = GridLayout.make(len(labels), (H, W))
    assert grid.shape == (1, *layout.size_hw, 3)
    assert np.isfinite(grid.numpy()).all() and 0 <= float(grid.min()) and float(grid.max()) <= 1
    # with the decoded batch (3 rows) at another size: tiles take the image's size
    image = torch.rand(3, 40, 60, 3)
    grid2, labels2 = make_grid(stats, image, 2, "dog, table", "shared", 1)
    assert labels2 == ["dog", "table"]
    layout2 = GridLayout.make(2, (40, 60), 1)
    assert grid2.shape == (1, *layout2.size_hw, 3)
    t, l, b, r = layout2.tile_box(0)
    assert not torch.equal(grid2[0, t:b, l:r], grid[0, :40, :60])


def test_node_errors_name_the_input_and_word(edits):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.attention_maps import make_grid

    stats = edits[(16, 16)]
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Attention Maps\] input 'words': the word 'cat' is not in the prompt"):
        make_grid(stats, None, 1, "tiger, cat", "each", 0)  # row 1 is the tiger edit
    with pytest.raises(NodeInputError, match=r"input 'row': row 5 does not exist"):
        make_grid(stats, None, 5, "", "each", 0)
    with pytest.raises(NodeInputError, match=r"input 'image': the batch has 2 images but the run has 3 rows"):
        make_grid(stats, torch.rand(2, 8, 8, 3), 1, "", "each", 0)
    with pytest.raises(NodeInputError, match=r"input 'words': cannot read"):
        make_grid(stats, None, 1, "tiger=2", "each", 0)
    from nulltext_p2p.core.values import EditResult

    no_words = EditResult(cross_maps=stats.cross_maps, map_hw=stats.map_hw, latent_hw=stats.latent_hw, prompts=[])
    with pytest.raises(NodeInputError, match=r"input 'attention'.*without an Attention Controller"):
        make_grid(no_words, None, 0, "", "each", 0)


# ------------------------------------------------------------------------------------------------------------
# The node in a graph run by the host's executor (preview image in the UI output)
# ------------------------------------------------------------------------------------------------------------
def test_node_in_graph_previews_the_grid(host, checkpoint_dir, tiny_checkpoint_name, tmp_path):
    import execution
    import folder_paths
    from PIL import Image

    from helpers import ServerStub, make_test_image

    from nulltext_p2p.runner.comfy_host import init_nodes, setup_host

    asyncio.run(init_nodes(setup_host(host.path, cpu=True)))  # registers the pack imported here, no second copy
    folder_paths.set_input_directory(str(tmp_path / "input"))
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    os.makedirs(tmp_path / "input", exist_ok=True)
    img = (make_test_image(128, 192)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "input" / "photo.png")
    ckpt = tiny_checkpoint_name
    api = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        "8": {"class_type": "NTP_AttentionController", "inputs": {
            "clip": ["1", 1], "source_prompt": SOURCE, "target_prompts": TARGET, "mode": "replace",
            "cross_replace": 0.8, "self_replace": 0.5, "word_windows": "", "reweight": "", "blend_words": "",
            "blend_threshold": 0.3, "blend_start": 0.2}},
        "6": {"class_type": "NTP_DDIMInvert", "inputs": {"model": ["1", 0], "source": ["8", 1], "latent": ["5", 0], "steps": 2}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "7": {"class_type": "NTP_NullTextOptimize", "inputs": {"model": ["1", 0], "source": ["8", 1], "null": ["3", 0],
                                                           "inversion": ["6", 0], "guidance": 7.5, "inner_steps": 1, "epsilon": 1e-5}},
        "9": {"class_type": "NTP_EditedSample", "inputs": {"model": ["1", 0], "inversion": ["6", 0], "null_embeddings": ["7", 0],
                                                        "source": ["8", 1], "guidance": 7.5, "target": ["8", 2], "control": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "12": {"class_type": "NTP_AttentionMaps", "inputs": {"attention": ["9", 1], "image": ["10", 0], "row": 1,
                                                          "words": "", "normalize": "each", "columns": 0}},
    }
    valid = asyncio.run(execution.validate_prompt("maps", api, None))
    assert valid[0], f"validation failed: {valid[1]} {valid[3]}"
    executor = new_prompt_executor(execution, ServerStub())
    executor.execute(api, "maps-prompt", {}, valid[2])
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success, errors
    previews = executor.history_result["outputs"]["12"]["images"]
    assert len(previews) == 1 and previews[0]["type"] == "temp"
    im = np.asarray(Image.open(tmp_path / "temp" / previews[0].get("subfolder", "") / previews[0]["filename"]))
    from nulltext_p2p.core.attention_maps import GridLayout

    layout = GridLayout.make(len(TARGET.split()), (128, 192))
    assert im.shape == (*layout.size_hw, 3)
