"""SD3/SD3.5 and Qwen-Image through the host's execution engine and the headless runner, on the tiny random-weight
models (tests/tiny_sd3.py, tests/tiny_qwen_image.py) at 128x128 px, 4 steps.

1. The whole graph per family (test-only loader -> CLIP Text Encode -> Load Image -> VAE Encode -> DDIM Invert ->
   Null-Text Optimize at the family's guidance -> Attention Controller -> Edited Sample -> VAE Decode -> Save
   Image), then Save Inversion -> Load Inversion -> Edited Sample again: bit-identical latents, a format version 2
   file that records the family.
2. The runner (``run_in_process``) on an API workflow whose loader is the test-only node.
3. Refine mode with a MASK, targets of other token counts than the source (Qwen-Image pads them).
4. Refusals naming node, input and fix: null-text on Flux-dev (guidance-distilled: Direct Inversion instead), a Flux
   Fill model, prompts of another family, an inversion of another family (and Load Inversion's warning).

Flux-dev (tests/tiny_flux.py) runs the same graph with Fast Inversion (direct-inversion, guidance 1) in place of
Null-Text Optimize; Chroma with Null-Text Optimize as SD3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import ServerStub, control_for, edit_graph, encode, image_latent, make_test_image, tiny_loader_node
from tiny_flux import build_tiny_chroma, build_tiny_flux
from tiny_qwen_image import build_tiny_qwen_image
from tiny_sd3 import build_tiny_sd3

pytestmark = pytest.mark.host

FAMILIES = ("SD3", "Qwen-Image")  # the refusal tests' pair
GRAPH_FAMILIES = (*FAMILIES, "Chroma", "Flux")
GUIDANCE = {"SD3": 4.5, "Qwen-Image": 4.0, "Chroma": 3.5, "Flux": 1.0}  # the families' defaults (default_guidance)
OTHER = {"SD3": "Qwen-Image", "Qwen-Image": "SD3"}
SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"
SIZE = 128  # px: a 16x16 latent
STEPS = 4
INNER_STEPS = 2
DDIM_NODE = "Null-text P2P: DDIM Invert"
NTO_NODE = "Null-text P2P: Null-Text Optimize"
EDIT_NODE = "Null-text P2P: Edited Sample"
FAST_NODE = "Null-text P2P: Fast Inversion"


# ------------------------------------------------------------------------------------------------------------------
# Test-only loader nodes (the host's checkpoint loader cannot detect the tiny models)
# ------------------------------------------------------------------------------------------------------------------
TinySD3Loader = tiny_loader_node(build_tiny_sd3, "Test-only loader node: the tiny SD3-layout MODEL/CLIP/VAE.")
TinyQwenImageLoader = tiny_loader_node(
    build_tiny_qwen_image, "Test-only loader node: the tiny Qwen-Image-layout MODEL/CLIP/VAE (0.3.64: a 16-channel "
    "TAESD with 4-D latents; DDIM Invert adds the frame axis).")

TinyFluxLoader = tiny_loader_node(build_tiny_flux, "Test-only loader node: the tiny Flux-dev MODEL/CLIP/VAE.")
TinyChromaLoader = tiny_loader_node(build_tiny_chroma, "Test-only loader node: the tiny Chroma MODEL/CLIP/VAE.")

LOADERS = {"SD3": ("NTPTest_TinySD3Loader", TinySD3Loader),
           "Qwen-Image": ("NTPTest_TinyQwenImageLoader", TinyQwenImageLoader),
           "Chroma": ("NTPTest_TinyChromaLoader", TinyChromaLoader),
           "Flux": ("NTPTest_TinyFluxLoader", TinyFluxLoader)}


def loader_node(family: str, seed: int = 0) -> dict:
    return {"class_type": LOADERS[family][0], "inputs": {"seed": seed}}


@contextlib.contextmanager
def registered(family: str):
    """The family's test-only loader in the host's node mappings for the block (removed afterwards)."""
    import nodes

    name, cls = LOADERS[family]
    nodes.NODE_CLASS_MAPPINGS[name] = cls
    try:
        yield name
    finally:
        nodes.NODE_CLASS_MAPPINGS.pop(name, None)


def family_graph(family: str, prefix: str, target: str = TARGET) -> dict:
    """``helpers.edit_graph`` with the family's loader and guidance (nodes 7 and 9)."""
    api = edit_graph(loader_node(family), SOURCE, target, prefix)
    api["7"]["inputs"]["guidance"] = GUIDANCE[family]
    api["9"]["inputs"]["guidance"] = GUIDANCE[family]
    if family == "Flux":  # guidance-distilled: Direct Inversion in place of null-text (same outputs)
        api["7"] = {"class_type": "NTP_FastInversion", "inputs": {
            "model": ["1", 0], "source": ["2", 0], "null": ["3", 0], "inversion": ["6", 0],
            "method": "direct-inversion", "guidance": 1.0}}
    return api


def save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def photo_pixels(seed: int = 0) -> np.ndarray:
    return (make_test_image(SIZE, SIZE, seed=seed)[0].numpy() * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------------
# The execution engine
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(host):
    """The host's ``execution`` module with every node loaded (ours included)."""
    from nulltext_p2p.runner.comfy_host import init_nodes, setup_host

    h = setup_host(host.path, cpu=True)
    asyncio.run(init_nodes(h))
    return h


@pytest.fixture
def io_dirs(engine, tmp_path):
    """Input/output folders of the host for one test (photo.png in the input), restored afterwards."""
    fp = engine.folder_paths
    old = fp.get_input_directory(), fp.get_output_directory()
    inp, out = tmp_path / "input", tmp_path / "output"
    save_png(inp / "photo.png", photo_pixels())
    out.mkdir(parents=True, exist_ok=True)
    fp.set_input_directory(str(inp))
    fp.set_output_directory(str(out))
    try:
        yield SimpleNamespace(input=inp, output=out)
    finally:
        fp.set_input_directory(old[0])
        fp.set_output_directory(old[1])


def execute(engine, api: dict, prompt_id: str, executor=None):
    """Validate and run ``api``; returns the executor (its caches hold the outputs)."""
    from nulltext_p2p.host.compat import new_prompt_executor

    execution = engine.execution
    valid = asyncio.run(execution.validate_prompt(prompt_id, api, None))
    assert valid[0] and not valid[3], f"validation failed: {valid[1]} {valid[3]}"
    if executor is None:
        executor = new_prompt_executor(execution, ServerStub())
    executor.execute(api, prompt_id, {}, valid[2])
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success and not errors, errors
    return executor


def node_outputs(executor, node_id: str) -> list:
    from nulltext_p2p.host.compat import cached_node_outputs

    out = cached_node_outputs(executor.caches.outputs, node_id)
    assert out is not None, f"node {node_id} has no cached outputs"
    return out


def saved_images(executor, output_dir: Path, node_id: str) -> list[np.ndarray]:
    from PIL import Image

    items = executor.history_result["outputs"][node_id]["images"]
    out = []
    for item in items:
        with Image.open(output_dir / item.get("subfolder", "") / item["filename"]) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def assert_finite_images(images: list[np.ndarray], count: int) -> None:
    assert len(images) == count
    for im in images:
        assert im.shape == (SIZE, SIZE, 3)
        assert np.isfinite(im.astype(np.float64)).all() and im.std() > 0


def ui_text(executor, node_id: str) -> str:
    return "\n".join(executor.history_result["outputs"][node_id]["text"])


# ------------------------------------------------------------------------------------------------------------------
# 1. The graph, Save Inversion, Load Inversion
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", GRAPH_FAMILIES)
def test_graph_edits_and_the_saved_inversion_edits_identically(family, engine, io_dirs):
    import safetensors

    from nulltext_p2p.host.families import family_named

    g = GUIDANCE[family]
    assert family_named(family).default_guidance == g  # Null-Text Optimize and Edited Sample at the family default
    api = family_graph(family, f"ntp_{family}")
    api["12"] = {"class_type": "NTP_SaveInversion", "inputs": {
        "model": ["1", 0], "inversion": ["6", 0], "null_embeddings": ["7", 0], "filename_prefix": f"inv_{family}",
        "source_prompt": SOURCE}}
    with registered(family):
        executor = execute(engine, api, f"{family}-live")
        live = node_outputs(executor, "9")[0][0]["samples"].clone()
        inversion = node_outputs(executor, "6")[0][0]
        null = node_outputs(executor, "7")[0][0]
        images = saved_images(executor, io_dirs.output, "11")
        files = executor.history_result["outputs"]["12"]["inversion_files"]

        # the family's model, schedule and null embeddings
        assert inversion.model_family == family and inversion.steps == STEPS
        assert inversion.latents.shape[2] == 16 and tuple(inversion.latents.shape[-2:]) == (16, 16)
        assert null.guidance == g and null.steps == STEPS
        assert null.method == ("direct-inversion" if family == "Flux" else "null-text")
        assert (null.iterations and len(null.iterations) == STEPS) or family == "Flux"
        assert live.shape[0] == 2 and torch.isfinite(live).all()
        assert not torch.equal(live[0], live[1])  # the word swap changed the edit row
        assert_finite_images(images, 2)  # [reconstruction, edit]

        # the file: format version 2 (flow schedule), the family recorded
        assert len(files) == 1
        path = io_dirs.output / files[0]["subfolder"] / files[0]["filename"]
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata()
        assert meta["model_family"] == family
        assert meta["format_version"] == "2"
        assert meta["schedule_kind"] == "flow"

        # Load Inversion -> the same controller -> Edited Sample (the same executor: the loader and controller are
        # taken from the cache, as on a server)
        api2 = {
            "1": loader_node(family),
            "8": api["8"],
            "20": {"class_type": "NTP_LoadInversion", "inputs": {"inversion_file": files[0]["filename"],
                                                                 "model": ["1", 0]}},
            "21": {"class_type": "NTP_EditedSample", "inputs": {
                "model": ["1", 0], "inversion": ["20", 0], "null_embeddings": ["20", 1], "source": ["20", 2],
                "guidance": g, "target": ["8", 2], "control": ["8", 0]}},
            "22": {"class_type": "VAEDecode", "inputs": {"samples": ["21", 0], "vae": ["1", 2]}},
            "23": {"class_type": "SaveImage", "inputs": {"images": ["22", 0], "filename_prefix": f"loaded_{family}"}},
        }
        execute(engine, api2, f"{family}-loaded", executor)
        from_file = node_outputs(executor, "21")[0][0]["samples"]
        loaded = node_outputs(executor, "20")
        text = ui_text(executor, "20")
        assert_finite_images(saved_images(executor, io_dirs.output, "23"), 2)
    assert "WARNING" not in text and f"{STEPS} steps" in text and f"{SIZE}x{SIZE} px" in text, text
    assert loaded[3][0] == SOURCE
    assert loaded[0][0].model_family == family
    assert torch.equal(loaded[0][0].latents, inversion.latents)
    assert torch.equal(loaded[1][0].embeddings, null.embeddings)
    assert torch.equal(live, from_file)


# ------------------------------------------------------------------------------------------------------------------
# 2. The runner
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", GRAPH_FAMILIES)
def test_runner_runs_an_api_workflow_with_the_family(family, host, tmp_path):
    from PIL import Image

    from nulltext_p2p.runner.app import prepare_in_process, run_in_process
    from nulltext_p2p.runner.comfy_host import Reporter, run_sync

    run_sync(prepare_in_process(str(host.path), cpu=True))  # the host and its nodes, as the runner loads them
    api = family_graph(family, f"runner_{family}", target=f"{TARGET}\na dog sitting on a table")
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(api))
    photo = tmp_path / "photo_in.png"
    save_png(photo, photo_pixels(seed=1))
    out_dir, in_dir = tmp_path / "output", tmp_path / "input"
    with registered(family):
        result = run_sync(run_in_process(str(workflow), image=str(photo), comfyui=str(host.path), cpu=True,
                                         output_dir=str(out_dir), input_dir=str(in_dir),
                                         reporter=Reporter({}, quiet=True)))
    import nodes

    assert LOADERS[family][0] not in nodes.NODE_CLASS_MAPPINGS
    assert result.prompt["1"]["class_type"] == LOADERS[family][0]
    assert result.prompt["4"]["inputs"]["image"].endswith("photo_in.png")  # --image reached Load Image
    saved = [s for s in result.saved if s.kind == "output"]
    assert len(saved) == 3, [s.path for s in saved]  # [reconstruction, tiger, dog]
    for item in saved:
        path = Path(item.path)
        assert out_dir in path.parents
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        assert pixels.shape == (SIZE, SIZE, 3)
        assert np.isfinite(pixels.astype(np.float64)).all() and pixels.std() > 0
    latents = result.node_outputs("9")[0][0]["samples"]
    assert latents.shape[0] == 3 and torch.isfinite(latents).all()
    assert result.node_outputs("6")[0][0].model_family == family


# ------------------------------------------------------------------------------------------------------------------
# 3. Refine mode with a MASK; targets of other token counts than the source
# ------------------------------------------------------------------------------------------------------------------
REFINE_TARGETS = ("a big fluffy cat sitting on a table", "a cat on a table")


@pytest.mark.parametrize("family", GRAPH_FAMILIES)
def test_refine_with_a_mask_and_targets_of_other_lengths(family, engine, io_dirs):
    from nulltext_p2p.host.families import family_of_clip

    g = GUIDANCE[family]
    half = np.zeros((SIZE, SIZE, 3), np.uint8)
    half[:, : SIZE // 2] = 255  # edit the left half only
    save_png(io_dirs.input / "mask.png", half)
    api = family_graph(family, f"refine_{family}", target="\n".join(REFINE_TARGETS))
    api["8"]["inputs"].update(mode="refine", reweight="fluffy=2", blend_words="")
    api["12"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}
    api["9"]["inputs"].update(mask=["12", 0], mask_combine="intersection")
    # the reconstruction alone (no target): the source row of the edit must not depend on the padded targets
    api["13"] = {"class_type": "NTP_EditedSample", "inputs": {
        "model": ["1", 0], "inversion": ["6", 0], "null_embeddings": ["7", 0], "source": ["2", 0], "guidance": g}}
    api["14"] = {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["1", 2]}}
    api["15"] = {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}}
    with registered(family):
        executor = execute(engine, api, f"{family}-refine")
        edit_out = node_outputs(executor, "9")
        recon = node_outputs(executor, "13")[0][0]["samples"]
        control, source_cond, target_cond = node_outputs(executor, "8")
        clip = node_outputs(executor, "1")[1][0]
        images = saved_images(executor, io_dirs.output, "11")
    out, applied = edit_out[0][0]["samples"], edit_out[2][0]
    assert_finite_images(images, 3)  # [reconstruction, big fluffy cat, cat on a table]
    assert out.shape[0] == 3 and torch.isfinite(out).all()

    control, target_cond = control[0], target_cond[0]
    fam = family_of_clip(clip)
    assert control.mode == "refine" and control.family == fam.label
    lengths = [len(fam.prompt_tokens(clip, t).words) for t in (SOURCE, *REFINE_TARGETS)]
    assert lengths == [6, 8, 5]
    n_src = source_cond[0][0][0].shape[1]
    if family in ("Qwen-Image", "Chroma"):  # the padding path: targets zero-padded to the longest, masked where padded
        own = [encode(clip, t)[0][0].shape[1] for t in REFINE_TARGETS]
        assert own[0] > n_src > own[1], (n_src, own)
        emb = target_cond[0][0]
        assert emb.shape[1] == own[0]
        mask = target_cond[0][1]["attention_mask"]
        assert mask.sum(-1).tolist() == own
        assert float(emb[1, own[1]:].abs().max()) == 0.0
        assert control.source.max_len == control.targets[0].max_len == own[0]
    else:  # SD3 pads every prompt to 77 + 77 tokens itself, Flux's T5 to 256
        assert target_cond[0][0].shape[1] == n_src == {"SD3": 154, "Flux": 256}[family]

    # the mask: the edits are the reconstruction wherever it is 0 (the right half), bit for bit
    expected = torch.zeros(2, SIZE, SIZE)
    expected[:, :, : SIZE // 2] = 1.0
    assert torch.equal(applied.cpu(), expected)
    right, left = out[..., 8:], out[..., :8]  # 16 latent columns
    for row in (1, 2):
        assert torch.equal(right[row], right[0])
        assert float((left[row] - left[0]).abs().max()) > 1e-3
    assert not torch.equal(out[1], out[2])
    # the source row with padded targets is the plain reconstruction (padding is masked, never attended): measured
    # about 1e-6 on both hosts, 0.45 for Qwen-Image with the padding left unmasked (EditInputs.text_lengths None)
    rel = float((out[0] - recon[0]).norm() / recon[0].norm())
    print(f"{family} refine: |source row - reconstruction| / |reconstruction| = {rel:.2e}")
    assert rel < 1e-5


# ------------------------------------------------------------------------------------------------------------------
# 4. Refusals: node, input, fix
# ------------------------------------------------------------------------------------------------------------------
CONTEXT_WIDTH = {"SD3": 4096, "Qwen-Image": 64}  # the tiny models' text widths (SD3: always 4096)
CLIP_HINT = {"SD3": "the CLIP of the same SD3/SD3.5 checkpoint", "Qwen-Image": "the Qwen-Image text encoder"}


@pytest.fixture(scope="module")
def made(tiny_sd3, tiny_qwen_image):
    """Per family: the session's tiny model, its prompts, a 16-channel photo latent as VAE Encode gives it, a 2-step
    inversion and 1-iteration null embeddings at the family's guidance."""
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    out = {}
    for family, (model, clip, vae) in (("SD3", tiny_sd3), ("Qwen-Image", tiny_qwen_image)):
        source, null = encode(clip, SOURCE), encode(clip, "")
        with torch.inference_mode():  # as the host's executor runs nodes
            samples = vae.encode(make_test_image(SIZE, SIZE))
            latent = {"samples": samples}
            inv = run_inversion(model, source, latent, 2)
            value, _ = run_null_text(model, source, null, inv, GUIDANCE[family], 1, 1e-5)
        out[family] = SimpleNamespace(model=model, clip=clip, source=source, null=null, latent=latent, inv=inv,
                                      value=value, guidance=GUIDANCE[family])
    return out


def refusal(call) -> str:
    """The message of the NodeInputError ``call()`` raises."""
    from nulltext_p2p.host.errors import NodeInputError

    with pytest.raises(NodeInputError) as e:
        call()
    return str(e.value)


def test_null_text_on_flux_dev_is_refused_pointing_to_direct_inversion(tiny_flux):
    """Null-Text Optimize refuses Flux-dev (guidance-distilled) before anything else, naming Direct Inversion; the
    other nodes take it."""
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, _ = tiny_flux
    source, null = encode(clip, SOURCE), encode(clip, "")
    with torch.inference_mode():
        inv = run_inversion(model, source, {"samples": torch.zeros(1, 16, 16, 16)}, 2)
        msg = refusal(lambda: run_null_text(model, source, null, inv, 1.0, 1, 1e-5))
    print(msg)
    problem, fix = msg.split(" Fix: ")
    assert problem.startswith(f"[{NTO_NODE}] input 'model': Flux-dev and Flux-schnell are guidance-distilled"), msg
    assert "no unconditional branch" in problem
    assert fix.startswith("use Fast Inversion with method direct-inversion and guidance 1"), msg
    assert inv.model_family == "Flux"


def test_a_flux_model_with_image_inputs_is_refused(tiny_flux):
    """A Flux model whose input takes more channels than the latent (Flux Fill / Canny / Depth) is refused by every
    node, naming what it is and what to load."""
    import comfy.model_patcher
    import comfy.supported_models

    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from tiny_flux import FLUX_UNET_CONFIG, with_host_fields
    from comfy.ldm.flux.model import FluxParams

    import comfy.model_management as mm

    config = comfy.supported_models.Flux(with_host_fields({**FLUX_UNET_CONFIG, "in_channels": 32}, FluxParams))
    config.set_inference_dtype(torch.float32, None)
    fill = comfy.model_patcher.ModelPatcher(config.get_model({}, "", device=mm.unet_offload_device()),
                                            load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    _, clip, _ = tiny_flux
    with torch.inference_mode():
        msg = refusal(lambda: run_inversion(fill, encode(clip, SOURCE), {"samples": torch.zeros(1, 16, 16, 16)}, 2))
    assert msg == (f"[{DDIM_NODE}] input 'model': this Flux model takes 16 extra input channels (an image or mask "
                   "beside the latent: Flux Fill, Canny or Depth), which inversion does not model. Fix: load Flux-dev "
                   "(or a Flux-dev fine-tune)."), msg


@pytest.fixture(scope="module")
def sd_prompts(tiny_model, tiny_sdxl):
    """SD 1.x and SDXL (the session's tiny models): a latent, the source and empty prompts and the Attention
    Controller's outputs for the word swap, each made once (their CLIPs are the costly part)."""
    out = []
    for name, (model, clip, _), width in (("SD1.x", tiny_model, 768), ("SDXL", tiny_sdxl, 2048)):
        control, _, target = control_for(clip, TARGET)
        out.append(SimpleNamespace(name=name, model=model, width=width, latent=image_latent(model),
                                   source=encode(clip, SOURCE), null=encode(clip, ""), control=control, target=target))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_of_another_family_are_refused(family, made, sd_prompts):
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    m = made[family]
    width = CONTEXT_WIDTH[family]
    _, _, own_target = control_for(m.clip, TARGET)
    for sd in sd_prompts:
        # the family's prompt fed to an SD model
        msg = refusal(lambda: run_inversion(sd.model, m.source, sd.latent, STEPS))
        assert msg.startswith(f"[{DDIM_NODE}] input 'source': its token embeddings are {width} wide but this model "
                              f"reads {sd.width}: the prompt was encoded with another model family's CLIP."), msg
        assert "Fix: encode the prompt with the CLIP output of the same Load Checkpoint as the model." in msg

        # an SD prompt fed to the family's model: DDIM Invert, Null-Text Optimize (source and null)
        expected = (f"its token embeddings are {sd.width} wide but this {family} model reads {width}: the prompt "
                    "was encoded with another model family's text encoder. Fix: encode the prompt with "
                    f"{CLIP_HINT[family]}")
        msg = refusal(lambda: run_inversion(m.model, sd.source, m.latent, STEPS))
        assert msg.startswith(f"[{DDIM_NODE}] input 'source': {expected}"), msg
        msg = refusal(lambda: run_null_text(m.model, sd.source, m.null, m.inv, m.guidance, 1, 1e-5))
        assert msg.startswith(f"[{NTO_NODE}] input 'source': {expected}"), msg
        with torch.inference_mode():
            msg = refusal(lambda: run_null_text(m.model, m.source, sd.null, m.inv, m.guidance, 1, 1e-5,
                                                null_start="null"))
        assert msg.startswith(f"[{NTO_NODE}] input 'null': {expected}"), msg

        # the SD CLIP's prompts through the Attention Controller, its control to the family's Edited Sample
        # (the control records the family's label, "SD 1.x/2.x/SDXL", for any SD CLIP)
        assert sd.control.family == "SD 1.x/2.x/SDXL"
        with torch.inference_mode():
            msg = refusal(lambda: run_edit(m.model, m.inv, m.value, m.source, sd.target, sd.control, m.guidance,
                                           preview=False))
            assert msg.startswith(f"[{EDIT_NODE}] input 'target': its embedding shape [77, {sd.width}] differs "
                                  "from the source's"), msg
            assert "Fix: encode source and target with the same CLIP" in msg
            msg = refusal(lambda: run_edit(m.model, m.inv, m.value, m.source, own_target, sd.control, m.guidance,
                                           preview=False))
            assert msg == (f"[{EDIT_NODE}] input 'control': it was made with the text encoder of a "
                           f"{sd.control.family} model, but the model is {family}. Fix: connect the CLIP of this model "
                           "to the Attention Controller."), msg


@pytest.mark.parametrize("family", FAMILIES)
def test_an_inversion_of_another_family_is_refused(family, made, engine, io_dirs):
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.inversion_io import LoadInversion, SaveInversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    m, other = made[family], OTHER[family]
    o = made[other]
    problem = (f"input 'inversion': it was made with a {family} model, but this model is {other}. Fix: connect the "
               "model the inversion was made with, or invert the photo again with this model.")
    calls = {
        NTO_NODE: lambda: run_null_text(o.model, o.source, o.null, m.inv, o.guidance, 1, 1e-5),
        FAST_NODE: lambda: run_fast_inversion(o.model, o.source, o.null, m.inv, "direct-inversion", o.guidance),
        EDIT_NODE: lambda: run_edit(o.model, m.inv, m.value, o.source, None, None, o.guidance, preview=False),
    }
    for node, call in calls.items():
        with torch.inference_mode():
            assert refusal(call) == f"[{node}] {problem}"

    # Save Inversion, then Load Inversion with the other family's model: a warning on the node, and Edited Sample
    # refuses what it loaded
    SaveInversion.execute(m.model, m.inv, m.value, f"cross_{family}", SOURCE)
    name = f"cross_{family}_00001.safetensors"
    with torch.inference_mode():
        own = LoadInversion.execute(name, m.model)
        crossed = LoadInversion.execute(name, o.model)
    assert "WARNING" not in own.ui["text"][0]
    text = crossed.ui["text"][0]
    assert (f"WARNING: the file was made with a {family} model but this MODEL is {other}: Null-Text Optimize and "
            "Edited Sample will refuse it. Connect a model of the file's family.") in text, text
    inv2, null2, source2, prompt2 = crossed.args
    assert inv2.model_family == family and prompt2 == SOURCE
    with torch.inference_mode():
        msg = refusal(lambda: run_edit(o.model, inv2, null2, o.source, None, None, o.guidance, preview=False))
        assert msg == f"[{EDIT_NODE}] {problem}"
        msg = refusal(lambda: run_edit(o.model, inv2, null2, source2, None, None, o.guidance, preview=False))
        assert msg == f"[{EDIT_NODE}] {problem}"
