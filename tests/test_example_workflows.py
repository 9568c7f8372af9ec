"""Every file in example_workflows/ loads, converts, validates and runs through the headless runner (in-process)
on the tiny model, and saves finite images of the expected count and size.

Kept fast: checkpoint -> the tiny SD1.x checkpoint, image -> a generated 128x128 PNG (16x16 latents), Resize ->
128x128, DDIM Invert steps -> 2, Null-Text Optimize inner_steps -> 1. Everything else (guidance, controller
settings, prompts) is what the file says. The runs share one PromptExecutor, as successive prompts on a server
do: the examples share their source caption, so the inversion and null-text optimisation run once and later
examples take them from the cache (each example still validates and runs every node it does not share).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
SIZE = 128
STEPS = 2
INNER_STEPS = 1

# Saved images per example (Save Image writes one file per batch row).
EXPECTED_SAVED = {
    "invert_and_reconstruct.json": 2,  # source, reconstruction
    "word_swap.json": 3,  # source, reconstruction, tiger
    "refine.json": 3,  # source, reconstruction, wooden table
    "reweight.json": 3,  # source, reconstruction, fluffier
    "invert_once_edit_many.json": 5,  # [reconstruction, tiger, dog] + [reconstruction, wooden table]
    "sdxl_word_swap.json": 3,  # source, reconstruction, tiger (run here with the tiny SD1.x checkpoint)
    "masked_edit.json": 4,  # source, reconstruction, tiger + the mask applied
}
# --mask for the examples with a Load Image (as Mask) node: the mask image shipped beside them
MASKS = {"masked_edit.json": str(REPO_ROOT / "example_workflows" / "masked_edit_mask.png")}
CHECKPOINTS = {"sdxl_word_swap.json": "sd_xl_base_1.0.safetensors"}  # the rest: v1-5-pruned-emaonly.safetensors
CORE_NODES = {"LoadImage", "CheckpointLoaderSimple", "CLIPTextEncode", "VAEEncode", "VAEDecode", "SaveImage",
              "PreviewImage", "ImageScale", "ImageBatch", "PrimitiveStringMultiline", "Note", "MarkdownNote",
              "LoadImageMask", "MaskToImage"}
PACK_PREFIX = "NTP_"
# The reference's settings the examples must ship with (the authors' null_text_w_ptp.ipynb: 50 DDIM steps, guidance
# 7.5, NullInversion.invert's 10 inner steps and early stop 1e-5; cross/self replace steps 0.8/0.5, LocalBlend from
# 0.2 at threshold 0.3).
DEFAULTS = {
    "NTP_DDIMInvert": {"steps": 50},
    "NTP_NullTextOptimize": {"guidance": 7.5, "inner_steps": 10, "epsilon": 1e-5},
    "NTP_AttentionController": {"cross_replace": 0.8, "self_replace": 0.5, "blend_threshold": 0.3,
                                "blend_start": 0.2},
    "NTP_EditedSample": {"guidance": 7.5},
}


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert set(EXPECTED_SAVED) <= names, f"missing examples: {set(EXPECTED_SAVED) - names}"


@pytest.fixture(scope="module")
def runner_host(host):
    """(runner Host, node definitions): the host imported through the runner, every node loaded (ours too)."""
    from nulltext_p2p.runner.app import prepare_in_process
    from nulltext_p2p.runner.comfy_host import run_sync

    return run_sync(prepare_in_process(str(host.path)))


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """The PromptExecutor of the previous run (its caches) and the folders it runs with (an executor is only
    reused with the same output/input folders)."""
    root = tmp_path_factory.mktemp("example_runs")
    return {"executor": None, "output": root / "output", "input": root / "input"}


@pytest.fixture(scope="module")
def source_png(tmp_path_factory) -> str:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    blob = np.exp(-((xx - 0.6) ** 2 + (yy - 0.45) ** 2) / 0.04)
    rgb = np.stack([0.3 + 0.4 * xx + 0.3 * blob, 0.5 + 0.2 * yy - 0.2 * blob, 0.4 + 0.1 * xx * yy], axis=-1)
    pixels = (np.clip(rgb, 0, 1) * 255).round().astype("uint8")
    path = tmp_path_factory.mktemp("example_inputs") / "photo.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def fast_sets(prompt: dict) -> list[str]:
    """--set overrides (by node id) that make any example cheap on the tiny model."""
    sets = []
    for nid, node in prompt.items():
        kind = node["class_type"]
        if kind == "NTP_DDIMInvert":
            sets.append(f"{nid}.steps={STEPS}")
        elif kind == "NTP_NullTextOptimize":
            sets.append(f"{nid}.inner_steps={INNER_STEPS}")
        elif kind == "ImageScale":
            sets += [f"{nid}.width={SIZE}", f"{nid}.height={SIZE}"]
    return sets


def note_command_sets(workflow: dict) -> list[str]:
    """The --set values of the headless command quoted in the example's Note."""
    import shlex

    text = next(n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote"))["widgets_values"][0]
    command = text[text.index("python -m runner run"):].replace("\\\n", " ")
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words) if w == "--set"]


def tensors_in(value):
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_a_self_explaining_ui_workflow(path, runner_host):
    from nulltext_p2p.runner.convert import workflow_to_prompt

    host, definitions = runner_host
    workflow = json.loads(path.read_text())
    assert workflow.get("version") == 0.4 and isinstance(workflow.get("links"), list)
    for node in workflow["nodes"]:
        assert {"id", "type", "pos", "size", "mode", "inputs", "outputs", "widgets_values"} <= set(node), node["id"]
        assert node["type"] in CORE_NODES or node["type"].startswith(PACK_PREFIX), node["type"]
    notes = [n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert notes and len(notes[0]["widgets_values"][0]) > 200, "every example explains itself in a Note"
    assert f"example_workflows/{path.name}" in notes[0]["widgets_values"][0], "the Note quotes the headless command"
    prompt = workflow_to_prompt(workflow, definitions)
    kinds = [n["class_type"] for n in prompt.values()]
    assert "Note" not in kinds
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            assert node["inputs"]["ckpt_name"] == CHECKPOINTS.get(path.name, "v1-5-pruned-emaonly.safetensors")
        for name, value in DEFAULTS.get(node["class_type"], {}).items():
            assert node["inputs"][name] == pytest.approx(value), (node["_meta"]["title"], name)
    assert "SaveImage" in kinds
    # the command the Note quotes names existing nodes, inputs and valid values
    from nulltext_p2p.runner.overrides import apply_sets

    assert note_command_sets(workflow)
    apply_sets(prompt, definitions, note_command_sets(workflow))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_headless(path, runner_host, tiny_checkpoint_name, source_png, shared_run):
    from PIL import Image

    from nulltext_p2p.runner.app import build_prompt, load_workflow, run_in_process
    from nulltext_p2p.runner.comfy_host import Reporter, run_sync

    host, definitions = runner_host
    sets = fast_sets(build_prompt(load_workflow(str(path)), definitions))
    out_dir, in_dir = shared_run["output"], shared_run["input"]
    result = run_sync(run_in_process(str(path), image=source_png, checkpoint=tiny_checkpoint_name, sets=sets,
                                     comfyui=str(host.path), output_dir=str(out_dir), input_dir=str(in_dir),
                                     reporter=Reporter({}, quiet=True), executor=shared_run["executor"],
                                     mask=MASKS.get(path.name)))
    assert shared_run["executor"] is None or result.executor is shared_run["executor"], "the caches were not reused"
    shared_run["executor"] = result.executor

    # the overrides reached the prompt that ran
    for node in result.prompt.values():
        if node["class_type"] == "NTP_DDIMInvert":
            assert node["inputs"]["steps"] == STEPS
        if node["class_type"] == "CheckpointLoaderSimple":
            assert node["inputs"]["ckpt_name"] == tiny_checkpoint_name
        if node["class_type"] == "LoadImage":
            assert (in_dir / node["inputs"]["image"]).is_file()

    saved = [s for s in result.saved if s.kind == "output"]
    expected = EXPECTED_SAVED.get(path.name)
    if expected is not None:
        assert len(saved) == expected, [s.path for s in saved]
    else:
        assert saved, "an example saves at least one image"
    for item in saved:
        file = Path(item.path)
        assert file.is_file() and out_dir in file.parents, item.path
        with Image.open(file) as img:
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"
            assert "workflow" in img.info and "prompt" in img.info  # opens in the editor like a UI save

    if path.name in MASKS:  # the mask applied, saved as an image: the shipped ellipse (and local blend) show
        masks = [s for s in saved if Path(s.path).name.startswith("masked_edit_mask")]
        assert len(masks) == 1, [s.path for s in saved]
        with Image.open(masks[0].path) as img:
            lo, hi = img.convert("L").getextrema()
        assert lo == 0 and hi > 0, (lo, hi)

    # every tensor the nodes produced (latents, images, embeddings) is finite
    checked = 0
    for nid in result.prompt:
        for tensor in tensors_in(result.node_outputs(nid)):
            if tensor.is_floating_point():
                assert bool(tensor.isfinite().all()), f"non-finite output of node {nid} {result.prompt[nid]['_meta']}"
                checked += 1
    assert checked > 0
    print(f"{path.name}: {len(saved)} images in {result.seconds:.1f} s")


@pytest.mark.parametrize("name", ["word_swap.json", "invert_once_edit_many.json", "masked_edit.json"])
def test_note_command_runs(name, runner_host, tiny_checkpoint_name, source_png, shared_run):
    """The Note's command (new targets with their local-blend words) runs too; the inversion comes from the cache."""
    from nulltext_p2p.runner.app import build_prompt, load_workflow, run_in_process
    from nulltext_p2p.runner.comfy_host import Reporter, run_sync

    host, definitions = runner_host
    path = REPO_ROOT / "example_workflows" / name
    workflow = load_workflow(str(path))
    sets = fast_sets(build_prompt(workflow, definitions)) + note_command_sets(workflow)
    result = run_sync(run_in_process(str(path), image=source_png, checkpoint=tiny_checkpoint_name, sets=sets,
                                     comfyui=str(host.path), output_dir=str(shared_run["output"]),
                                     input_dir=str(shared_run["input"]), reporter=Reporter({}, quiet=True),
                                     executor=shared_run["executor"], mask=MASKS.get(name)))
    shared_run["executor"] = result.executor
    assert len([s for s in result.saved if s.kind == "output"]) == EXPECTED_SAVED[name]
