"""The runner loads every node module the host's own server would load.

ComfyUI's main.py creates ``server.PromptServer`` (which sets ``PromptServer.instance``) before
``nodes.init_extra_nodes``; node modules use it while they load: ComfyUI 0.33's comfy_extras/nodes_replacements.py
registers node replacements on ``PromptServer.instance.node_replace_manager``, custom nodes add HTTP routes and
on_prompt handlers. The runner, which starts no server, installs its stand-in (``runner.comfy_host.ServerStub``) first.

The test environments lack some optional packages the host's extras import (kornia, spandrel, torchaudio; see
.ci/run): a module that fails for a missing package fails in a real server too and is not counted here.
"""

from __future__ import annotations

import importlib.util
import logging
import re

import pytest

# comfy_extras/nodes_replacements.py (0.33.0): old node type -> new node type, as the host registers them
HOST_REPLACEMENTS = {"Load3DAnimation": "Load3D", "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
                     "T2IAdapterLoader": "ControlNetLoader"}
MISSING_MODULE = re.compile(r"No module named '([^']+)'")
PLACEHOLDER = "torchvision is not usable in this environment"  # tests/torchvision_placeholder.py


def _missing_dependency(reason: str) -> bool:
    """True if ``reason`` (a failed import's message) names a package this environment does not have."""
    if PLACEHOLDER in reason:
        return True
    match = MISSING_MODULE.search(reason)
    if not match:
        return False
    spec = importlib.util.find_spec(match.group(1).split(".")[0])
    return spec is None or spec.loader is None  # not installed, or the tests' torchvision placeholder


def load_problems(messages: list[str]) -> list[str]:
    """The host's messages about node modules that did not load, less those a missing package explains."""
    cannot_import = {}  # module file -> why, from "Cannot import <path> module for custom nodes: <why>"
    for text in messages:
        match = re.match(r"Cannot import (.+) module for custom nodes: (.*)", text, re.S)
        if match:
            cannot_import[match.group(1).rstrip("/").rsplit("/", 1)[-1]] = match.group(2)
    problems = []
    for text in messages:
        if text.startswith("Error while calling comfy_entrypoint") or "did not return" in text:
            problems.append(text)
            continue
        failed = re.match(r"IMPORT FAILED: (\S+)", text) or re.search(r"\(IMPORT FAILED\): (\S+)", text)
        if failed:
            name = failed.group(1).rstrip("/").rsplit("/", 1)[-1]
            if not _missing_dependency(cannot_import.get(name, "")):
                problems.append(f"{text} ({cannot_import.get(name, 'no reason logged')})")
    return problems


def test_load_problems_tells_missing_packages_from_failures():
    extras = "/ComfyUI/comfy_extras"
    messages = [f"Cannot import {extras}/nodes_canny.py module for custom nodes: No module named 'ntp_no_such_pkg'",
                "IMPORT FAILED: nodes_canny.py",
                f"Error while calling comfy_entrypoint in {extras}/nodes_replacements.py: type object 'PromptServer' "
                "has no attribute 'instance'",
                "IMPORT FAILED: nodes_replacements.py",
                f"Cannot import {extras}/nodes_x.py module for custom nodes: No module named 'logging.nope'",
                "IMPORT FAILED: nodes_x.py",
                "   0.1 seconds (IMPORT FAILED): /ComfyUI/custom_nodes/some_pack"]
    problems = load_problems(messages)
    assert len(problems) == 4, problems
    assert problems[0].startswith("Error while calling comfy_entrypoint in /ComfyUI/comfy_extras/nodes_replacements")
    assert problems[1].startswith("IMPORT FAILED: nodes_replacements.py (no reason logged)")
    assert problems[2].startswith("IMPORT FAILED: nodes_x.py (No module named 'logging.nope')")  # logging exists
    assert problems[3].startswith("   0.1 seconds (IMPORT FAILED): /ComfyUI/custom_nodes/some_pack")


@pytest.mark.host
def test_every_node_module_the_server_loads_loads(host, caplog):
    """A load of the host's nodes by the runner (again, if an earlier test of this session loaded them: loading
    twice is what ComfyUI-Manager's reload does) logs no failed node module but those of missing packages, and
    leaves the stand-in as PromptServer.instance with what the modules registered on it."""
    import server

    from nulltext_p2p.runner import comfy_host as runner_host

    h = runner_host.setup_host(host.path, cpu=True)
    runner_host._NODES_READY = False  # init_nodes loads once per process: make this call load
    with caplog.at_level(logging.INFO):
        runner_host.run_sync(runner_host.init_nodes(h))
    messages = [r.getMessage() for r in caplog.records]
    assert load_problems(messages) == []
    assert not [m for m in messages if "PromptServer" in m]
    instance = server.PromptServer.instance
    assert isinstance(instance, runner_host.ServerStub)
    if (host.path / "app" / "node_replace_manager.py").is_file():  # 0.33.0: nodes_replacements.py loaded
        assert "nodes_replacements.py" in (host.path / "nodes.py").read_text()
        for old, new in HOST_REPLACEMENTS.items():
            assert [r.new_node_id for r in instance.node_replace_manager.get_replacement(old)] == [new]
            assert new in h.nodes.NODE_CLASS_MAPPINGS and old not in h.nodes.NODE_CLASS_MAPPINGS
    else:  # 0.3.64: no node replacements in the host, none in its server, none in the stand-in
        assert not hasattr(instance, "node_replace_manager")
    for name in ("ImageStitch", "SaveImage", "NTP_DDIMInvert"):  # comfy_extras (nodes_images), core, this pack
        assert name in h.nodes.NODE_CLASS_MAPPINGS


CUSTOM_NODE = '''
from server import PromptServer

server = PromptServer.instance
assert "custom_nodes_from_web" in server.supports


@server.routes.get("/ntp_test_custom_node/ping")
async def ping(request):
    from aiohttp import web

    return web.json_response({"pong": True})


def on_prompt(json_data):
    for node in json_data["prompt"].values():
        if node["class_type"] == "NTP_TestOnPromptOld":
            node["class_type"] = "NTP_TestServerUser"
    json_data["extra_data"]["seen_by_handler"] = True
    return json_data


server.add_on_prompt_handler(on_prompt)


class ServerUser:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "test"


NODE_CLASS_MAPPINGS = {"NTP_TestServerUser": ServerUser}
'''


@pytest.mark.host
def test_a_custom_node_that_uses_the_server_while_it_loads(host, tmp_path):
    """A custom node module that adds a route and an on_prompt handler at import time loads in the runner, and
    the runner's prompts go through the on_prompt handlers and the node replacements as through the server's
    POST /prompt."""
    import server

    from nulltext_p2p.runner import comfy_host as runner_host

    h = runner_host.setup_host(host.path, cpu=True)
    runner_host.run_sync(runner_host.init_nodes(h))
    instance = server.PromptServer.instance
    path = tmp_path / "ntp_test_server_user.py"
    path.write_text(CUSTOM_NODE)
    handlers_before = list(instance.on_prompt_handlers)
    try:
        assert runner_host.run_sync(h.nodes.load_custom_node(str(path), module_parent="custom_nodes"))
        assert "NTP_TestServerUser" in h.nodes.NODE_CLASS_MAPPINGS
        assert any(getattr(r, "path", None) == "/ntp_test_custom_node/ping" for r in instance.routes)
        prompt = {"1": {"class_type": "NTP_TestOnPromptOld", "inputs": {}, "_meta": {"title": "a"}}}
        if hasattr(instance, "node_replace_manager"):
            prompt["2"] = {"class_type": "SDV_img2vid_Conditioning", "inputs": {"width": 64}, "_meta": {"title": "b"}}
        prompt, extra_data = runner_host._as_posted(instance, prompt, {"client_id": runner_host.CLIENT_ID})
        assert prompt["1"]["class_type"] == "NTP_TestServerUser" and extra_data["seen_by_handler"] is True
        if hasattr(instance, "node_replace_manager"):
            assert prompt["2"]["class_type"] == "SVD_img2vid_Conditioning" and prompt["2"]["inputs"] == {}
    finally:
        h.nodes.NODE_CLASS_MAPPINGS.pop("NTP_TestServerUser", None)
        instance.on_prompt_handlers[:] = handlers_before
