"""SDXL: inversion, null-text optimisation of the token embeddings *and* the pooled vector, Prompt-to-Prompt on
SDXL's two-block transformers, local blend, fast modes, and the whole graph through the host's execution engine,
on the tiny SDXL-layout model (tests/tiny_sdxl.py) at a non-square size."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nulltext_p2p.host.compat import new_prompt_executor
from helpers import (ServerStub, blend_regions, control_for, edit_graph, encode, image_latent, make_test_image, mse,
                     tiny_loader_node)
from tiny_sdxl import build_tiny_sdxl

pytestmark = pytest.mark.host

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"
STEPS = 8
H, W = 16, 24  # latent 16x24 = 128x192 px
POOLED = 1280


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl):
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, vae = tiny_sdxl
    source, null = encode(clip, SOURCE), encode(clip, "")
    with torch.inference_mode():  # as the host's executor runs nodes
        inv = run_inversion(model, source, image_latent(model, H, W), STEPS)
        value, final = run_null_text(model, source, null, inv, 7.5, 10, 1e-5)
    return SimpleNamespace(model=model, clip=clip, vae=vae, source=source, null=null, inv=inv, value=value, final=final)


def test_sdxl_is_accepted_and_its_condition_carries_the_pooled_vector(sdxl):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.host.text_condition import pooled_dim, text_condition
    from nulltext_p2p.host.families import model_family_name

    assert model_family_name(sdxl.model, "Test") == "SDXL"
    assert pooled_dim(sdxl.model) == POOLED
    packed = text_condition(sdxl.model, sdxl.source, "Test", "source")
    tokens, pooled = sdxl.source[0][0], sdxl.source[0][1]["pooled_output"]
    assert tuple(packed.shape) == (1, 78, 2048)
    assert torch.equal(packed[:, :77], tokens)
    assert torch.equal(packed[:, 77, :POOLED], pooled)
    assert float(packed[:, 77, POOLED:].abs().max()) == 0.0
    assert tuple(sdxl.inv.source_context.shape) == (1, 78, 2048)

    no_pooled = [[tokens, {}]]
    with pytest.raises(NodeInputError, match=r"\[Test\] input 'null'.*pooled text vector"):
        text_condition(sdxl.model, no_pooled, "Test", "null")
    sized = [[tokens, {"pooled_output": pooled, "width": 1024, "height": 1024}]]
    with pytest.raises(NodeInputError, match=r"input 'source'.*size conditioning.*CLIP Text Encode"):
        text_condition(sdxl.model, sized, "Test", "source")


def test_prompts_encoded_for_another_family_are_refused(sdxl, tiny_model):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.host.text_condition import text_condition

    sd1_model, sd1_clip, _ = tiny_model
    with pytest.raises(NodeInputError, match=r"input 'source'.*2048 wide but this model reads 768.*same Load Checkpoint"):
        text_condition(sd1_model, sdxl.source, "Test", "source")
    with pytest.raises(NodeInputError, match=r"input 'null'.*768 wide but this model reads 2048"):
        text_condition(sdxl.model, encode(sd1_clip, ""), "Test", "null")


def test_the_pooled_vector_reaches_the_unet(sdxl):
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet

    unet = HostUNet(sdxl.model)
    packed = text_condition(sdxl.model, sdxl.null, "Test", "null")
    other = packed.clone()
    other[:, 77, :POOLED] = 0.0
    x = sdxl.inv.latents[3]
    t = sdxl.inv.schedule.timesteps[4]
    with torch.no_grad():
        a, b = unet.eps(x, t, packed), unet.eps(x, t, other)
    rel = float((a - b).norm() / a.norm())
    print(f"SDXL: |eps(pooled) - eps(pooled = 0)| / |eps| = {rel:.3e}")
    assert rel > 1e-3


def test_null_text_on_sdxl_optimises_tokens_and_pooled_and_reconstructs(sdxl):
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet

    v = sdxl.value
    assert tuple(v.embeddings.shape) == (STEPS, 1, 78, 2048)
    assert v.iterations == [10] * STEPS
    start = text_condition(sdxl.model, sdxl.null, "Test", "null")
    moved_tokens = float((v.embeddings[:, 0, :77] - start[0, :77]).abs().max())
    moved_pooled = float((v.embeddings[:, 0, 77, :POOLED] - start[0, 77, :POOLED]).abs().max())
    assert moved_tokens > 1e-3 and moved_pooled > 1e-3
    assert float(v.embeddings[:, 0, 77, POOLED:].abs().max()) == 0.0  # the padding never moves

    z0 = sdxl.inv.latents[0]
    cond = text_condition(sdxl.model, sdxl.source, "Test", "source")
    unet = HostUNet(sdxl.model)
    plain_nulls = start.unsqueeze(0).expand(STEPS, *start.shape)
    kept_pooled = v.embeddings.clone()
    kept_pooled[:, 0, 77] = start[0, 77]  # optimised tokens, the initial pooled vector
    with torch.no_grad():
        plain = ddim_sample(lambda x, t, c: unet.eps(x, t, c), sdxl.inv.schedule, sdxl.inv.x_T, cond, plain_nulls, 7.5)
        tokens_only = ddim_sample(lambda x, t, c: unet.eps(x, t, c), sdxl.inv.schedule, sdxl.inv.x_T, cond, kept_pooled, 7.5)
    e_plain, e_nti, e_tokens = mse(plain, z0), mse(sdxl.final, z0), mse(tokens_only, z0)
    print(f"SDXL {H}x{W} latent, {STEPS} steps, guidance 7.5: latent MSE plain DDIM {e_plain:.4f}, null-text "
          f"{e_nti:.4f} (tokens and pooled), with the pooled vector reset {e_tokens:.4f}")
    assert e_nti < 0.2 * e_plain
    assert e_nti < e_tokens  # optimising the pooled vector is part of the result


def test_edited_sample_on_sdxl_reproduces_the_reconstruction(sdxl):
    from nulltext_p2p.nodes.edited_sample import run_edit

    control, _, tgt = control_for(sdxl.clip, SOURCE)  # identical prompts
    with torch.inference_mode():
        out, stats = run_edit(sdxl.model, sdxl.inv, sdxl.value, sdxl.source, tgt, control, 7.5, preview=False)
    rel = mse(out[0:1], sdxl.final) / mse(sdxl.final, torch.zeros_like(sdxl.final))
    print(f"SDXL: host-sampler reconstruction vs the optimiser's, relative MSE {rel:.2e}; identical-prompt edit "
          f"max |edit - reconstruction| {float((out[1] - out[0]).abs().max()):.2e}")
    assert rel < 1e-6
    assert torch.equal(out[1], out[0])
    assert stats.map_hw == (H // 4, W // 4)
    sums = stats.cross_maps.sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-4)


def test_prompt_to_prompt_patches_both_transformer_blocks_of_sdxl_layers(sdxl):
    from nulltext_p2p.host.unet_layers import attention_layers, blend_downsample
    from nulltext_p2p.nodes.edited_sample import run_edit

    layers = attention_layers(sdxl.model.model.diffusion_model)
    assert len(layers) == 14 and all(layer.has_cross for layer in layers)
    assert {layer.key[2] for layer in layers} == {0, 1}
    assert {layer.downsample for layer in layers} == {2, 4}
    assert blend_downsample(layers) == 4

    control, _, tgt = control_for(sdxl.clip, TARGET, reweight="tiger=2")
    with torch.inference_mode():
        edited, stats = run_edit(sdxl.model, sdxl.inv, sdxl.value, sdxl.source, tgt, control, 7.5, preview=False)
        naive, _ = run_edit(sdxl.model, sdxl.inv, sdxl.value, sdxl.source, tgt, None, 7.5, preview=False)
    assert torch.isfinite(edited).all()
    assert torch.equal(edited[0], naive[0])  # the reconstruction row is never edited
    d_edit = float((edited[1] - edited[0]).abs().mean())
    d_naive = float((naive[1] - naive[0]).abs().mean())
    print(f"SDXL word swap: mean |edit - source| with Prompt-to-Prompt {d_edit:.4f}, naive {d_naive:.4f}")
    assert 0 < d_edit < d_naive  # attention injection keeps the edit closer to the source

    from nulltext_p2p.core.attention_maps import GridLayout
    from nulltext_p2p.nodes.attention_maps import make_grid

    grid, labels = make_grid(stats, None, 1, "", "each", 0)  # the Attention Maps node's picture of the edit row
    assert labels == TARGET.split()
    assert grid.shape == (1, *GridLayout.make(len(labels), (H * 8, W * 8)).size_hw, 3)
    assert torch.isfinite(grid).all() and float(grid.max()) <= 1


def test_local_blend_at_sdxl_layers(tiny_sdxl):
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, _ = tiny_sdxl
    source, null = encode(clip, SOURCE), encode(clip, "")
    with torch.inference_mode():
        inv = run_inversion(model, source, image_latent(model, 32, 32, seed=1), 4)
        value, _ = run_null_text(model, source, null, inv, 7.5, 2, 1e-5)
    control, _, tgt = control_for(clip, TARGET, blend_words="cat, tiger", blend_threshold=0.9)
    with torch.inference_mode():
        out, stats = run_edit(model, inv, value, source, tgt, control, 7.5, preview=False)
    assert stats.map_hw == (8, 8)
    frac, outside, inside = blend_regions(out, stats.cross_maps, control, inv.steps, (32, 32))
    print(f"SDXL local blend: mask covers {frac:.2%}; max |edit - source| outside {outside:.2e}, inside {inside:.2e}")
    assert 0.05 < frac < 0.95
    assert outside < 1e-5
    assert inside > 1e-3


def test_fast_modes_on_sdxl(sdxl):
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    z0 = sdxl.inv.latents[0]
    errors = {}
    for method in ("negative-prompt", "direct-inversion"):
        with torch.inference_mode():
            value, _ = run_fast_inversion(sdxl.model, sdxl.source, sdxl.null, sdxl.inv, method, 7.5)
            out, _ = run_edit(sdxl.model, sdxl.inv, value, sdxl.source, None, None, 7.5, preview=False)
        assert tuple(value.embeddings.shape) == (STEPS, 1, 78, 2048)
        errors[method] = mse(out[0:1], z0)
    print(f"SDXL fast modes, latent MSE of the reconstruction: {errors}")
    assert errors["direct-inversion"] < 1e-6
    assert errors["negative-prompt"] < 1.0 and np.isfinite(errors["negative-prompt"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sdxl_in_half_precision_is_finite(host, dtype):
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, _ = build_tiny_sdxl(seed=0, dtype=dtype)
    source, null = encode(clip, SOURCE), encode(clip, "")
    with torch.inference_mode():
        inv = run_inversion(model, source, image_latent(model, 8, 16), 3)
        value, final = run_null_text(model, source, null, inv, 7.5, 3, 1e-5)
        out, _ = run_edit(model, inv, value, source, None, None, 7.5, preview=False)
    assert value.embeddings.dtype == torch.float32
    for t in (inv.latents, value.embeddings, final, out):
        assert torch.isfinite(t).all()
    print(f"SDXL {dtype}: null-text latent MSE {mse(final, inv.latents[0]):.4f}")


TinySDXLLoader = tiny_loader_node(build_tiny_sdxl, "Test-only loader node: the tiny SDXL-layout MODEL/CLIP/VAE.")


def test_sdxl_graph_runs_through_the_execution_engine(host, tmp_path):
    import execution
    import folder_paths
    import nodes
    from PIL import Image

    from nulltext_p2p.runner.comfy_host import init_nodes, setup_host

    asyncio.run(init_nodes(setup_host(host.path, cpu=True)))
    folders = folder_paths.get_input_directory(), folder_paths.get_output_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    folder_paths.set_output_directory(str(tmp_path / "output"))
    os.makedirs(tmp_path / "input", exist_ok=True)
    Image.fromarray((make_test_image(128, 192)[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "input" / "photo.png")
    api = edit_graph({"class_type": "NTPTest_TinySDXLLoader", "inputs": {"seed": 0}}, SOURCE, TARGET, "ntp_sdxl")
    nodes.NODE_CLASS_MAPPINGS["NTPTest_TinySDXLLoader"] = TinySDXLLoader
    try:
        valid = asyncio.run(execution.validate_prompt("test", api, None))
        assert valid[0], f"validation failed: {valid[1]} {valid[3]}"
        executor = new_prompt_executor(execution, ServerStub())
        executor.execute(api, "sdxl-prompt", {}, valid[2])
    finally:
        del nodes.NODE_CLASS_MAPPINGS["NTPTest_TinySDXLLoader"]
        folder_paths.set_input_directory(folders[0])
        folder_paths.set_output_directory(folders[1])
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success, errors
    images = executor.history_result["outputs"]["11"]["images"]
    assert len(images) == 2  # [reconstruction, edit]
    for item in images:
        im = np.asarray(Image.open(tmp_path / "output" / item.get("subfolder", "") / item["filename"]))
        assert im.shape == (128, 192, 3)
        assert np.isfinite(im).all() and im.std() > 0


def test_sdxl_inversion_file_round_trip_edits_identically(sdxl, tmp_path):
    import folder_paths

    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.inversion_io import LoadInversion, SaveInversion

    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    try:
        SaveInversion.execute(sdxl.model, sdxl.inv, sdxl.value, "sdxl", SOURCE)
        with torch.inference_mode():
            out = LoadInversion.execute("sdxl_00001.safetensors", sdxl.model)
    finally:
        folder_paths.set_output_directory(old)
    inv2, null2, source2, prompt2 = out.args
    assert "WARNING" not in out.ui["text"][0] and "192x128 px" in out.ui["text"][0]
    assert inv2.model_family == "SDXL" and prompt2 == SOURCE
    assert torch.equal(source2[0][0], sdxl.source[0][0].float())
    assert torch.equal(source2[0][1]["pooled_output"], sdxl.source[0][1]["pooled_output"].float())
    control, _, tgt = control_for(sdxl.clip, TARGET, blend_words="cat, tiger")
    with torch.inference_mode():
        live, _ = run_edit(sdxl.model, sdxl.inv, sdxl.value, sdxl.source, tgt, control, 7.5, preview=False)
        from_file, _ = run_edit(sdxl.model, inv2, null2, source2, tgt, control, 7.5, preview=False)
    assert torch.equal(live, from_file)
