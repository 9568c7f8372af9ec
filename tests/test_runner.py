"""The headless runner: UI-format -> API conversion, overrides and their error messages, finding the host, the CLI.

Most tests are pure (node definitions written out here in the ``/object_info`` format); the ones at the end use
the host's own definitions and its validation/execution (marked ``host``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nulltext_p2p.runner.convert import map_widget_values, node_inputs, workflow_to_prompt
from nulltext_p2p.runner.errors import ConversionError, HostNotFoundError, OverrideError, UsageError
from nulltext_p2p.runner.overrides import apply_overrides, apply_sets, coerce_value, find_nodes, parse_set

REPO_ROOT = Path(__file__).resolve().parent.parent
WORD_SWAP = REPO_ROOT / "example_workflows" / "word_swap.json"

# ----------------------------------------------------------------------------------------------------------------
# A small world: node definitions as GET /object_info gives them (V1 lists and V3 "COMBO" both appear)
# ----------------------------------------------------------------------------------------------------------------
DEFS = {
    "LoadImage": {"input": {"required": {"image": [["example.png", "cat.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "display_name": "Load Image"},
    "LoadImageMask": {"input": {"required": {"image": [["example.png", "mask.png"], {"image_upload": True}],
                                             "channel": [["alpha", "red", "green", "blue"]]}},
                      "input_order": {"required": ["image", "channel"]}, "output": ["MASK"],
                      "display_name": "Load Image (as Mask)"},
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
                               "output": ["MODEL", "CLIP", "VAE"], "display_name": "Load Checkpoint"},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}},
                       "input_order": {"required": ["text", "clip"]}, "output": ["CONDITIONING"],
                       "display_name": "CLIP Text Encode (Prompt)"},
    "KSampler": {"input": {"required": {
        "model": ["MODEL"], "seed": ["INT", {"default": 0, "min": 0, "max": 2 ** 64 - 1, "control_after_generate": True}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000}], "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}],
        "sampler_name": [["euler", "ddim"]], "positive": ["CONDITIONING"], "negative": ["CONDITIONING"],
        "latent_image": ["LATENT"], "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}]}},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "positive", "negative",
                                     "latent_image", "denoise"]},
        "output": ["LATENT"], "display_name": "KSampler"},
    "VAEEncode": {"input": {"required": {"pixels": ["IMAGE"], "vae": ["VAE"]}}, "output": ["LATENT"],
                  "display_name": "VAE Encode"},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}, "output": ["IMAGE"], "display_name": "Invert Image"},
    "Toggle": {"input": {"required": {"flag": ["BOOLEAN", {"default": False}]},
                         "optional": {"mode": ["COMBO", {"options": ["a", "b"], "default": "a"}],
                                      "hint": ["STRING", {"forceInput": True}]}},
               "input_order": {"required": ["flag"], "optional": ["mode", "hint"]}, "output": ["STRING"],
               "display_name": "Toggle"},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                            "hidden": {"prompt": "PROMPT"}},
                  "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt"]}, "output": [],
                  "output_node": True, "display_name": "Save Image"},
}


def node(nid, type_, widgets=(), inputs=(), outputs=(), mode=0, title=None):
    n = {"id": nid, "type": type_, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0, "mode": mode,
         "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {},
         "widgets_values": list(widgets)}
    if title:
        n["title"] = title
    return n


def small_workflow() -> dict:
    """Load Image -> (bypassed Invert Image) -> Reroute -> VAE Encode -> KSampler; prompt text from a PrimitiveNode;
    a Note, a muted Save Image, and a Save Image fed by the live path."""
    nodes = [
        node(1, "Note", ["explains things"]),
        node(2, "LoadImage", ["cat.png", "image"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                                                         {"name": "MASK", "type": "MASK", "links": None}]),
        node(3, "ImageInvert", [], inputs=[{"name": "image", "type": "IMAGE", "link": 1}],
             outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [2]}], mode=4),
        node(4, "Reroute", [], inputs=[{"name": "", "type": "*", "link": 2}],
             outputs=[{"name": "", "type": "IMAGE", "links": [3, 10]}]),
        node(5, "CheckpointLoaderSimple", ["b.safetensors"], title="Model",
             outputs=[{"name": "MODEL", "type": "MODEL", "links": [4]}, {"name": "CLIP", "type": "CLIP", "links": [5]},
                      {"name": "VAE", "type": "VAE", "links": [6]}]),
        node(6, "VAEEncode", [], inputs=[{"name": "pixels", "type": "IMAGE", "link": 3},
                                         {"name": "vae", "type": "VAE", "link": 6}],
             outputs=[{"name": "LATENT", "type": "LATENT", "links": [7]}]),
        node(7, "PrimitiveNode", ["a photo of a cat"], outputs=[{"name": "STRING", "type": "STRING", "links": [8],
                                                                 "widget": {"name": "text"}}]),
        node(8, "CLIPTextEncode", ["stale text"], title="Positive",
             inputs=[{"name": "clip", "type": "CLIP", "link": 5},
                     {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 8}],
             outputs=[{"name": "CONDITIONING", "type": "CONDITIONING", "links": [9, 11]}]),
        node(9, "KSampler", [123, "randomize", 30, 7.5, "ddim", 0.6], title="Sampler",
             inputs=[{"name": "model", "type": "MODEL", "link": 4}, {"name": "positive", "type": "CONDITIONING", "link": 9},
                     {"name": "negative", "type": "CONDITIONING", "link": 11},
                     {"name": "latent_image", "type": "LATENT", "link": 7}],
             outputs=[{"name": "LATENT", "type": "LATENT", "links": None}]),
        node(10, "SaveImage", ["muted"], inputs=[{"name": "images", "type": "IMAGE", "link": None}], mode=2),
        node(11, "SaveImage", ["kept"], inputs=[{"name": "images", "type": "IMAGE", "link": 10}]),
    ]
    links = [[1, 2, 0, 3, 0, "IMAGE"], [2, 3, 0, 4, 0, "IMAGE"], [3, 4, 0, 6, 0, "IMAGE"], [4, 5, 0, 9, 0, "MODEL"],
             [5, 5, 1, 8, 0, "CLIP"], [6, 5, 2, 6, 1, "VAE"], [7, 6, 0, 9, 3, "LATENT"], [8, 7, 0, 8, 1, "STRING"],
             [9, 8, 0, 9, 1, "CONDITIONING"], [10, 4, 0, 11, 0, "IMAGE"], [11, 8, 0, 9, 2, "CONDITIONING"]]
    return {"last_node_id": 11, "last_link_id": 11, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------
def test_convert_small_workflow():
    prompt = workflow_to_prompt(small_workflow(), DEFS)
    assert prompt == {
        "2": {"inputs": {"image": "cat.png"}, "class_type": "LoadImage", "_meta": {"title": "Load Image"}},
        "5": {"inputs": {"ckpt_name": "b.safetensors"}, "class_type": "CheckpointLoaderSimple", "_meta": {"title": "Model"}},
        "6": {"inputs": {"pixels": ["2", 0], "vae": ["5", 2]}, "class_type": "VAEEncode", "_meta": {"title": "VAE Encode"}},
        "8": {"inputs": {"text": "a photo of a cat", "clip": ["5", 1]}, "class_type": "CLIPTextEncode",
              "_meta": {"title": "Positive"}},
        "9": {"inputs": {"seed": 123, "steps": 30, "cfg": 7.5, "sampler_name": "ddim", "denoise": 0.6, "model": ["5", 0],
                         "positive": ["8", 0], "negative": ["8", 0], "latent_image": ["6", 0]},
              "class_type": "KSampler", "_meta": {"title": "Sampler"}},
        "11": {"inputs": {"filename_prefix": "kept", "images": ["2", 0]}, "class_type": "SaveImage",
               "_meta": {"title": "Save Image"}},
    }


def test_widget_values_map_by_input_order_with_defaults_and_forced_inputs():
    info = DEFS["Toggle"]
    assert [s.name for s in node_inputs(info) if s.is_widget] == ["flag", "mode"]  # forceInput is a socket
    assert map_widget_values([True, "b"], info) == {"flag": True, "mode": "b"}
    assert map_widget_values([True], info) == {"flag": True, "mode": "a"}  # a widget added later: its default
    assert map_widget_values({"mode": "b", "other": 1}, info) == {"mode": "b"}
    # a seed without its control value (older saves) still maps
    assert map_widget_values([5, 10, 2.0, "euler", 1.0], DEFS["KSampler"])["denoise"] == 1.0


def test_upload_button_value_follows_the_last_required_input():
    """The editor appends the upload button to the required inputs: Load Image (as Mask) saves [image, channel,
    "image"]; Load Image [image, "image"]."""
    assert map_widget_values(["mask.png", "red", "image"], DEFS["LoadImageMask"]) == {"image": "mask.png",
                                                                                      "channel": "red"}
    assert map_widget_values(["mask.png", "red"], DEFS["LoadImageMask"]) == {"image": "mask.png", "channel": "red"}
    assert map_widget_values(["cat.png", "image"], DEFS["LoadImage"]) == {"image": "cat.png"}


def test_image_and_mask_overrides_pick_their_loaders():
    from nulltext_p2p.runner.overrides import apply_overrides

    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
              "2": {"class_type": "LoadImageMask", "inputs": {"image": "example.png", "channel": "red"}}}
    out = apply_overrides(copy.deepcopy(prompt), DEFS, image_name="photo.png")
    assert out["1"]["inputs"]["image"] == "photo.png" and out["2"]["inputs"]["image"] == "example.png"
    out = apply_overrides(copy.deepcopy(prompt), DEFS, image_name="photo.png", mask_name="m.png")
    assert out["1"]["inputs"]["image"] == "photo.png" and out["2"]["inputs"]["image"] == "m.png"
    with pytest.raises(OverrideError, match="--mask: the workflow has no Load Image \\(as Mask\\) node"):
        apply_overrides({"1": prompt["1"]}, DEFS, mask_name="m.png")


def test_too_many_widget_values_is_an_error():
    wf = small_workflow()
    wf["nodes"][8]["widgets_values"].append("extra")
    with pytest.raises(ConversionError, match=r"node #9 \(KSampler, 'Sampler'\): the workflow holds 7 widget values"):
        workflow_to_prompt(wf, DEFS)


def test_unknown_node_type_names_the_node():
    wf = small_workflow()
    wf["nodes"][5]["type"] = "FancyEncoder"
    with pytest.raises(ConversionError) as e:
        workflow_to_prompt(wf, DEFS)
    assert "unknown node type(s)" in str(e.value) and "node #6 (FancyEncoder)" in str(e.value)
    assert "custom node pack" in str(e.value)


def test_broken_link_and_subgraph_and_api_format():
    wf = small_workflow()
    wf["links"] = [link for link in wf["links"] if link[0] != 6]
    with pytest.raises(ConversionError, match=r"node #6 \(VAEEncode\) input 'vae': link 6 is missing"):
        workflow_to_prompt(wf, DEFS)
    wf = small_workflow()
    wf["definitions"] = {"subgraphs": [{"id": "0b6e-sub"}]}
    wf["nodes"].append(node(12, "0b6e-sub"))
    with pytest.raises(ConversionError, match="subgraph"):
        workflow_to_prompt(wf, DEFS)
    with pytest.raises(ConversionError, match="Export \\(API\\)"):
        workflow_to_prompt({"1": {"class_type": "LoadImage", "inputs": {}}}, DEFS)


def test_links_as_objects_are_read_too():
    wf = small_workflow()
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    wf["links"] = [dict(zip(keys, link)) for link in wf["links"]]
    assert workflow_to_prompt(wf, DEFS) == workflow_to_prompt(small_workflow(), DEFS)


# ----------------------------------------------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def prompt():
    return workflow_to_prompt(small_workflow(), DEFS)


def test_set_by_title_type_id_and_display_name(prompt):
    apply_sets(prompt, DEFS, ["Sampler.steps=12", "KSampler.cfg=3.5", "#9.sampler_name=euler", "9.denoise=1",
                              "Load Checkpoint.ckpt_name=a.safetensors", "sampler.seed=7"])
    inputs = prompt["9"]["inputs"]
    assert (inputs["steps"], inputs["cfg"], inputs["sampler_name"], inputs["denoise"], inputs["seed"]) == \
        (12, 3.5, "euler", 1.0, 7)
    assert inputs["model"] == ["5", 0]  # links untouched
    assert prompt["5"]["inputs"]["ckpt_name"] == "a.safetensors"
    assert isinstance(prompt["9"]["inputs"]["steps"], int) and isinstance(prompt["9"]["inputs"]["denoise"], float)


def test_set_values_with_dots_equals_and_new_lines(prompt):
    apply_sets(prompt, DEFS, ["Save Image.filename_prefix=out/v1.5=a"])
    assert prompt["11"]["inputs"]["filename_prefix"] == "out/v1.5=a"
    from nulltext_p2p.runner.convert import InputSpec

    multiline = InputSpec("text", "required", "STRING", {"multiline": True})
    assert coerce_value(multiline, "a tiger\\na dog", "x") == "a tiger\na dog"
    assert parse_set("Attention Controller (word swaps).target_prompts=a=b") == \
        ("Attention Controller (word swaps)", "target_prompts", "a=b")


def test_unknown_node_lists_the_nodes(prompt):
    with pytest.raises(OverrideError) as e:
        apply_sets(prompt, DEFS, ["Attention Controller.mode=refine"])
    msg = str(e.value)
    assert "no node is called 'Attention Controller'" in msg
    assert "9: 'Sampler' (KSampler)" in msg and "2: 'Load Image' (LoadImage)" in msg


def test_ambiguous_node_reference(prompt):
    prompt["12"] = copy.deepcopy(prompt["9"])
    with pytest.raises(OverrideError, match=r"'KSampler' matches 2 nodes .*name one by its id"):
        apply_sets(prompt, DEFS, ["KSampler.steps=3"])
    assert find_nodes(prompt, DEFS, "Sampler") == ["9", "12"]


def test_unknown_input_lists_the_settable_inputs(prompt):
    with pytest.raises(OverrideError) as e:
        apply_sets(prompt, DEFS, ["Sampler.stepz=3"])
    assert "node 9 'Sampler' (KSampler) has no input 'stepz'" in str(e.value)
    assert "seed, steps, cfg, sampler_name, denoise" in str(e.value)


@pytest.mark.parametrize("setting, message", [
    ("Sampler.steps=four", "expects an integer (INT), got 'four'"),
    ("Sampler.steps=2.5", "expects an integer (INT), got '2.5'"),
    ("Sampler.steps=0", "0 is below the minimum 1"),
    ("Sampler.cfg=high", "expects a number (FLOAT), got 'high'"),
    ("Sampler.cfg=nan", "expects a finite number (FLOAT)"),
    ("Sampler.denoise=1.5", "1.5 is above the maximum 1.0"),
    ("Sampler.sampler_name=dpm", "'dpm' is not one of the choices: 'euler', 'ddim'"),
    ("Toggle.flag=maybe", "expects true or false (BOOLEAN), got 'maybe'"),
    ("Sampler.model=x", "'model' is a MODEL input (a connection), not a value"),
    ("Sampler.positive=x", "'positive' is a CONDITIONING input (a connection)"),
    ("Sampler.steps=3", "input 'steps' of node 9 'Sampler' is connected to node 5 'Model'; set that node instead"),
])
def test_wrong_values_are_explained(prompt, setting, message):
    prompt["20"] = {"class_type": "Toggle", "inputs": {"flag": False}, "_meta": {"title": "Toggle"}}
    if setting == "Sampler.steps=3":
        prompt["9"]["inputs"]["steps"] = ["5", 0]  # a widget turned into an input and linked
    with pytest.raises(OverrideError) as e:
        apply_sets(prompt, DEFS, [setting])
    assert message in str(e.value)
    assert str(e.value).startswith(f"--set {setting!r}")


@pytest.mark.parametrize("text", ["Sampler.steps", "steps=3", ".steps=3", "Sampler.=3"])
def test_malformed_set(text, prompt):
    with pytest.raises(OverrideError, match="expected NODE.INPUT=VALUE"):
        apply_sets(prompt, DEFS, [text])


def test_booleans_and_image_and_checkpoint(prompt):
    prompt["20"] = {"class_type": "Toggle", "inputs": {"flag": False}, "_meta": {"title": "Toggle"}}
    apply_sets(prompt, DEFS, ["Toggle.flag=yes"])
    assert prompt["20"]["inputs"]["flag"] is True
    apply_overrides(prompt, DEFS, image_name="nulltext_p2p/photo.jpg", checkpoint="a.safetensors",
                    sets=["Load Image.image=elsewhere/x.png"])  # upload combos take any file name
    assert prompt["2"]["inputs"]["image"] == "elsewhere/x.png"
    assert prompt["5"]["inputs"]["ckpt_name"] == "a.safetensors"
    with pytest.raises(OverrideError, match="'c.safetensors' is not among this ComfyUI's checkpoints: 'a.safetensors'"):
        apply_overrides(prompt, DEFS, checkpoint="c.safetensors")
    no_loaders = {k: v for k, v in prompt.items() if v["class_type"] not in ("LoadImage", "CheckpointLoaderSimple")}
    with pytest.raises(OverrideError, match="--image: the workflow has no Load Image node"):
        apply_overrides(no_loaders, DEFS, image_name="x.png")
    with pytest.raises(OverrideError, match="--checkpoint: the workflow has no checkpoint loader"):
        apply_overrides(no_loaders, DEFS, checkpoint="a.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# Files, finding the host, the command line (no host needed: these fail before it is imported)
# ----------------------------------------------------------------------------------------------------------------
def test_load_workflow_errors(tmp_path):
    from nulltext_p2p.runner.app import load_workflow

    with pytest.raises(UsageError, match="workflow .*nope.json: no such file"):
        load_workflow(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(UsageError, match="not valid JSON .* line 1"):
        load_workflow(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(UsageError, match="neither a UI-format workflow"):
        load_workflow(str(bad))


def fake_comfyui(root: Path) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "nodes.py").write_text("")
    (root / "execution.py").write_text("")
    return root


def test_find_comfyui(tmp_path, monkeypatch):
    from nulltext_p2p.runner.comfy_host import find_comfyui

    comfy = fake_comfyui(tmp_path / "ComfyUI")
    pack = comfy / "custom_nodes" / "nulltext-p2p"
    pack.mkdir(parents=True)
    assert find_comfyui(str(comfy), environ={}) == comfy.resolve()
    assert find_comfyui(None, environ={"COMFYUI_PATH": str(comfy)}) == comfy.resolve()
    monkeypatch.delitem(__import__("sys").modules, "folder_paths", raising=False)
    assert find_comfyui(None, environ={}, pack_root=pack) == comfy.resolve()
    with pytest.raises(HostNotFoundError, match="--comfyui .*: not a ComfyUI checkout"):
        find_comfyui(str(tmp_path / "nothing"), environ={})
    with pytest.raises(HostNotFoundError, match="COMFYUI_PATH=.*: not a ComfyUI checkout"):
        find_comfyui(None, environ={"COMFYUI_PATH": str(tmp_path / "nothing")})


def test_cli_missing_files_exit_2(tmp_path, capsys):
    from nulltext_p2p.runner.cli import main

    assert main(["run", str(tmp_path / "missing.json")]) == 2
    assert "error: workflow " in capsys.readouterr().err
    assert main(["run", str(WORD_SWAP), "--image", str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert "error: --image " in err and "missing.png: no such file." in err
    with pytest.raises(SystemExit):
        main(["fly", str(WORD_SWAP)])


def test_python_m_runner_from_the_pack_folder_puts_the_host_first(monkeypatch):
    """`python -m runner` from the pack root has the pack on sys.path; its nodes/ must not shadow the host's."""
    import sys

    from nulltext_p2p.runner import comfy_host as host_module

    monkeypatch.setattr(sys, "path", [str(REPO_ROOT), "", *sys.path])
    monkeypatch.chdir(REPO_ROOT)
    host_module._drop_pack_root_from_sys_path(REPO_ROOT)
    assert str(REPO_ROOT) not in sys.path and "" not in sys.path


# ----------------------------------------------------------------------------------------------------------------
# With the host: its own node definitions, validation and execution errors
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_defs(host):
    from nulltext_p2p.runner.app import prepare_in_process
    from nulltext_p2p.runner.comfy_host import run_sync

    return run_sync(prepare_in_process(str(host.path)))


@pytest.mark.host
def test_the_pack_is_registered_once(host_defs):
    """The runner registers the pack already imported in this process (as ``nulltext_p2p``), not a second copy."""
    import nulltext_p2p.nodes

    host, _ = host_defs
    for cls in nulltext_p2p.nodes.NODES:
        assert host.nodes.NODE_CLASS_MAPPINGS[cls.GET_SCHEMA().node_id] is cls


@pytest.mark.host
def test_word_swap_converts_with_the_hosts_definitions(host_defs):
    host, definitions = host_defs
    prompt = workflow_to_prompt(json.loads(WORD_SWAP.read_text()), definitions)
    by_title = {n["_meta"]["title"]: (nid, n) for nid, n in prompt.items()}
    assert "Note" not in {n["class_type"] for n in prompt.values()}
    _, load = by_title["Load Image (your photo)"]
    assert load["inputs"] == {"image": "nulltext_p2p_example.png"}  # the editor's "upload" widget value is not an input
    caption_id, _ = by_title["Source caption"]
    _, ctrl = by_title["Attention Controller"]
    assert ctrl["class_type"] == "NTP_AttentionController"
    assert ctrl["inputs"]["source_prompt"] == [caption_id, 0]  # a widget fed by a link
    assert {k: v for k, v in ctrl["inputs"].items() if k not in ("clip", "source_prompt")} == {
        "target_prompts": "a tiger sitting on a table", "mode": "replace", "cross_replace": 0.8,
        "self_replace": 0.5, "word_windows": "", "reweight": "", "blend_words": "cat, tiger",
        "blend_threshold": 0.3, "blend_start": 0.2}
    _, sample = by_title["Edited Sample"]
    assert set(sample["inputs"]) == {"model", "inversion", "null_embeddings", "source", "guidance", "target", "control",
                                     "mask_combine"}
    assert sample["inputs"]["mask_combine"] == "intersection"  # a widget added after the file was saved: its default
    # the override reaches the host's types: a multi-line target, a combo, errors for the pack's own node
    apply_sets(prompt, definitions, ["Attention Controller.target_prompts=a dog sitting on a table\\na fox sitting on a table",
                                     "Attention Controller.mode=refine"])
    assert ctrl["inputs"]["target_prompts"] == "a dog sitting on a table\na fox sitting on a table"
    with pytest.raises(OverrideError, match="'swap' is not one of the choices: 'replace', 'refine'"):
        apply_sets(prompt, definitions, ["Attention Controller.mode=swap"])
    with pytest.raises(OverrideError, match="1.5 is above the maximum 1.0"):
        apply_sets(prompt, definitions, ["Attention Controller.cross_replace=1.5"])
    with pytest.raises(OverrideError, match="has no input 'strength'"):
        apply_sets(prompt, definitions, ["DDIM Invert.strength=1"])
    with pytest.raises(OverrideError) as e:  # fed by the caption primitive: point at it
        apply_sets(prompt, definitions, ["Attention Controller.source_prompt=a dog"])
    assert (f"is connected to node {caption_id} 'Source caption'; set that node instead, e.g. "
            '--set "Source caption.value=..."') in str(e.value)


@pytest.mark.host
def test_cli_unknown_node_and_checkpoint_errors(host_defs, capsys):
    from nulltext_p2p.runner.cli import main

    host, _ = host_defs
    assert main(["convert", str(WORD_SWAP), "--comfyui", str(host.path), "--set", "Dog Controller.mode=refine"]) == 2
    err = capsys.readouterr().err
    assert "error: --set 'Dog Controller.mode=refine': no node is called 'Dog Controller'" in err
    assert "'Attention Controller' (NTP_AttentionController)" in err
    assert main(["convert", str(WORD_SWAP), "--comfyui", str(host.path), "--checkpoint", "nope.safetensors"]) == 2
    assert "'nope.safetensors' is not among this ComfyUI's checkpoints" in capsys.readouterr().err
    assert main(["convert", str(WORD_SWAP), "--comfyui", str(host.path), "--checkpoint", "/no/such/model.safetensors"]) == 2
    assert "--checkpoint /no/such/model.safetensors: no such file." in capsys.readouterr().err


@pytest.mark.host
def test_validation_error_is_readable(host_defs, tiny_checkpoint_name, tmp_path, capsys):
    """A required input left unconnected: the host's validation rejects it; exit status 3 and the node named."""
    from nulltext_p2p.runner.cli import main

    host, _ = host_defs
    wf = json.loads(WORD_SWAP.read_text())
    decode = next(n for n in wf["nodes"] if n["type"] == "VAEDecode")
    vae_input = next(i for i in decode["inputs"] if i["name"] == "vae")
    wf["links"] = [link for link in wf["links"] if link[0] != vae_input["link"]]
    vae_input["link"] = None
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(wf))
    code = main(["run", str(path), "--comfyui", str(host.path), "--checkpoint", tiny_checkpoint_name,
                 "--output-dir", str(tmp_path / "out"), "--input-dir", str(tmp_path / "in")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "error: ComfyUI rejected the workflow: Prompt outputs failed validation." in err
    assert f"node {decode['id']} 'VAE Decode' (VAEDecode):" in err and "Required input is missing: vae" in err


@pytest.mark.host
def test_execution_error_names_the_node(host_defs, tiny_checkpoint_name, tmp_path, capsys):
    """A word swap whose target has another number of words fails in the Attention Controller: exit status 4 and
    the node's own message. Few steps, no inner iterations: the cheap part of the graph runs first or not at all."""
    from nulltext_p2p.runner.cli import main

    host, _ = host_defs
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (128, 128), (120, 90, 60)).save(image)
    code = main(["run", str(WORD_SWAP), "--comfyui", str(host.path), "--checkpoint", tiny_checkpoint_name,
                 "--image", str(image), "--output-dir", str(tmp_path / "out"), "--input-dir", str(tmp_path / "in"),
                 "--set", "Resize to 512x512.width=128", "--set", "Resize to 512x512.height=128",
                 "--set", "DDIM Invert.steps=1", "--set", "Null-Text Optimize.inner_steps=0",
                 "--set", "Attention Controller.target_prompts=a big tiger sitting on a table", "-q"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "error: node 11 'Attention Controller' (NTP_AttentionController) failed:" in err
    assert "target_prompts" in err
    assert not list((tmp_path / "out").rglob("*.png"))
