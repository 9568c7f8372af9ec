"""The runner's two paths, as functions the CLI and the tests call: in-process (default) and a running server (--url)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable, Mapping, Optional

from .convert import is_api_prompt, is_ui_workflow, workflow_to_prompt
from .errors import UsageError
from .overrides import apply_overrides


def load_workflow(path: str) -> dict:
    """Read a workflow file (UI format, or an API-format prompt); UsageError if missing or not JSON."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"workflow {path}: no such file.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"workflow {path}: cannot read it ({e}).") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"workflow {path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    if not (is_ui_workflow(data) or is_api_prompt(data)):
        raise UsageError(f"workflow {path}: neither a UI-format workflow (no 'nodes' list) nor an API-format prompt.")
    return data


def build_prompt(workflow: Mapping, definitions: Mapping, image_name: Optional[str] = None,
                 checkpoint: Optional[str] = None, sets: Iterable[str] = (), mask_name: Optional[str] = None) -> dict:
    """Convert (UI format) or copy (API format) the workflow, then apply the overrides. Pure."""
    if is_ui_workflow(workflow):
        prompt = workflow_to_prompt(workflow, definitions)
    else:
        prompt = copy.deepcopy(dict(workflow))
        for node in prompt.values():
            node.setdefault("_meta", {}).setdefault("title", node["class_type"])
    return apply_overrides(prompt, definitions, image_name=image_name, checkpoint=checkpoint, sets=list(sets),
                           mask_name=mask_name)


def check_files(image: Optional[str] = None, mask: Optional[str] = None) -> None:
    """--image and --mask must name files (before the host is imported)."""
    for option, path in (("--image", image), ("--mask", mask)):
        if path is not None and not Path(path).expanduser().is_file():
            raise UsageError(f"{option} {path}: no such file.")


async def prepare_in_process(comfyui: Optional[str] = None, cpu: bool = False, log=None):
    """Find, import and initialise the host; returns (host, node definitions)."""
    from .comfy_host import HostNodeDefinitions, find_comfyui, init_nodes, setup_host

    path = find_comfyui(comfyui)
    if log is not None:
        log(f"ComfyUI at {path}")
    host = setup_host(path, cpu=cpu, log=log or (lambda _msg: None))
    await init_nodes(host)
    return host, HostNodeDefinitions(host.nodes)


async def run_in_process(workflow_path: str, image: Optional[str] = None, checkpoint: Optional[str] = None,
                         sets: Iterable[str] = (), comfyui: Optional[str] = None, output_dir: Optional[str] = None,
                         input_dir: Optional[str] = None, cpu: bool = False, reporter=None, verbose: bool = False,
                         log=None, on_prompt=None, executor=None, mask: Optional[str] = None):
    """Load the workflow, the host and its nodes; convert with the host's node definitions; apply the overrides;
    validate and execute in this process. Returns a ``runner.comfy_host.RunResult`` (``.saved`` lists the files).
    ``executor``: ``RunResult.executor`` of an earlier run, to reuse its caches (unchanged nodes are not re-run).
    ``mask``: an image file for every Load Image (as Mask) node (``--mask``)."""
    from .comfy_host import Reporter, directories, execute_prompt, import_image, register_checkpoint

    workflow = load_workflow(workflow_path)
    check_files(image, mask)
    host, definitions = await prepare_in_process(comfyui, cpu, log)
    with directories(host, output_dir, input_dir):
        image_name = import_image(host, image) if image is not None else None
        mask_name = import_image(host, mask, "--mask") if mask is not None else None
        ckpt_name = register_checkpoint(host, checkpoint) if checkpoint is not None else None
        prompt = build_prompt(workflow, definitions, image_name, ckpt_name, sets, mask_name)
        if on_prompt is not None:
            on_prompt(prompt)
        reporter = reporter or Reporter(prompt)
        reporter.prompt = prompt
        return await execute_prompt(host, prompt, workflow if is_ui_workflow(workflow) else None, reporter,
                                    verbose=verbose, executor=executor)


async def convert_in_process(workflow_path: str, image: Optional[str] = None, checkpoint: Optional[str] = None,
                             sets: Iterable[str] = (), comfyui: Optional[str] = None, input_dir: Optional[str] = None,
                             log=None, mask: Optional[str] = None) -> dict:
    """The API prompt the run would execute (nothing runs; --image and --mask are copied into the input folder)."""
    from .comfy_host import directories, import_image, register_checkpoint

    workflow = load_workflow(workflow_path)
    check_files(image, mask)
    host, definitions = await prepare_in_process(comfyui, True, log)  # nothing runs: no GPU needed
    with directories(host, None, input_dir):
        image_name = import_image(host, image) if image is not None else None
        mask_name = import_image(host, mask, "--mask") if mask is not None else None
        ckpt_name = register_checkpoint(host, checkpoint) if checkpoint is not None else None
        return build_prompt(workflow, definitions, image_name, ckpt_name, sets, mask_name)
