"""Reconstruction Check node: PSNR and SSIM of the reconstruction against the source photo."""

from __future__ import annotations

import torch

from comfy_api.latest import io

from ..core.image_metrics import PSNR_CAP_DB, SSIM_WINDOW, psnr, ssim
from ..host.errors import NodeInputError
from . import types

NODE = types.display_name("Reconstruction Check")


def _image(img, input_name: str) -> torch.Tensor:
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[0] < 1:
        raise NodeInputError(NODE, input_name, "expected an IMAGE [batch, height, width, channels].",
                             "connect an IMAGE output (Load Image, VAE Decode).")
    return img


def compare_images(source: torch.Tensor, reconstruction: torch.Tensor) -> list[tuple[float, float]]:
    """(PSNR dB, SSIM) of every reconstruction row against ``source[0]``."""
    source = _image(source, "source")
    reconstruction = _image(reconstruction, "reconstruction")
    ref = source[0]
    if tuple(reconstruction.shape[1:3]) != tuple(ref.shape[:2]):
        raise NodeInputError(
            NODE, "reconstruction",
            f"its size {reconstruction.shape[2]}x{reconstruction.shape[1]} (WxH) differs from the source's "
            f"{ref.shape[1]}x{ref.shape[0]}.",
            "scale one to the other's size with Upscale Image (ImageScale), or compare the image you encoded "
            "(after any scaling or cropping) with its decoded reconstruction.")
    c_src, c_rec = int(ref.shape[-1]), int(reconstruction.shape[-1])
    if min(c_src, c_rec) >= 3:
        ref, reconstruction = ref[..., :3], reconstruction[..., :3]  # RGB; alpha ignored
    elif c_src != c_rec:
        raise NodeInputError(NODE, "reconstruction", f"it has {c_rec} channels and the source {c_src}.",
                             "compare two RGB images (VAE Decode gives RGB; convert the other one).")
    out = []
    for row in reconstruction:
        row = row.to(ref.device)
        out.append((psnr(ref, row), ssim(ref, row)))
    return out


class ReconstructionCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NTP_ReconstructionCheck",
            display_name=NODE,
            **types.search_aliases('psnr', 'ssim', 'reconstruction quality', 'compare images', 'inversion'),
            category=f"{types.CATEGORY}/inversion",
            description="How close the reconstruction is to the photo: PSNR (dB) and SSIM of every reconstruction "
                        "row against the first source image (the outputs are those of row 0, the "
                        "reconstruction of Edited Sample's batch).",
            is_output_node=True,
            inputs=[
                io.Image.Input("source", tooltip="The photo that was inverted (Load Image; the same size as the reconstruction). Only its first image is used."),
                io.Image.Input("reconstruction", tooltip="VAE Decode of the reconstruction (Null-Text Optimize's 'reconstruction', or Edited Sample's batch: row 0 is the reconstruction, later rows are edits)."),
            ],
            outputs=[
                io.Float.Output("psnr", display_name="psnr", tooltip=f"PSNR of row 0 in dB (data range 1; identical images give {PSNR_CAP_DB:g})."),
                io.Float.Output("ssim", display_name="ssim", tooltip=f"SSIM of row 0 (Gaussian window {SSIM_WINDOW}, sigma 1.5, per RGB channel averaged); 1 = identical."),
            ],
        )

    @classmethod
    def execute(cls, source, reconstruction) -> io.NodeOutput:
        results = compare_images(source, reconstruction)
        lines = []
        for i, (p, s) in enumerate(results):
            label = "reconstruction" if i == 0 else f"row {i}"
            p_txt = f"{p:.2f} dB" + (" (identical)" if p >= PSNR_CAP_DB else "")
            lines.append(f"{label}: PSNR {p_txt}, SSIM {s:.4f}")
        if source.shape[0] > 1:
            lines.append(f"(source has {source.shape[0]} images; compared with the first)")
        p0, s0 = results[0]
        # psnr/ssim also as numbers (row 0), for scripts reading the history (the batch runner's summary)
        return io.NodeOutput(p0, s0, ui={"text": ["\n".join(lines)], "psnr": [float(p0)], "ssim": [float(s0)]})
