"""Shared helpers for the host tests: encode prompts, make a test latent, run the nodes' functions."""

from __future__ import annotations

import torch


def encode(clip, text: str) -> list:
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def make_test_image(h: int = 128, w: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth, deterministic RGB image [1, h, w, 3] in [0, 1] (a blob on a gradient)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blob = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.15)
    base = torch.stack([0.3 + 0.3 * xx, 0.5 + 0.2 * yy, 0.4 + 0.1 * xx * yy], dim=-1)
    img = base + blob[..., None] * torch.tensor([0.5, -0.2, 0.1]) + 0.02 * torch.randn(h, w, 3, generator=g)
    return img.clamp(0, 1).unsqueeze(0)


def image_latent(model, h: int = 16, w: int = 16, seed: int = 0) -> dict:
    """A LATENT as VAE Encode would give it (raw VAE scale) with the statistics of a real SD image latent:
    smooth structure, std about 1 in model space. (The tiny random TAESD encodes everything to almost 0.)"""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 4, max(h // 4, 1), max(w // 4, 1), generator=g)
    z = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    z = z + 0.3 * torch.randn(1, 4, h, w, generator=g)
    z = z / z.std()
    return {"samples": model.model.process_latent_out(z)}


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


class ServerStub:
    """What PromptExecutor needs from the web server."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))
