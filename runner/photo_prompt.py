"""One photo's prompt in a batch: the workflow with the row's captions and edits, its outputs and its PSNR. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .captions import Row
from .convert import node_inputs
from .errors import UsageError


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _of_type(prompt: Mapping, class_type: str) -> list:
    return sorted((nid for nid, n in prompt.items() if n["class_type"] == class_type), key=lambda s: (len(s), s))


def _title(prompt: Mapping, nid: str) -> str:
    node = prompt[nid]
    return f"node {nid} {(node.get('_meta') or {}).get('title') or node['class_type']!r} ({node['class_type']})"


def _set_text(prompt: dict, definitions: Mapping, nid: str, name: str, value: str, what: str) -> None:
    """Set a text input, following a link to the node that holds the text (a primitive with one text widget)."""
    seen = set()
    while _is_link(prompt[nid]["inputs"].get(name)):
        src = prompt[nid]["inputs"][name][0]
        if src in seen or src not in prompt:
            raise UsageError(f"batch: cannot set the {what}: the links from {_title(prompt, nid)} loop or break.")
        seen.add(src)
        texts = [s.name for s in node_inputs(definitions.get(prompt[src]["class_type"]) or {})
                 if s.type == "STRING" and (s.is_widget or s.name in prompt[src]["inputs"])]
        if len(texts) != 1:
            raise UsageError(f"batch: cannot set the {what}: input {name!r} of {_title(prompt, nid)} comes from "
                             f"{_title(prompt, src)}, which holds no single text value. Type the text into "
                             f"{_title(prompt, nid)} or feed it from a text primitive.")
        nid, name = src, texts[0]
    prompt[nid]["inputs"][name] = value


def _new_id(prompt: Mapping) -> str:
    numbers = [int(k) for k in prompt if str(k).isdigit()]
    return str(max(numbers, default=0) + 1)


@dataclass
class PhotoPrompt:
    prompt: dict
    psnr_node: Optional[str]  # the Reconstruction Check whose ui holds the PSNR
    subfolder: str  # where this attempt's Save Image files go (relative to the output folder)


def prepare_photo_prompt(base: Mapping, definitions: Mapping, row: Row, attempt_dir: str) -> PhotoPrompt:
    """The prompt of one photo: ``base`` (converted, with --image/--checkpoint/--set applied) with the row's captions
    and edits, every Save Image writing under ``attempt_dir/``, a Save Inversion and a Reconstruction Check. Pure."""
    prompt = json.loads(json.dumps(base))
    controllers = _of_type(prompt, "NTP_AttentionController")
    edits = _of_type(prompt, "NTP_EditedSample")
    inverts = _of_type(prompt, "NTP_DDIMInvert")
    if len(controllers) != 1 or not edits or len(inverts) != 1:
        raise UsageError(f"batch: the workflow needs one DDIM Invert, one Attention Controller and an Edited Sample "
                         f"(it has {len(inverts)}, {len(controllers)} and {len(edits)}): use a workflow like "
                         "example_workflows/word_swap.json.")
    ctrl, edit, invert = controllers[0], edits[0], inverts[0]
    _set_captions(prompt, definitions, row, ctrl, invert)
    for nid in _of_type(prompt, "SaveImage"):  # every Save Image under this attempt's folder
        prefix = str(prompt[nid]["inputs"].get("filename_prefix") or "ComfyUI")
        if _is_link(prefix):
            raise UsageError(f"batch: {_title(prompt, nid)}: its filename_prefix is a link; type it in.")
        prompt[nid]["inputs"]["filename_prefix"] = f"{attempt_dir}/{prefix.replace(chr(92), '/').rsplit('/', 1)[-1]}"
    _save_inversion(prompt, row, edit)
    return PhotoPrompt(prompt=prompt, psnr_node=_psnr_node(prompt, edit, invert), subfolder=attempt_dir)


def _set_captions(prompt: dict, definitions: Mapping, row: Row, ctrl: str, invert: str) -> None:
    """The source caption (the controller and the text encoder feeding DDIM Invert), the targets and the edits."""
    _set_text(prompt, definitions, ctrl, "source_prompt", row.source, "source caption")
    source_link = prompt[invert]["inputs"].get("source")
    if _is_link(source_link) and "text" in prompt.get(source_link[0], {}).get("inputs", {}):
        _set_text(prompt, definitions, source_link[0], "text", row.source, "source caption")
    else:
        raise UsageError(f"batch: cannot set the source caption: DDIM Invert's 'source' does not come from a text "
                         f"encoder with a 'text' input (CLIP Text Encode).")
    for name, value in (("target_prompts", "\n".join(row.targets)), ("blend_words", row.blend),
                        ("reweight", row.reweight)):
        _set_text(prompt, definitions, ctrl, name, value, name)
    if row.mode:
        prompt[ctrl]["inputs"]["mode"] = row.mode


def _save_inversion(prompt: dict, row: Row, edit: str) -> None:
    """Every Save Inversion saves as ``<photo id>`` with the row's caption; one is added if the workflow has none."""
    saves = _of_type(prompt, "NTP_SaveInversion")
    if not saves:
        e = prompt[edit]["inputs"]
        sid = _new_id(prompt)
        prompt[sid] = {"class_type": "NTP_SaveInversion", "_meta": {"title": "Save Inversion (batch)"},
                       "inputs": {"model": e["model"], "inversion": e["inversion"],
                                  "null_embeddings": e["null_embeddings"]}}
        saves = [sid]
    for sid in saves:
        prompt[sid]["inputs"]["filename_prefix"] = row.photo_id
        prompt[sid]["inputs"]["source_prompt"] = row.source


def _psnr_node(prompt: dict, edit: str, invert: str) -> Optional[str]:
    """The Reconstruction Check for the PSNR: the workflow's, else one added on the reconstruction (row 0 of Edited
    Sample, decoded) and the inverted pixels; None where the workflow offers neither."""
    checks = _of_type(prompt, "NTP_ReconstructionCheck")
    if checks:
        return checks[0]
    decodes = [nid for nid in _of_type(prompt, "VAEDecode") if prompt[nid]["inputs"].get("samples") == [edit, 0]]
    latent = prompt[invert]["inputs"].get("latent")
    pixels = None
    if _is_link(latent) and latent[0] in prompt:
        pixels = prompt[latent[0]]["inputs"].get("pixels")
    if not (decodes and _is_link(pixels)):
        return None
    psnr_node = _new_id(prompt)
    prompt[psnr_node] = {"class_type": "NTP_ReconstructionCheck", "_meta": {"title": "Reconstruction Check (batch)"},
                         "inputs": {"source": pixels, "reconstruction": [decodes[0], 0]}}
    return psnr_node


def check_workflow(workflow: Mapping, definitions: Mapping, checkpoint: Optional[str], sets: list,
                   mask_name: Optional[str], row: Row) -> None:
    """Fail once, before any photo runs, when the workflow or the overrides do not fit the batch."""
    from .app import build_prompt

    prepare_photo_prompt(build_prompt(workflow, definitions, None, checkpoint, sets, mask_name), definitions, row,
                         "check")


def metrics(ui_outputs: Mapping, psnr_node: Optional[str]) -> tuple:
    """(PSNR, SSIM) of the reconstruction from the Reconstruction Check's ui output; None for what is missing."""
    out = (ui_outputs or {}).get(psnr_node) if psnr_node is not None else None
    if not isinstance(out, Mapping):
        return None, None
    p, s = out.get("psnr") or [None], out.get("ssim") or [None]
    return (float(p[0]) if p[0] is not None else None), (float(s[0]) if s[0] is not None else None)
