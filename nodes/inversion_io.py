"""Save Inversion / Load Inversion nodes: invert once, edit many.

Files are safetensors (never pickle) in ``<ComfyUI output folder>/nulltext_p2p/``, named
``<filename_prefix>_<counter:05>.safetensors``; Load Inversion lists the ``.safetensors`` files of that folder.
The format itself (tensor keys, metadata, checks) lives in ``core/serialization.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid

import safetensors
import safetensors.torch
import torch

import comfy.model_management
import folder_paths
from comfy_api.latest import io

from ..core import serialization
from ..core.serialization import FormatError, LoadedInversion
from ..core.values import Inversion, NullEmbeddings
from ..host.errors import NodeInputError
from ..host.model_fingerprint import model_config_name, model_fingerprint
from ..host.families import family_named, family_of
from ..host.text_condition import to_conditioning
from . import types
from .common import check_finite, check_inversion, check_null_embeddings, interrupt_check

SAVE_NODE = types.display_name("Save Inversion")
LOAD_NODE = types.display_name("Load Inversion")
SUBFOLDER = "nulltext_p2p"
EXTENSION = ".safetensors"
MAX_NAME = 150
_BAD_CHARS = re.compile(r'[\x00-\x1f<>:"|?*]')


# ----------------------------------------------------------------------------------------------------------------
# Where files go, and safe names
# ----------------------------------------------------------------------------------------------------------------
def inversion_dir() -> str:
    """``<output directory>/nulltext_p2p`` (the host's ``folder_paths.get_output_directory()``)."""
    return os.path.join(folder_paths.get_output_directory(), SUBFOLDER)


def check_safe_name(name: str, node: str, input_name: str) -> str:
    """A plain file name (no folders): reject path separators, '..', absolute paths and odd characters."""
    if not isinstance(name, str) or not name.strip():
        raise NodeInputError(node, input_name, "the name is empty.", "type a name such as 'cat_photo'.")
    name = name.strip()
    fix = f"use a plain name without folders (letters, digits, '-', '_', '.'); files always go to {inversion_dir()}."
    if "/" in name or "\\" in name:
        raise NodeInputError(node, input_name, f"'{name}' contains a path separator ('/' or '\\').", fix)
    if ".." in name:
        raise NodeInputError(node, input_name, f"'{name}' contains '..'.", fix)
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        raise NodeInputError(node, input_name, f"'{name}' is an absolute path.", fix)
    if _BAD_CHARS.search(name):
        raise NodeInputError(node, input_name, f"'{name}' contains a character not allowed in file names "
                                               "(control characters or any of <>:\"|?*).", fix)
    if name.startswith("."):
        raise NodeInputError(node, input_name, f"'{name}' starts with '.' (hidden and temporary files).", fix)
    if len(name) > MAX_NAME:
        raise NodeInputError(node, input_name, f"the name is {len(name)} characters long (at most {MAX_NAME}).", fix)
    return name


def list_inversion_files() -> list[str]:
    """Saved inversion files (names inside :func:`inversion_dir`), sorted."""
    folder = inversion_dir()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(EXTENSION) and not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n)))


def inversion_path(name: str, node: str = LOAD_NODE, input_name: str = "inversion_file") -> str:
    name = check_safe_name(name, node, input_name)
    return os.path.join(inversion_dir(), name)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Save
# ----------------------------------------------------------------------------------------------------------------
def _next_path(folder: str, prefix: str) -> str:
    pattern = re.compile(re.escape(prefix) + r"_(\d+)" + re.escape(EXTENSION) + "$")
    counters = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    return os.path.join(folder, f"{prefix}_{max(counters, default=0) + 1:05d}{EXTENSION}")


def write_atomic(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it over ``path``.

    On any error (Cancel included) the temporary file is removed: the folder never holds a half-written file.
    """
    folder = os.path.dirname(path) or "."
    # a unique hidden name beside the target (created by save_file, so it gets the usual permissions)
    tmp = os.path.join(folder, f".ntp-{uuid.uuid4().hex}.tmp")
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename durable (POSIX)
        try:
            dfd = os.open(folder, os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def save_inversion(model, inversion: Inversion, null: NullEmbeddings, filename_prefix: str,
                   source_prompt: str = "", node: str = SAVE_NODE) -> str:
    """Save the pair; returns the path written."""
    check_inversion(inversion, node)
    check_null_embeddings(null, inversion, node)
    prefix = check_safe_name(filename_prefix, node, "filename_prefix")
    folder = inversion_dir()
    os.makedirs(folder, exist_ok=True)
    tensors, metadata = serialization.to_state(inversion, null, source_prompt=source_prompt or "",
                                               model_fingerprint=model_fingerprint(model),
                                               model_config=model_config_name(model))
    interrupt_check()
    path = _next_path(folder, prefix)
    write_atomic(tensors, metadata, path)
    return path


class SaveInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_SaveInversion",
            display_name=SAVE_NODE,
            **types.search_aliases('save inversion', 'inversion', 'safetensors'),
            category=f"{types.CATEGORY}/io",
            description="Saves the inversion and its null embeddings to one safetensors file in "
                        "output/nulltext_p2p/, so the slow part runs once: load it later with Load Inversion and "
                        "edit as often as you like.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model the inversion was made with (only a fingerprint of it is saved, to warn when the file is loaded with another model)."),
                types.Inversion.Input("inversion", tooltip="The 'inversion' output of DDIM Invert."),
                types.NullEmbeddings.Input("null_embeddings", tooltip="The 'null_embeddings' output of Null-Text Optimize for this inversion."),
                io.String.Input("filename_prefix", default="inversion", tooltip="File name (no folders): files are written as output/nulltext_p2p/<prefix>_00001.safetensors, _00002, ..."),
                io.String.Input("source_prompt", default="", multiline=True, optional=True, tooltip="The source caption, stored in the file as a reminder (Load Inversion outputs it). Optional."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, model, inversion, null_embeddings, filename_prefix, source_prompt="") -> io.NodeOutput:
        path = save_inversion(model, inversion, null_embeddings, filename_prefix, source_prompt or "")
        size = os.path.getsize(path) / 1e6
        rel = os.path.join(SUBFOLDER, os.path.basename(path))
        logging.info("[%s] saved %s (%.1f MB)", SAVE_NODE, path, size)
        # the file as an output item (like Save Image's "images"), so scripts and the runner find it in the history
        item = {"filename": os.path.basename(path), "subfolder": SUBFOLDER, "type": "output"}
        return io.NodeOutput(ui={"text": [f"saved {rel} ({size:.1f} MB, {inversion.steps} steps); "
                                          f"load it with Load Inversion"], "inversion_files": [item]})


# ----------------------------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------------------------
def _read_metadata(path: str, node: str, input_name: str) -> dict[str, str]:
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise NodeInputError(node, input_name, f"the file {path} does not exist.",
                             "choose a file from the list (refresh the page after saving).") from None
    except Exception as e:  # SafetensorError: truncated header, not safetensors at all
        raise NodeInputError(node, input_name, f"the file {os.path.basename(path)} cannot be read as safetensors "
                                               f"(truncated or damaged: {e}).",
                             "save the inversion again with Save Inversion (or restore the original file).") from None


def read_inversion_file(path: str, node: str = LOAD_NODE, input_name: str = "inversion_file") -> LoadedInversion:
    """Read and check a saved inversion (format version first, then every tensor)."""
    metadata = _read_metadata(path, node, input_name)
    try:
        serialization.check_header(metadata)
    except FormatError as e:
        raise NodeInputError(node, input_name, f"{os.path.basename(path)}: {e.problem}", e.fix) from None
    try:
        tensors = safetensors.torch.load_file(path, device="cpu")
    except Exception as e:
        raise NodeInputError(node, input_name, f"the file {os.path.basename(path)} is truncated or damaged ({e}).",
                             "save the inversion again with Save Inversion (or restore the original file).") from None
    try:
        return serialization.from_state(tensors, metadata)
    except FormatError as e:
        raise NodeInputError(node, input_name, f"{os.path.basename(path)}: {e.problem}", e.fix) from None


def _model_context_dim(model):
    cfg = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    return cfg.get("context_dim")


def compatibility_warnings(model, loaded: LoadedInversion) -> list[str]:
    """What differs between the model of the file and ``model`` (empty when they match)."""
    warnings = []
    saved_family = loaded.inversion.model_family
    try:
        family = family_of(model, LOAD_NODE)
    except NodeInputError as e:
        family = None
        warnings.append(f"{e.problem} Edited Sample will refuse it.")
    if family is not None and saved_family not in family.names:
        warnings.append(f"the file was made with a {saved_family} model but this MODEL is {family.name_of(model)}: "
                        "Null-Text Optimize and Edited Sample will refuse it. Connect a model of the file's family.")
    saved_fp, saved_cfg = loaded.model_fingerprint, loaded.model_config
    fp, cfg = model_fingerprint(model), model_config_name(model)
    if saved_fp and saved_fp != fp:
        warnings.append(f"the file was made with another model ({saved_cfg}, fingerprint {saved_fp}; this MODEL is "
                        f"{cfg}, fingerprint {fp}). Null-Text Optimize and Edited Sample will refuse it: connect the "
                        "checkpoint the inversion was made with, or invert again with this one.")
    ctx_dim = _model_context_dim(model)
    dim = int(loaded.inversion.source_context.shape[-1])
    if ctx_dim is not None and int(ctx_dim) != dim:
        warnings.append(f"the file's text embeddings have {dim} dimensions but this MODEL expects {ctx_dim}: "
                        "Edited Sample will fail. Use the model family the inversion was made with.")
    channels = getattr(getattr(model.model, "latent_format", None), "latent_channels", None)
    if channels is not None and int(channels) != int(loaded.inversion.latents.shape[2]):
        warnings.append(f"the file's latents have {loaded.inversion.latents.shape[2]} channels but this MODEL uses "
                        f"{channels}: Edited Sample will fail. Use the model family the inversion was made with.")
    return warnings


def load_inversion(model, inversion_file: str, node: str = LOAD_NODE) -> tuple[LoadedInversion, list[str]]:
    path = inversion_path(inversion_file, node, "inversion_file")
    if not os.path.isfile(path):
        raise NodeInputError(node, "inversion_file", f"'{inversion_file}' is not in {inversion_dir()}.",
                             "save one with Save Inversion, or copy the file into that folder, then refresh the page.")
    loaded = read_inversion_file(path, node, "inversion_file")
    for what, tensor in (("latents", loaded.inversion.latents), ("null embeddings", loaded.null.embeddings)):
        check_finite(tensor, node, "inversion_file", f"the file's {what} hold NaN or infinite values",
                     "save the inversion again from a run that finished without NaN (Null-Text Optimize refuses a "
                     "NaN loss).")
    offload = comfy.model_management.intermediate_device()
    loaded.inversion.latents = loaded.inversion.latents.to(offload)
    loaded.inversion.source_context = loaded.inversion.source_context.to(offload)
    loaded.null.embeddings = loaded.null.embeddings.to(offload)
    warnings = compatibility_warnings(model, loaded)
    for w in warnings:
        logging.warning("[%s] %s: %s", node, inversion_file, w)
    return loaded, warnings


class LoadInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_LoadInversion",
            display_name=LOAD_NODE,
            **types.search_aliases('load inversion', 'inversion', 'safetensors'),
            category=f"{types.CATEGORY}/io",
            description="Loads an inversion and its null embeddings saved by Save Inversion (from "
                        "output/nulltext_p2p/) and checks it: format version, every tensor, and that MODEL is "
                        "the model it was made with (a warning otherwise).",
            inputs=[
                io.Combo.Input("inversion_file", options=list_inversion_files(), tooltip="A file in output/nulltext_p2p/ written by Save Inversion (refresh the page to see new files)."),
                io.Model.Input("model", tooltip="The model you will edit with; compared with the fingerprint of the model the inversion was made with."),
            ],
            outputs=[
                types.Inversion.Output("inversion", display_name="inversion", tooltip="The saved inversion, identical to the one saved (for Edited Sample)."),
                types.NullEmbeddings.Output("null_embeddings", display_name="null_embeddings", tooltip="The saved null embeddings (for Edited Sample)."),
                io.Conditioning.Output("source", display_name="source", tooltip="The source prompt embedding used for the inversion (can feed Edited Sample's 'source')."),
                io.String.Output("source_prompt", display_name="source_prompt", tooltip="The source caption stored with the file (empty when none was given to Save Inversion); type it as the Attention Controller's source_prompt."),
            ],
        )

    @classmethod
    def execute(cls, inversion_file, model) -> io.NodeOutput:
        loaded, warnings = load_inversion(model, inversion_file)
        inv, null = loaded.inversion, loaded.null
        w, h = loaded.image_size
        prompt = f"; source prompt: '{loaded.source_prompt}'" if loaded.source_prompt else ""
        text = [f"{inversion_file}: {inv.steps} steps, {w}x{h} px, guidance {null.guidance:g} ({null.method}){prompt}"]
        text += [f"WARNING: {m}" for m in warnings]
        family = family_named(inv.model_family)
        same = family is not None and family.accepts(model) and family.name_of(model) == inv.model_family
        # the file's context is packed as its family packs it (a pooled vector, Flux's guidance)
        source = family.to_conditioning(inv.source_context.clone(), model) if same else to_conditioning(inv.source_context.clone(), 0)
        return io.NodeOutput(inv, null, source, loaded.source_prompt, ui={"text": ["\n".join(text)]})

    @classmethod
    def fingerprint_inputs(cls, inversion_file, **kwargs):
        """Hash of the file's bytes: the node runs again when the file changes."""
        try:
            return file_sha256(inversion_path(inversion_file))
        except (OSError, NodeInputError):
            return float("nan")

    @classmethod
    def validate_inputs(cls, inversion_file):
        try:
            path = inversion_path(inversion_file)
        except NodeInputError as e:
            return str(e)
        if not os.path.isfile(path):
            return str(NodeInputError(LOAD_NODE, "inversion_file", f"'{inversion_file}' is not in {inversion_dir()}.",
                                      "save one with Save Inversion, or copy the file into that folder, then refresh "
                                      "the page."))
        try:
            serialization.check_header(_read_metadata(path, LOAD_NODE, "inversion_file"))
        except NodeInputError as e:
            return str(e)
        except FormatError as e:
            return str(NodeInputError(LOAD_NODE, "inversion_file", f"{inversion_file}: {e.problem}", e.fix))
        return True
