"""Save Inversion / Load Inversion: round trip, editing from a file, refusing bad files and names, atomic writes."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from nulltext_p2p.host.compat import new_prompt_executor
from pipeline import build_pipeline

pytestmark = pytest.mark.host

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    model, clip, source, null, inv, value, final, _ = build_pipeline(tiny_model)
    return model, clip, source, inv, value


@pytest.fixture
def out_dir(host, tmp_path):
    """A fresh host output folder for each test; returns the folder the pack writes to."""
    import folder_paths

    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    yield tmp_path / "output" / "nulltext_p2p"
    folder_paths.set_output_directory(old)


@pytest.fixture(scope="module")
def io_nodes(host):
    from nulltext_p2p.nodes import inversion_io

    for cls, node_id in ((inversion_io.SaveInversion, "NTP_SaveInversion"), (inversion_io.LoadInversion, "NTP_LoadInversion")):
        schema = cls.GET_SCHEMA()
        assert schema.node_id == node_id and schema.category == "nulltext_p2p/io"
    return inversion_io


def save(io_nodes, pipeline, prefix="cat", prompt=SOURCE):
    model, clip, source, inv, value = pipeline
    out = io_nodes.SaveInversion.execute(model, inv, value, prefix, prompt)
    return out


def load(io_nodes, pipeline, name):
    model = pipeline[0]
    with torch.inference_mode():
        return io_nodes.LoadInversion.execute(name, model)


def load_error(io_nodes, pipeline, name) -> str:
    from nulltext_p2p.host.errors import NodeInputError

    with pytest.raises(NodeInputError) as e:
        load(io_nodes, pipeline, name)
    msg = str(e.value)
    print(msg)
    assert msg.startswith("[Null-text P2P: Load Inversion] input 'inversion_file':") and "Fix:" in msg
    # refused at queue time too (header problems) or at run time (tensor problems)
    return msg


def rewrite(src, dst, edit_meta=None, edit_tensors=None):
    """Copy a saved file with changed metadata/tensors (as a tampering user or a broken tool would)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata=meta)


def test_round_trip_gives_identical_values(io_nodes, pipeline, out_dir):
    model, clip, source, inv, value = pipeline
    out = save(io_nodes, pipeline)
    assert os.listdir(out_dir) == ["cat_00001.safetensors"]
    assert "nulltext_p2p/cat_00001.safetensors" in out.ui["text"][0]
    loaded = load(io_nodes, pipeline, "cat_00001.safetensors")
    inv2, null2, source2, prompt2 = loaded.args
    assert torch.equal(inv2.latents, inv.latents) and inv2.latents.dtype == inv.latents.dtype
    assert torch.equal(inv2.source_context, inv.source_context)
    assert inv2.schedule == inv.schedule
    assert (inv2.fingerprint, inv2.source_fingerprint, inv2.model_family) == (inv.fingerprint, inv.source_fingerprint, inv.model_family)
    # the stored fingerprints are also what the values compute from their own tensors
    from nulltext_p2p.core.values import Inversion

    assert Inversion(inv2.latents, inv2.schedule, inv2.source_context).fingerprint == inv.fingerprint
    assert torch.equal(null2.embeddings, value.embeddings)
    assert (null2.inversion_fingerprint, null2.guidance, null2.method) == (value.inversion_fingerprint, value.guidance, value.method)
    assert null2.iterations == value.iterations and null2.losses == value.losses
    assert prompt2 == SOURCE
    assert torch.equal(source2[0][0], inv.source_context)
    text = loaded.ui["text"][0]
    print(text)
    assert "10 steps, 128x128 px" in text and "WARNING" not in text
    # a second save gets the next counter
    save(io_nodes, pipeline)
    assert sorted(os.listdir(out_dir)) == ["cat_00001.safetensors", "cat_00002.safetensors"]


def test_file_format(io_nodes, pipeline, out_dir):
    from safetensors import safe_open

    model, clip, source, inv, value = pipeline
    save(io_nodes, pipeline, prompt="")
    with safe_open(str(out_dir / "cat_00001.safetensors"), "pt") as f:
        meta = f.metadata()
        shapes = {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    assert meta["format"] == "nulltext_p2p.inversion" and meta["format_version"] == "1"
    assert meta["model_fingerprint"] == io_nodes.model_fingerprint(model) and meta["model_config"] == "SD15"
    assert json.loads(meta["latent_shape"]) == [1, 4, 16, 16]
    assert (meta["image_width"], meta["image_height"], meta["steps"], meta["source_prompt"]) == ("128", "128", "10", "")
    assert shapes == {
        "inversion.latents": ([11, 1, 4, 16, 16], "F32"), "inversion.source_context": ([1, 77, 768], "F32"),
        "schedule.timesteps": ([10], "I64"), "schedule.alphas_cumprod": ([10], "F64"), "schedule.final_alpha": ([1], "F64"),
        "null.embeddings": ([10, 1, 77, 768], "F32"), "null.iterations": ([10], "I64"), "null.losses": ([10], "F64"),
    }


def test_editing_from_loaded_values_is_identical(io_nodes, pipeline, out_dir):
    from nulltext_p2p.nodes.attention_controller import build_control
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, inv, value = pipeline
    save(io_nodes, pipeline)
    inv2, null2, source2, _ = load(io_nodes, pipeline, "cat_00001.safetensors").args
    control, src_cond, tgt_cond = build_control(clip, SOURCE, TARGET, mode="replace", cross_replace=0.8,
                                                self_replace=0.5, word_windows="", reweight="",
                                                blend_words="cat, tiger", blend_threshold=0.3, blend_start=0.2)
    with torch.inference_mode():
        live, _ = run_edit(model, inv, value, source, tgt_cond, control, 7.5, preview=False)
        # loaded inversion, null embeddings and the loaded 'source' CONDITIONING output
        from_file, _ = run_edit(model, inv2, null2, source2, tgt_cond, control, 7.5, preview=False)
    assert live.shape == (2, 4, 16, 16)
    assert torch.equal(live, from_file)


def test_truncated_files_are_refused(io_nodes, pipeline, out_dir):
    save(io_nodes, pipeline)
    data = (out_dir / "cat_00001.safetensors").read_bytes()
    (out_dir / "cut_data.safetensors").write_bytes(data[: len(data) - 4096])
    (out_dir / "cut_header.safetensors").write_bytes(data[:100])
    for name in ("cut_data.safetensors", "cut_header.safetensors"):
        msg = load_error(io_nodes, pipeline, name)
        assert name in msg and "truncated or damaged" in msg and "Save Inversion" in msg
        assert io_nodes.LoadInversion.validate_inputs(name) == msg


def test_newer_and_unknown_formats_are_refused(io_nodes, pipeline, out_dir):
    save(io_nodes, pipeline)
    src = out_dir / "cat_00001.safetensors"
    newer = str(io_nodes.serialization.FORMAT_VERSION + 1)  # 3: version 2 is this pack's flow-schedule format
    rewrite(src, out_dir / "v2.safetensors", edit_meta=lambda m: m.update(format_version=newer))
    rewrite(src, out_dir / "vx.safetensors", edit_meta=lambda m: m.update(format_version="one"))
    rewrite(src, out_dir / "other.safetensors", edit_meta=lambda m: m.update(format="somebody.else"))
    msg = load_error(io_nodes, pipeline, "v2.safetensors")
    assert f"format version {newer}" in msg and "newer" in msg and "update the nulltext-p2p node pack" in msg
    assert io_nodes.LoadInversion.validate_inputs("v2.safetensors") == msg
    assert "unknown format version 'one'" in load_error(io_nodes, pipeline, "vx.safetensors")
    assert "not a nulltext-p2p inversion" in load_error(io_nodes, pipeline, "other.safetensors")
    # a plain safetensors file without our metadata (e.g. a LoRA dropped in the folder)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(out_dir / "lora.safetensors"))
    assert "not a nulltext-p2p inversion (no format tag" in load_error(io_nodes, pipeline, "lora.safetensors")


def test_tampered_shapes_and_values_are_refused(io_nodes, pipeline, out_dir):
    save(io_nodes, pipeline)
    src = out_dir / "cat_00001.safetensors"

    def meta_shape(m):
        t = json.loads(m["tensors"])
        t["null.embeddings"]["shape"] = [9, 1, 77, 768]
        m["tensors"] = json.dumps(t)

    def drop_step(t):
        t["null.embeddings"] = t["null.embeddings"][:9].clone()

    def nudge(t):
        t["inversion.latents"] = t["inversion.latents"].clone()
        t["inversion.latents"][3, 0, 0, 0, 0] += 1e-3

    def dtype(t):
        t["inversion.latents"] = t["inversion.latents"].half()

    rewrite(src, out_dir / "meta_shape.safetensors", edit_meta=meta_shape)
    rewrite(src, out_dir / "short.safetensors", edit_tensors=drop_step)
    rewrite(src, out_dir / "nudged.safetensors", edit_tensors=nudge)
    rewrite(src, out_dir / "half.safetensors", edit_tensors=dtype)
    rewrite(src, out_dir / "no_steps.safetensors", edit_meta=lambda m: m.pop("steps"))
    rewrite(src, out_dir / "steps.safetensors", edit_meta=lambda m: m.update(steps="9"))
    expect = {
        "meta_shape.safetensors": "tensor 'null.embeddings' is [10, 1, 77, 768] torch.float32, but the metadata says [9, 1, 77, 768] float32",
        "short.safetensors": "tensor 'null.embeddings' is [9, 1, 77, 768] torch.float32, but the metadata says [10, 1, 77, 768] float32",
        "nudged.safetensors": "tensor 'inversion.latents' does not match its checksum",
        "half.safetensors": "tensor 'inversion.latents' is [11, 1, 4, 16, 16] torch.float16",
        "no_steps.safetensors": "metadata ['steps'] is missing",
        "steps.safetensors": "11 trajectory latents for 9 steps",
    }
    for name, text in expect.items():
        msg = load_error(io_nodes, pipeline, name)
        assert "damaged or was modified" in msg and text in msg, (name, msg)
        assert io_nodes.LoadInversion.validate_inputs(name) is True  # header fine: refused when run


@pytest.mark.parametrize("bad", ["../escape", "sub/name", "sub\\name", "/tmp/abs", "..", "C:evil", ".hidden", "a\x00b", " "])
def test_unsafe_names_are_refused(io_nodes, pipeline, out_dir, bad):
    from nulltext_p2p.host.errors import NodeInputError

    with pytest.raises(NodeInputError) as e:
        save(io_nodes, pipeline, prefix=bad)
    msg = str(e.value)
    print(msg)
    assert msg.startswith("[Null-text P2P: Save Inversion] input 'filename_prefix':") and "Fix:" in msg
    assert not out_dir.exists() or os.listdir(out_dir) == []
    assert not os.path.exists("/tmp/abs_00001.safetensors")
    res = io_nodes.LoadInversion.validate_inputs(bad + ".safetensors")
    assert isinstance(res, str) and res.startswith("[Null-text P2P: Load Inversion] input 'inversion_file':")
    assert "[Null-text P2P: Load Inversion] input 'inversion_file':" in load_error(io_nodes, pipeline, bad + ".safetensors")


def test_write_is_atomic(io_nodes, pipeline, out_dir, monkeypatch):
    import safetensors.torch

    import comfy.model_management

    save(io_nodes, pipeline)
    assert os.listdir(out_dir) == ["cat_00001.safetensors"]  # no temporary file left
    real = safetensors.torch.save_file
    seen = []

    def cancelled_midway(tensors, path, metadata=None):
        seen.append(os.path.basename(path))
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:  # half-written, then Cancel
            f.truncate(os.path.getsize(path) // 2)
        raise comfy.model_management.InterruptProcessingException()

    monkeypatch.setattr(safetensors.torch, "save_file", cancelled_midway)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        save(io_nodes, pipeline)
    assert seen and seen[0].startswith(".ntp-") and seen[0].endswith(".tmp")  # written beside, not in place
    assert os.listdir(out_dir) == ["cat_00001.safetensors"]
    monkeypatch.undo()
    load(io_nodes, pipeline, "cat_00001.safetensors")


def test_loader_lists_files_and_rehashes_changed_files(io_nodes, pipeline, out_dir):
    assert io_nodes.LoadInversion.define_schema().inputs[0].options == []
    save(io_nodes, pipeline, prefix="a")
    save(io_nodes, pipeline, prefix="b")
    (out_dir / ".ntp-leftover.tmp").write_bytes(b"x")
    (out_dir / "notes.txt").write_text("x")
    assert io_nodes.LoadInversion.define_schema().inputs[0].options == ["a_00001.safetensors", "b_00001.safetensors"]
    assert io_nodes.LoadInversion.validate_inputs("a_00001.safetensors") is True
    fp = io_nodes.LoadInversion.fingerprint_inputs("a_00001.safetensors", model=None)
    assert fp == io_nodes.LoadInversion.fingerprint_inputs("a_00001.safetensors", model=None)
    rewrite(out_dir / "a_00001.safetensors", out_dir / "a_00001.safetensors", edit_meta=lambda m: m.update(source_prompt="changed"))
    fp2 = io_nodes.LoadInversion.fingerprint_inputs("a_00001.safetensors", model=None)
    assert fp2 != fp
    assert load(io_nodes, pipeline, "a_00001.safetensors").args[3] == "changed"
    msg = io_nodes.LoadInversion.validate_inputs("gone.safetensors")
    assert "'gone.safetensors' is not in" in msg and "Fix:" in msg


def test_model_mismatch_warns(io_nodes, pipeline, out_dir, caplog):
    from nulltext_p2p.core import serialization

    model, clip, source, inv, value = pipeline
    fp = io_nodes.model_fingerprint(model)
    assert fp == io_nodes.model_fingerprint(model.clone())
    # another model: change one fingerprinted weight (and put it back)
    w = model.model.diffusion_model.out[2].weight
    keep = w.detach().clone()
    with torch.no_grad():
        w.add_(0.01)
    try:
        other = io_nodes.model_fingerprint(model)
    finally:
        with torch.no_grad():
            w.copy_(keep)
    assert other != fp and io_nodes.model_fingerprint(model) == fp
    # a file made with that other model
    out_dir.mkdir(parents=True)
    tensors, meta = serialization.to_state(inv, value, model_fingerprint=other, model_config="SD15")
    io_nodes.write_atomic(tensors, meta, str(out_dir / "other_model.safetensors"))
    with caplog.at_level(logging.WARNING):
        out = load(io_nodes, pipeline, "other_model.safetensors")
    text = out.ui["text"][0]
    print(text)
    assert "WARNING: the file was made with another model" in text and other in text and fp in text
    assert any("another model" in r.getMessage() and "Load Inversion" in r.getMessage() for r in caplog.records)
    assert torch.equal(out.args[0].latents, inv.latents)  # still loads


def test_context_size_mismatch_warns(io_nodes, pipeline, out_dir, caplog):
    from nulltext_p2p.core import serialization
    from nulltext_p2p.core.values import Inversion, NullEmbeddings

    model, clip, source, inv, value = pipeline
    inv_big = Inversion(inv.latents, inv.schedule, torch.zeros(1, 77, 1024))
    null_big = NullEmbeddings(torch.zeros(10, 1, 77, 1024), inv_big.fingerprint, 7.5)
    out_dir.mkdir(parents=True)
    tensors, meta = serialization.to_state(inv_big, null_big, model_fingerprint=io_nodes.model_fingerprint(model), model_config="SD15")
    io_nodes.write_atomic(tensors, meta, str(out_dir / "sd2.safetensors"))
    with caplog.at_level(logging.WARNING):
        text = load(io_nodes, pipeline, "sd2.safetensors").ui["text"][0]
    assert "1024 dimensions but this MODEL expects 768" in text
    assert any("1024 dimensions" in r.getMessage() for r in caplog.records)


def test_save_refuses_mismatched_null_embeddings(io_nodes, pipeline, out_dir):
    from nulltext_p2p.core.values import NullEmbeddings
    from nulltext_p2p.host.errors import NodeInputError

    model, clip, source, inv, value = pipeline
    stray = NullEmbeddings(value.embeddings, "0123456789abcdef", 7.5)
    with pytest.raises(NodeInputError) as e:
        io_nodes.SaveInversion.execute(model, inv, stray, "cat", "")
    assert "[Null-text P2P: Save Inversion] input 'null_embeddings'" in str(e.value)
    assert not out_dir.exists() or os.listdir(out_dir) == []


def test_save_load_check_through_the_host_executor(io_nodes, tiny_model, checkpoint_dir, tiny_checkpoint_name, out_dir, tmp_path):
    """The three nodes as graphs in the host's engine: invert + save, then load + edit + decode + check."""
    import asyncio

    import execution
    import folder_paths
    import nodes
    import numpy as np
    from PIL import Image

    from helpers import ServerStub, make_test_image
    from nulltext_p2p.nodes import NODES
    from nulltext_p2p.nodes.reconstruction_check import ReconstructionCheck

    for cls in [*NODES, io_nodes.SaveInversion, io_nodes.LoadInversion, ReconstructionCheck]:
        nodes.NODE_CLASS_MAPPINGS[cls.GET_SCHEMA().node_id] = cls
    old_input = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    os.makedirs(tmp_path / "input")
    Image.fromarray((make_test_image(64, 64)[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "input" / "photo.png")

    def run(api):
        valid = asyncio.run(execution.validate_prompt("t", api, None))
        assert valid[0], f"{valid[1]} {valid[3]}"
        ex = new_prompt_executor(execution, ServerStub())
        ex.execute(api, "p", {}, valid[2])
        assert ex.success, [d for e, d in ex.status_messages if e == "execution_error"]
        return ex

    src = "a cat sitting on a table"
    base = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": src, "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    }
    try:
        first = dict(base, **{
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
            "6": {"class_type": "NTP_DDIMInvert", "inputs": {"model": ["1", 0], "source": ["2", 0], "latent": ["5", 0], "steps": 3}},
            "7": {"class_type": "NTP_NullTextOptimize", "inputs": {"model": ["1", 0], "source": ["2", 0], "null": ["3", 0],
                                                               "inversion": ["6", 0], "guidance": 7.5, "inner_steps": 2, "epsilon": 1e-5}},
            "8": {"class_type": "NTP_SaveInversion", "inputs": {"model": ["1", 0], "inversion": ["6", 0], "null_embeddings": ["7", 0],
                                                            "filename_prefix": "graph", "source_prompt": src}},
        })
        ex = run(first)
        assert "graph_00001.safetensors" in ex.history_result["outputs"]["8"]["text"][0]
        second = dict(base, **{
            "9": {"class_type": "NTP_LoadInversion", "inputs": {"inversion_file": "graph_00001.safetensors", "model": ["1", 0]}},
            "10": {"class_type": "NTP_EditedSample", "inputs": {"model": ["1", 0], "inversion": ["9", 0], "null_embeddings": ["9", 1],
                                                             "source": ["9", 2], "guidance": 7.5}},
            "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
            "12": {"class_type": "NTP_ReconstructionCheck", "inputs": {"source": ["4", 0], "reconstruction": ["11", 0]}},
        })
        ex = run(second)
        outputs = ex.history_result["outputs"]
        print(outputs["12"]["text"][0])
        assert outputs["12"]["text"][0].startswith("reconstruction: PSNR")
        assert "3 steps, 64x64 px" in outputs["9"]["text"][0] and src in outputs["9"]["text"][0]
        # a file name the list does not hold is refused at validation with the node's message
        bad = dict(second)
        bad["9"] = {"class_type": "NTP_LoadInversion", "inputs": {"inversion_file": "../x.safetensors", "model": ["1", 0]}}
        valid = asyncio.run(execution.validate_prompt("t", bad, None))
        assert not valid[0] and "path separator" in json.dumps(valid[3])
    finally:
        folder_paths.set_input_directory(old_input)


def test_model_fingerprint_ignores_weight_patches(io_nodes, tiny_model):
    """LoRA-style weight patches applied in place on load do not change the fingerprint (base weights hashed)."""
    import comfy.model_management

    model = tiny_model[0]
    fp = io_nodes.model_fingerprint(model)
    original = model.model.diffusion_model.out[2].weight.detach().clone()
    patched = model.clone()
    key = "diffusion_model.out.2.weight"
    patched.add_patches({key: (torch.ones_like(model.model.diffusion_model.out[2].weight),)}, 0.5)
    try:
        comfy.model_management.load_models_gpu([patched])
        assert key in patched.backup  # the weight really is patched in place now
        assert not torch.equal(model.model.diffusion_model.out[2].weight, original)
        assert io_nodes.model_fingerprint(patched) == fp
    finally:
        patched.unpatch_model()
        comfy.model_management.load_models_gpu([model])
    assert torch.equal(model.model.diffusion_model.out[2].weight, original)  # the shared model is back
    assert io_nodes.model_fingerprint(model) == fp


def test_direct_inversion_offsets_round_trip():
    """Direct Inversion's per-step latent offsets are kept; without them the key is absent."""
    from nulltext_p2p.core.schedule import DDIMSchedule
    from nulltext_p2p.core.serialization import from_state, to_state
    from nulltext_p2p.core.values import Inversion, NullEmbeddings

    sched = DDIMSchedule.from_alphas_cumprod(torch.linspace(0.999, 0.01, 1000, dtype=torch.float64), 4)
    inv = Inversion(latents=torch.randn(5, 1, 4, 8, 8), schedule=sched, source_context=torch.randn(1, 77, 768))
    offsets = torch.randn(4, 1, 4, 8, 8)
    null = NullEmbeddings(embeddings=torch.randn(4, 1, 77, 768), inversion_fingerprint=inv.fingerprint, guidance=7.5,
                          method="direct-inversion", latent_offsets=offsets)
    tensors, meta = to_state(inv, null)
    assert torch.equal(from_state(tensors, meta).null.latent_offsets, offsets)
    tensors["null.latent_offsets"] = torch.randn(3, 1, 4, 8, 8)
    with pytest.raises(ValueError):
        from_state(tensors, meta)
    null.latent_offsets = None
    tensors, meta = to_state(inv, null)
    assert "null.latent_offsets" not in tensors and from_state(tensors, meta).null.latent_offsets is None


def test_huge_size_claims_are_refused_without_allocating(io_nodes, out_dir):
    """A header that claims a 4 TB tensor (valid format metadata, 8 data bytes) is refused with a clear message."""
    import struct

    from nulltext_p2p.core import serialization
    from nulltext_p2p.host.errors import NodeInputError

    header = {
        "__metadata__": {"format": serialization.FORMAT, "format_version": str(serialization.FORMAT_VERSION)},
        "inversion.latents": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4 * 10 ** 12]},
    }
    raw = json.dumps(header).encode()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "huge.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(NodeInputError) as e:
        io_nodes.read_inversion_file(path)
    assert "input 'inversion_file'" in str(e.value) and "huge.safetensors" in str(e.value) and "Fix:" in str(e.value)
