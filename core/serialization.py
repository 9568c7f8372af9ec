"""Pure (de)serialisation of an inversion and its null embeddings: values <-> (dict of tensors, metadata).

The node glue (``nodes/inversion_io.py``) writes the pair with ``safetensors.torch.save_file`` and reads it with
``safetensors.torch.load_file`` (never pickle). Format ``nulltext_p2p.inversion`` version 1:

Tensors (all stored on the CPU, little-endian, exactly as held by the values):

==============================  ===============================  =======  ==========================================
key                             shape                            dtype    what
==============================  ===============================  =======  ==========================================
``inversion.latents``           [steps + 1, 1, C, H, W]          float32  the pivot trajectory z_0 ... z_T
``inversion.source_context``    [1, tokens, dim]                 float32  the source prompt's embedding (SDXL: packed, +1 row)
``schedule.timesteps``          [steps]                          int64    sampling-order timesteps
``schedule.alphas_cumprod``     [steps]                          float64  their alpha-bars
``schedule.final_alpha``        [1]                              float64  where the last step lands
``null.embeddings``             [steps, 1, tokens, dim]          float32  per-step null embeddings (SDXL: packed, +1 row)
``null.iterations``             [n] (n = steps, or 0)            int64    inner iterations per step
``null.losses``                 [n]                              float64  last loss per step
``null.latent_offsets``         [steps, 1, C, H, W] (optional)   float32  Direct Inversion's per-step offsets
==============================  ===============================  =======  ==========================================

Version 2 (written for the flow-matching families, SD3 and Qwen-Image; SD files are still written as version 1, so
earlier versions of the pack keep reading them): metadata ``schedule_kind`` ``flow``, and in place of the three
``schedule.*`` tensors above ``schedule.sigmas`` ([steps + 1] float64, the host's sigmas, descending to 0). Latents
may carry a frame axis (Qwen-Image: ``[steps + 1, 1, C, 1, H, W]``).

Metadata (safetensors header, string -> string):

``format`` (``nulltext_p2p.inversion``), ``format_version`` (``1``), ``writer``, ``tensors`` (JSON: key ->
``{"shape", "dtype", "sha256"}``; every tensor is checked against it on load), ``steps``, ``latent_shape`` (JSON,
``[1, C, H, W]``), ``image_width`` / ``image_height`` (pixels, latent x 8), ``model_family``,
``model_fingerprint``, ``model_config``, ``inversion_fingerprint``, ``source_fingerprint``,
``null_inversion_fingerprint``, ``null_guidance`` (``repr`` of the float, exact), ``null_method``,
``source_prompt`` (may be empty).

The loaded values carry the stored fingerprints, so they are identical to the saved ones for every check that
compares fingerprints (Edited Sample accepts them with the saved pair).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from .flow import FlowSchedule
from .schedule import DDIMSchedule
from .values import Inversion, NullEmbeddings

FORMAT = "nulltext_p2p.inversion"
FORMAT_VERSION = 2  # the newest version read and written (flow schedules); DDIM files are written as version 1
DDIM_FORMAT_VERSION = 1
WRITER = "nulltext-p2p"
VAE_DOWNSCALE = 8  # SD 1.x/2.x VAE: 8 pixels per latent cell

# key -> (dtype, number of dimensions); latents and offsets have one more dimension with a frame axis
TENSOR_SPEC: dict[str, tuple[torch.dtype, int]] = {
    "inversion.latents": (torch.float32, 5),
    "inversion.source_context": (torch.float32, 3),
    "null.embeddings": (torch.float32, 4),
    "null.iterations": (torch.int64, 1),
    "null.losses": (torch.float64, 1),
}
DDIM_SCHEDULE_SPEC: dict[str, tuple[torch.dtype, int]] = {
    "schedule.timesteps": (torch.int64, 1),
    "schedule.alphas_cumprod": (torch.float64, 1),
    "schedule.final_alpha": (torch.float64, 1),
}
FLOW_SCHEDULE_SPEC: dict[str, tuple[torch.dtype, int]] = {
    "schedule.sigmas": (torch.float64, 1),
}
FRAME_AXIS_KEYS = ("inversion.latents", "null.latent_offsets")
# present only for Direct Inversion (per-step latent offsets added to the source row while editing)
OPTIONAL_TENSOR_SPEC: dict[str, tuple[torch.dtype, int]] = {
    "null.latent_offsets": (torch.float32, 5),
}
REQUIRED_METADATA = ("format", "format_version", "tensors", "steps", "latent_shape", "inversion_fingerprint",
                     "source_fingerprint", "null_inversion_fingerprint", "null_guidance", "null_method")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64"}


class FormatError(ValueError):
    """The file is not a readable inversion of this format (``problem``), with what to do (``fix``)."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem} Fix: {fix}")


class NewerFormatError(FormatError):
    """The file was written by a newer version of the pack."""


@dataclass
class LoadedInversion:
    inversion: Inversion
    null: NullEmbeddings
    source_prompt: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def model_fingerprint(self) -> str:
        return self.metadata.get("model_fingerprint", "")

    @property
    def model_config(self) -> str:
        return self.metadata.get("model_config", "")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the inverted image."""
        return int(self.metadata["image_width"]), int(self.metadata["image_height"])


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes (hex)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(json.dumps([list(t.shape), str(t.dtype)]).encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def to_state(inversion: Inversion, null: NullEmbeddings, *, source_prompt: str = "", model_fingerprint: str = "",
             model_config: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of one inversion + its null embeddings (ready for ``save_file``)."""
    sched = inversion.schedule
    latents = inversion.latents.detach().to("cpu", torch.float32).contiguous()
    tensors = {
        "inversion.latents": latents,
        "inversion.source_context": inversion.source_context.detach().to("cpu", torch.float32).contiguous(),
        "null.embeddings": null.embeddings.detach().to("cpu", torch.float32).contiguous(),
        "null.iterations": torch.tensor([int(i) for i in null.iterations], dtype=torch.int64).reshape(-1),
        "null.losses": torch.tensor([float(v) for v in null.losses], dtype=torch.float64).reshape(-1),
    }
    flow = isinstance(sched, FlowSchedule)
    if flow:
        tensors["schedule.sigmas"] = torch.tensor([float(v) for v in sched.sigmas_], dtype=torch.float64)
    else:
        tensors["schedule.timesteps"] = torch.tensor([int(t) for t in sched.timesteps], dtype=torch.int64)
        tensors["schedule.alphas_cumprod"] = torch.tensor([float(a) for a in sched.alphas_cumprod], dtype=torch.float64)
        tensors["schedule.final_alpha"] = torch.tensor([float(sched.final_alpha_cumprod)], dtype=torch.float64)
    if null.latent_offsets is not None:
        tensors["null.latent_offsets"] = null.latent_offsets.detach().to("cpu", torch.float32).contiguous()
    latent_shape = list(latents.shape[1:])
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION if flow else DDIM_FORMAT_VERSION),
        "writer": WRITER,
        "tensors": json.dumps({k: {"shape": list(t.shape), "dtype": _DTYPE_NAMES[t.dtype], "sha256": tensor_sha256(t)}
                               for k, t in tensors.items()}, sort_keys=True),
        "steps": str(sched.steps),
        "latent_shape": json.dumps(latent_shape),
        "image_width": str(latent_shape[-1] * VAE_DOWNSCALE),
        "image_height": str(latent_shape[-2] * VAE_DOWNSCALE),
        "model_family": str(inversion.model_family),
        "model_fingerprint": model_fingerprint,
        "model_config": model_config,
        "inversion_fingerprint": inversion.fingerprint,
        "source_fingerprint": inversion.source_fingerprint,
        "null_inversion_fingerprint": null.inversion_fingerprint,
        "null_guidance": repr(float(null.guidance)),
        "null_method": str(null.method),
        "source_prompt": source_prompt or "",
    }
    if flow:
        metadata["schedule_kind"] = "flow"
    return tensors, metadata


def check_header(metadata: dict[str, str] | None) -> int:
    """Check the format name and version of a file's metadata; returns the version."""
    metadata = metadata or {}
    fmt = metadata.get("format")
    if fmt != FORMAT:
        what = "no format tag" if fmt is None else f"format '{fmt}'"
        raise FormatError(f"the file is not a nulltext-p2p inversion ({what}; expected '{FORMAT}').",
                          "choose a file written by the Save Inversion node of Null-text P2P.")
    raw = metadata.get("format_version", "")
    try:
        version = int(raw)
    except ValueError:
        raise FormatError(f"the file has an unknown format version '{raw}'.",
                          "choose a file written by Save Inversion, or save the inversion again.") from None
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"the file is format version {version}, written by a newer nulltext-p2p; this version reads "
            f"version {FORMAT_VERSION} only.", "update the nulltext-p2p node pack (or save the inversion again with this version).")
    if version < 1:
        raise FormatError(f"the file has an unknown format version {version}.",
                          "choose a file written by Save Inversion, or save the inversion again.")
    return version


def _damaged(problem: str) -> FormatError:
    return FormatError(f"the file is damaged or was modified: {problem}",
                       "save the inversion again with Save Inversion (or restore the original file).")


def _json(metadata: dict[str, str], key: str):
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError, TypeError):
        raise _damaged(f"metadata '{key}' is missing or not valid JSON.") from None


def from_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> LoadedInversion:
    """Check everything against the metadata and rebuild the values (identical to the saved ones)."""
    metadata = dict(metadata or {})
    check_header(metadata)
    missing_meta = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing_meta:
        raise _damaged(f"metadata {missing_meta} is missing.")
    manifest = _json(metadata, "tensors")
    if not isinstance(manifest, dict):
        raise _damaged("metadata 'tensors' is not a table.")
    flow = metadata.get("schedule_kind") == "flow"
    spec = dict(TENSOR_SPEC)
    spec.update(FLOW_SCHEDULE_SPEC if flow else DDIM_SCHEDULE_SPEC)
    spec.update({k: v for k, v in OPTIONAL_TENSOR_SPEC.items() if k in manifest})
    if set(manifest) != set(spec):
        raise _damaged(f"metadata 'tensors' lists {sorted(manifest)}, expected {sorted(spec)}.")
    if set(tensors) != set(spec):
        extra, absent = sorted(set(tensors) - set(spec)), sorted(set(spec) - set(tensors))
        raise _damaged(f"tensors missing {absent}, unexpected {extra}.")
    for key, (dtype, ndim) in spec.items():
        t, entry = tensors[key], manifest[key]
        if not isinstance(entry, dict):
            raise _damaged(f"metadata 'tensors' entry of '{key}' is not a table.")
        if list(t.shape) != entry.get("shape") or _DTYPE_NAMES.get(t.dtype) != entry.get("dtype"):
            raise _damaged(f"tensor '{key}' is {list(t.shape)} {t.dtype}, but the metadata says "
                           f"{entry.get('shape')} {entry.get('dtype')}.")
        if t.dtype != dtype or (t.ndim != ndim and not (key in FRAME_AXIS_KEYS and t.ndim == ndim + 1)):
            raise _damaged(f"tensor '{key}' is {list(t.shape)} {t.dtype}; expected {ndim} dimensions of {dtype}.")
        if tensor_sha256(t) != entry.get("sha256"):
            raise _damaged(f"tensor '{key}' does not match its checksum.")

    latents = tensors["inversion.latents"]
    context = tensors["inversion.source_context"]
    emb = tensors["null.embeddings"]
    iterations = tensors["null.iterations"]
    losses = tensors["null.losses"]
    try:
        steps = int(metadata["steps"])
        guidance = float(metadata["null_guidance"])
    except ValueError:
        raise _damaged("metadata 'steps' or 'null_guidance' is not a number.") from None
    latent_shape = _json(metadata, "latent_shape")
    problems = []
    if steps < 1 or latents.shape[0] != steps + 1:
        problems.append(f"{latents.shape[0]} trajectory latents for {steps} steps (expected steps + 1)")
    if list(latents.shape[1:]) != latent_shape:
        problems.append(f"latent shape {list(latents.shape[1:])} but metadata 'latent_shape' {latent_shape}")
    if latents.shape[1] != 1:
        problems.append(f"a trajectory batch of {latents.shape[1]} (expected 1)")
    if flow:
        sigmas = tensors["schedule.sigmas"]
        if sigmas.shape[0] != steps + 1:
            problems.append(f"{sigmas.shape[0]} sigmas for {steps} steps (expected steps + 1)")
    else:
        timesteps = tensors["schedule.timesteps"]
        alphas = tensors["schedule.alphas_cumprod"]
        final_alpha = tensors["schedule.final_alpha"]
        if timesteps.shape[0] != steps or alphas.shape[0] != steps:
            problems.append(f"{timesteps.shape[0]} timesteps / {alphas.shape[0]} alpha-bars for {steps} steps")
        if final_alpha.shape[0] != 1:
            problems.append("'schedule.final_alpha' is not one value")
    if emb.shape[0] != steps or emb.shape[1] != 1:
        problems.append(f"null embeddings {list(emb.shape)} for {steps} steps (expected [{steps}, 1, tokens, dim])")
    if context.shape[0] != 1 or emb.shape[-1] != context.shape[-1]:
        problems.append(f"source embedding {list(context.shape)} and null embeddings {list(emb.shape)} disagree")
    if iterations.shape[0] != losses.shape[0] or iterations.shape[0] not in (0, steps):
        problems.append(f"{iterations.shape[0]} iteration counts and {losses.shape[0]} losses for {steps} steps")
    offsets = tensors.get("null.latent_offsets")
    if offsets is not None and (offsets.shape[0] != steps or list(offsets.shape[1:]) != list(latents.shape[1:])):
        problems.append(f"latent offsets {list(offsets.shape)} for {steps} steps of latents {list(latents.shape[1:])}")
    if problems:
        raise _damaged("; ".join(problems) + ".")

    if flow:
        try:
            schedule = FlowSchedule.from_sigmas(tensors["schedule.sigmas"])
        except ValueError as e:
            raise _damaged(f"'schedule.sigmas': {e}.") from None
    else:
        schedule = DDIMSchedule(tuple(int(t) for t in timesteps.tolist()), tuple(float(a) for a in alphas.tolist()),
                                float(final_alpha[0]))
    inversion = Inversion(latents=latents, schedule=schedule, source_context=context,
                          model_family=metadata.get("model_family", "SD1.x"),
                          fingerprint=metadata["inversion_fingerprint"],
                          source_fingerprint=metadata["source_fingerprint"],
                          model_fingerprint=metadata.get("model_fingerprint", ""))
    null = NullEmbeddings(embeddings=emb, inversion_fingerprint=metadata["null_inversion_fingerprint"],
                          guidance=guidance, method=metadata["null_method"],
                          iterations=[int(i) for i in iterations.tolist()], losses=[float(v) for v in losses.tolist()],
                          latent_offsets=offsets)
    return LoadedInversion(inversion=inversion, null=null, source_prompt=metadata.get("source_prompt", ""),
                           metadata=metadata)
