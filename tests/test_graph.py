"""The four nodes as a graph through the host's own execution engine (validation, caching, inference mode)."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from nulltext_p2p.host.compat import new_prompt_executor
from helpers import ServerStub, edit_graph, make_test_image

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def engine(host, checkpoint_dir, tmp_path_factory):
    import execution
    import folder_paths
    import nodes
    from PIL import Image

    from nulltext_p2p.runner.comfy_host import init_nodes, setup_host

    # load core + extra nodes and register the pack already imported here (no second copy of its classes)
    asyncio.run(init_nodes(setup_host(host.path, cpu=True)))
    for node_id in ("NTP_DDIMInvert", "NTP_NullTextOptimize", "NTP_AttentionController", "NTP_EditedSample"):
        assert node_id in nodes.NODE_CLASS_MAPPINGS
    io_dir = tmp_path_factory.mktemp("graph_io")
    folder_paths.set_input_directory(str(io_dir / "input"))
    folder_paths.set_output_directory(str(io_dir / "output"))
    os.makedirs(io_dir / "input", exist_ok=True)
    img = (make_test_image(128, 128)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(img).save(io_dir / "input" / "photo.png")
    return execution, io_dir


def prompt(ckpt: str, target: str = "a tiger sitting on a table") -> dict:
    return edit_graph({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}, target=target)


def run(execution, api_prompt: dict):
    valid = asyncio.run(execution.validate_prompt("test", api_prompt, None))
    assert valid[0], f"validation failed: {valid[1]} {valid[3]}"
    server = ServerStub()
    executor = new_prompt_executor(execution, server)
    executor.execute(api_prompt, "test-prompt", {}, valid[2])
    return executor, server


def test_four_nodes_run_as_a_graph(engine, tiny_checkpoint_name):
    execution, io_dir = engine
    executor, server = run(execution, prompt(tiny_checkpoint_name))
    events = [e for e, _ in server.messages] + [e for e, _ in executor.status_messages]
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success, errors
    images = executor.history_result["outputs"]["11"]["images"]
    assert len(images) == 2  # [reconstruction, edit]
    from PIL import Image

    for item in images:
        im = np.asarray(Image.open(io_dir / "output" / item.get("subfolder", "") / item["filename"]))
        assert im.shape == (128, 128, 3) and np.isfinite(im).all()
    assert "execution_success" in events


def test_bad_input_fails_with_node_named_message(engine, tiny_checkpoint_name):
    execution, io_dir = engine
    executor, server = run(execution, prompt(tiny_checkpoint_name, target="a big tiger sitting on a table"))
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert not executor.success and errors
    msg = errors[0]["exception_message"]
    assert "Attention Controller" in msg and "target_prompts" in msg and "refine" in msg


def test_second_edit_reuses_the_inversion_and_nothing_stale(engine, tiny_checkpoint_name):
    """Invert once, edit many: a new target re-runs only the controller and the edit, with fresh results."""
    from PIL import Image

    execution, io_dir = engine
    executor = new_prompt_executor(execution, ServerStub())

    def run_on(target: str):
        api = prompt(tiny_checkpoint_name, target=target)
        api["8"]["inputs"]["reweight"] = ""
        api["8"]["inputs"]["blend_words"] = ""
        valid = asyncio.run(execution.validate_prompt("t", api, None))
        assert valid[0], valid[1]
        executor.execute(api, f"p-{target}", {}, valid[2])
        assert executor.success
        cached = next(d["nodes"] for e, d in executor.status_messages if e == "execution_cached")
        images = [np.asarray(Image.open(io_dir / "output" / i.get("subfolder", "") / i["filename"])).astype(np.int16)
                  for i in executor.history_result["outputs"]["11"]["images"]]
        return cached, images

    _, first = run_on("a tiger sitting on a table")
    cached, second = run_on("a dog sitting on a table")
    assert {"6", "7"} <= set(cached)  # inversion and null-text optimisation were not run again
    assert "8" not in cached and "9" not in cached
    assert np.abs(first[0] - second[0]).max() <= 1  # the same reconstruction (PNG rounding)
    assert np.abs(first[1] - second[1]).max() > 10  # a new edit, not a stale one
