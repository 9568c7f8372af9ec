"""Every file in example_workflows/ loads, converts, validates and runs through the headless runner (in-process)
on the tiny model, and saves finite images of the expected count and size.

Kept fast: checkpoint -> the tiny SD1.x checkpoint, image -> a generated 128x128 PNG (16x16 latents), Resize ->
128x128, DDIM Invert steps -> 2, Null-Text Optimize inner_steps -> 1. Everything else (guidance, controller
settings, prompts) is what the file says. The runs share one PromptExecutor, as successive prompts on a server
do: the examples share their source caption, so the inversion and null-text optimisation run once and later
examples take them from the cache (each example still validates and runs every node it does not share).

The model-family examples (SD3.5, Qwen-Image, Flux-dev, Chroma; FAMILY_EXAMPLES)
    sdxl_word_swap and sd35_word_swap load one checkpoint (CheckpointLoaderSimple), so the runner runs them like
    the others, with the tiny SD1.x checkpoint in its place: that checks the graph and the runner, not the family.
    qwen_image_word_swap, flux_word_swap and chroma_word_swap load several files (UNETLoader, CLIPLoader or
    DualCLIPLoader, VAELoader) that no checkpoint replaces: their headless run is NOT RUN (NOT_RUN says why; not a
    pytest skip), and their conversion is validated by the host's own ``execution.validate_prompt`` with empty
    stand-in files under the templates' file names. Every family example then runs with its family's tiny model
    (tests/tiny_sd3.py, tests/tiny_qwen_image.py, tests/tiny_flux.py) given to the graph by one test node in place
    of the loaders, with DDIM Invert's steps as the file says (0 = the family's usual count) and inner_steps 1:
    everything after the loaders is the file's graph on the family's own code path.
"""

from __future__ import annotations

import copy
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
    "sd35_word_swap.json": 3,  # source, reconstruction, tiger (run here with the tiny SD1.x checkpoint)
    "qwen_image_word_swap.json": 3,  # source, reconstruction, tiger (run with the tiny Qwen-Image model only)
    "flux_word_swap.json": 3,  # source, reconstruction, tiger (run with the tiny Flux-dev model only)
    "chroma_word_swap.json": 3,  # source, reconstruction, tiger (run with the tiny Chroma model only)
}
# --mask for the examples with a Load Image (as Mask) node: the mask image shipped beside them
MASKS = {"masked_edit.json": str(REPO_ROOT / "example_workflows" / "masked_edit_mask.png")}
CHECKPOINTS = {"sdxl_word_swap.json": "sd_xl_base_1.0.safetensors",  # the rest: v1-5-pruned-emaonly.safetensors
               "sd35_word_swap.json": "sd3.5_large_fp8_scaled.safetensors"}
# The files of the examples that load a model from several files (ComfyUI's own Qwen-Image, Flux-dev and Chroma
# templates'): (loader class, file input, file name, folder).
MODEL_FILES = {
    "qwen_image_word_swap.json": [
        ("UNETLoader", "unet_name", "qwen_image_fp8_e4m3fn.safetensors", "diffusion_models"),
        ("CLIPLoader", "clip_name", "qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders"),
        ("VAELoader", "vae_name", "qwen_image_vae.safetensors", "vae"),
    ],
    "flux_word_swap.json": [
        ("UNETLoader", "unet_name", "flux1-dev.safetensors", "diffusion_models"),
        ("DualCLIPLoader", "clip_name1", "clip_l.safetensors", "text_encoders"),
        ("DualCLIPLoader", "clip_name2", "t5xxl_fp16.safetensors", "text_encoders"),
        ("VAELoader", "vae_name", "ae.safetensors", "vae"),
    ],
    "chroma_word_swap.json": [
        ("UNETLoader", "unet_name", "Chroma1-HD-fp8mixed.safetensors", "diffusion_models"),
        ("CLIPLoader", "clip_name", "t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
        ("VAELoader", "vae_name", "ae.safetensors", "vae"),
    ],
}
CORE_NODES = {"LoadImage", "CheckpointLoaderSimple", "CLIPTextEncode", "VAEEncode", "VAEDecode", "SaveImage",
              "PreviewImage", "ImageScale", "ImageBatch", "PrimitiveStringMultiline", "Note", "MarkdownNote",
              "LoadImageMask", "MaskToImage", "UNETLoader", "CLIPLoader", "VAELoader", "ModelSamplingAuraFlow",
              "DualCLIPLoader", "FluxGuidance"}
# The examples of the transformer families (host/families): their family, the tiny model (conftest fixture) that
# runs them, and the image size their Note speaks of (a multiple of 16 px: 8x VAE, 2x2 patches).
FAMILY_EXAMPLES = {"sd35_word_swap.json": ("SD3", "tiny_sd3"), "qwen_image_word_swap.json": ("Qwen-Image", "tiny_qwen_image"),
                   "flux_word_swap.json": ("Flux", "tiny_flux"), "chroma_word_swap.json": ("Chroma", "tiny_chroma")}
FAMILY_IMAGE_SIZE = 1024
# Examples the runner cannot run with the tiny SD1.x checkpoint, and why (printed by test_not_run_examples_are_
# validated_by_the_host; everything else about them is checked, and they run with their tiny family model).
NOT_RUN = {
    "qwen_image_word_swap.json": "NOT RUN with the tiny SD1.x checkpoint: Qwen-Image loads from three files "
                                 "(UNETLoader, CLIPLoader type qwen_image, VAELoader) that no SD checkpoint replaces "
                                 "and the real ones (about 30 GB) are not here; its conversion is validated by the "
                                 "host and its graph runs with the tiny Qwen-Image model in place of the loaders.",
    "flux_word_swap.json": "NOT RUN with the tiny SD1.x checkpoint: Flux-dev loads from four files (UNETLoader, "
                           "DualCLIPLoader type flux, VAELoader) that no SD checkpoint replaces and the real ones (about "
                           "33 GB) are not here; its conversion is validated by the host and its graph runs with the tiny "
                           "Flux-dev model in place of the loaders.",
    "chroma_word_swap.json": "NOT RUN with the tiny SD1.x checkpoint: Chroma loads from three files (UNETLoader, "
                             "CLIPLoader type chroma, VAELoader) that no SD checkpoint replaces and the real ones (about "
                             "15 GB) are not here; its conversion is validated by the host and its graph runs with the "
                             "tiny Chroma model in place of the loaders.",
}
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


def expected_settings(name: str) -> dict:
    """The settings an example must ship with: the reference's (DEFAULTS) for SD examples; for a family example
    its family's usual steps (or 0, which means them) and guidance (host/families), the rest as the reference."""
    if name not in FAMILY_EXAMPLES:
        return DEFAULTS
    from nulltext_p2p.host.families import family_named

    family = family_named(FAMILY_EXAMPLES[name][0])
    want = copy.deepcopy(DEFAULTS)
    want["NTP_DDIMInvert"]["steps"] = (0, family.default_steps)
    want["NTP_NullTextOptimize"].update(guidance=family.default_guidance, memory_saving=True, null_start="auto")
    want["NTP_FastInversion"] = {"method": "direct-inversion", "guidance": family.default_guidance}
    want["NTP_EditedSample"]["guidance"] = family.default_guidance
    return want


def check_setting(value, want) -> bool:
    if isinstance(want, tuple):
        return value in want
    if isinstance(want, (bool, str)):
        return value == want
    return value == pytest.approx(want)


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


def assert_outputs_finite(result) -> None:
    """Every floating-point tensor the run's nodes produced (latents, images, embeddings) is finite, and there are
    some."""
    checked = 0
    for nid in result.prompt:
        for tensor in tensors_in(result.node_outputs(nid)):
            if tensor.is_floating_point():
                assert bool(tensor.isfinite().all()), f"non-finite output of node {nid} {result.prompt[nid]['_meta']}"
                checked += 1
    assert checked > 0


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
    settings = expected_settings(path.name)
    files = MODEL_FILES.get(path.name, [])
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            assert node["inputs"]["ckpt_name"] == CHECKPOINTS.get(path.name, "v1-5-pruned-emaonly.safetensors")
        for loader, file_input, file_name, _ in files:
            if node["class_type"] == loader:
                assert node["inputs"][file_input] == file_name, node
        for name, value in settings.get(node["class_type"], {}).items():
            assert check_setting(node["inputs"][name], value), (node["_meta"]["title"], name, node["inputs"][name], value)
    assert {f[0] for f in files} <= set(kinds), f"{path.name} loads its model with {sorted({f[0] for f in files})}"
    # every pack node that takes a MODEL takes the same one (the pack reads the schedule from the model it gets)
    models = {json.dumps(n["inputs"]["model"]) for n in prompt.values()
              if n["class_type"].startswith(PACK_PREFIX) and "model" in n["inputs"]}
    assert len(models) == 1, (path.name, models)
    if path.name in FAMILY_EXAMPLES:
        from nulltext_p2p.host.families import family_named

        scales = [n["inputs"] for n in prompt.values() if n["class_type"] == "ImageScale"]
        assert scales and all(s["width"] == s["height"] == FAMILY_IMAGE_SIZE for s in scales), scales
        assert FAMILY_IMAGE_SIZE % 16 == 0
        note = notes[0]["widgets_values"][0]
        family = family_named(FAMILY_EXAMPLES[path.name][0])
        for said in (f"steps 0 (= {family.default_steps})", f"guidance {family.default_guidance:g}", "memory_saving",
                     "null_start", "multiple of 16"):
            assert said in note, f"the Note of {path.name} does not say {said!r}"
    assert "SaveImage" in kinds
    # the command the Note quotes names existing nodes, inputs and valid values
    from nulltext_p2p.runner.overrides import apply_sets

    assert note_command_sets(workflow)
    apply_sets(prompt, definitions, note_command_sets(workflow))


RUN_HEADLESS = [p for p in EXAMPLES if p.name not in NOT_RUN]


@pytest.mark.parametrize("path", RUN_HEADLESS, ids=[p.stem for p in RUN_HEADLESS])
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

    assert_outputs_finite(result)
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


# ----------------------------------------------------------------------------------------------------------------
# The model-family examples: what the runner cannot run with the tiny SD1.x checkpoint
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def stand_in_model_files(runner_host, tmp_path):
    """Empty files under the names the examples' loaders ask for, in folders registered with the host for this test
    only (validation checks a file name against the folder's list; it does not open the file)."""
    host, _ = runner_host
    fp = host.folder_paths
    added = []
    for files in MODEL_FILES.values():
        for _, _, name, folder in files:
            where = tmp_path / folder
            where.mkdir(exist_ok=True)
            (where / name).write_bytes(b"")
            if (folder, str(where)) not in added:
                fp.add_model_folder_path(folder, str(where))
                added.append((folder, str(where)))
    for folder, _ in added:
        fp.filename_list_cache.pop(folder, None)
    yield
    for folder, where in added:
        paths = fp.folder_names_and_paths[folder][0]
        if where in paths:
            paths.remove(where)
        fp.filename_list_cache.pop(folder, None)


@pytest.mark.parametrize("name", sorted(NOT_RUN))
def test_not_run_examples_are_validated_by_the_host(name, runner_host, source_png, shared_run, stand_in_model_files):
    """The converted prompt (with the runner's --image and the fast --set values, as a run would have them) passes
    the host's own validation: node types, link types, combo values (qwen_image among CLIPLoader's types), ranges.
    Only the run is left out (NOT_RUN); test_family_example_runs_on_the_tiny_family_model runs the graph."""
    from nulltext_p2p.runner.app import build_prompt, load_workflow
    from nulltext_p2p.runner.comfy_host import directories, import_image, run_sync

    host, definitions = runner_host
    path = REPO_ROOT / "example_workflows" / name
    workflow = load_workflow(str(path))
    with directories(host, None, str(shared_run["input"])):
        image_name = import_image(host, source_png)
        prompt = build_prompt(workflow, definitions, image_name, None, fast_sets(build_prompt(workflow, definitions)))
        valid = run_sync(host.execution.validate_prompt("validate-" + name, prompt, None))
    ok, error, outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
    assert ok and not node_errors, (error, node_errors)
    optimised = ["NTP_NullTextOptimize"] if any(n["class_type"] == "NTP_NullTextOptimize" for n in prompt.values()) else []
    assert sorted(prompt[o]["class_type"] for o in outputs) == [*optimised, "NTP_ReconstructionCheck", "SaveImage"]
    print(f"{name}: {NOT_RUN[name]}")


LOADERS = {"CheckpointLoaderSimple": ("MODEL", "CLIP", "VAE"), "UNETLoader": ("MODEL",), "CLIPLoader": ("CLIP",),
           "DualCLIPLoader": ("CLIP",), "VAELoader": ("VAE",)}
TINY_NODE = "NTPTest_TinyFamilyModel"


@pytest.fixture
def tiny_family_node(runner_host):
    """A test-only node giving a tiny model's MODEL, CLIP and VAE (set ``.model``), registered with the host for one
    test."""
    host, _ = runner_host

    class TinyFamilyModel:
        model = None
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def load(self):
            return TinyFamilyModel.model

    host.nodes.NODE_CLASS_MAPPINGS[TINY_NODE] = TinyFamilyModel
    yield TinyFamilyModel
    host.nodes.NODE_CLASS_MAPPINGS.pop(TINY_NODE, None)


def with_tiny_loader(prompt: dict) -> dict:
    """The prompt with its model loaders replaced by one TINY_NODE (their MODEL, CLIP and VAE links follow)."""
    slot = {"MODEL": 0, "CLIP": 1, "VAE": 2}
    loaders = {nid: LOADERS[n["class_type"]] for nid, n in prompt.items() if n["class_type"] in LOADERS}
    assert loaders
    tiny = str(max(int(k) for k in prompt) + 1)
    out = {nid: copy.deepcopy(n) for nid, n in prompt.items() if nid not in loaders}
    out[tiny] = {"class_type": TINY_NODE, "inputs": {}, "_meta": {"title": "tiny family model"}}
    for node in out.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] in loaders:
                node["inputs"][name] = [tiny, slot[loaders[value[0]][value[1]]]]
    return out


@pytest.mark.parametrize("name", sorted(FAMILY_EXAMPLES))
def test_family_example_runs_on_the_tiny_family_model(name, request, runner_host, source_png, tiny_family_node,
                                                      tmp_path):
    """The SD3.5 / Qwen-Image example as the file says (steps 0 = the family's usual count, its guidance, null_start
    auto, memory_saving, ModelSamplingAuraFlow for Qwen-Image), with the family's tiny model in place of the loaders,
    a 128 px photo and inner_steps 1: validated and run by the host, three finite images saved, the inversion made
    with the family's usual steps on the sigmas of the MODEL the pack nodes get."""
    import torch
    from PIL import Image

    from nulltext_p2p.host.families import family_named
    from nulltext_p2p.runner.app import build_prompt, load_workflow
    from nulltext_p2p.runner.comfy_host import Reporter, directories, execute_prompt, import_image, run_sync

    host, definitions = runner_host
    family_name, fixture = FAMILY_EXAMPLES[name]
    family = family_named(family_name)
    tiny_family_node.model = request.getfixturevalue(fixture)
    path = REPO_ROOT / "example_workflows" / name
    workflow = load_workflow(str(path))
    sets = [s for s in fast_sets(build_prompt(workflow, definitions)) if ".steps=" not in s]  # steps as the file says
    out_dir, in_dir = tmp_path / "output", tmp_path / "input"
    with directories(host, str(out_dir), str(in_dir)):
        image_name = import_image(host, source_png)
        prompt = with_tiny_loader(build_prompt(workflow, definitions, image_name, None, sets))
        result = run_sync(execute_prompt(host, prompt, workflow, Reporter({}, quiet=True)))

    saved = [s for s in result.saved if s.kind == "output"]
    assert len(saved) == EXPECTED_SAVED[name], [s.path for s in saved]
    for item in saved:
        with Image.open(item.path) as img:
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    invert = next(nid for nid, n in result.prompt.items() if n["class_type"] == "NTP_DDIMInvert")
    assert result.prompt[invert]["inputs"]["steps"] == 0
    inversion = result.node_outputs(invert)[0][0]
    assert inversion.model_family == family_name and inversion.schedule.kind == "flow"
    assert inversion.schedule.steps == family.default_steps
    model_src = result.prompt[invert]["inputs"]["model"]
    patched = result.node_outputs(model_src[0])[model_src[1]][0]
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "simple", family.default_steps)
    assert torch.allclose(inversion.schedule.sigmas(), sigmas.float(), atol=1e-6)
    assert_outputs_finite(result)
    print(f"{name}: {family_name} tiny model, {inversion.schedule.steps} steps, {len(saved)} images in "
          f"{result.seconds:.1f} s")
