"""Shared helpers for the tests: encode prompts, make a test latent, run the nodes' functions, run js/ntp_words.js."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_words(calls: list) -> list:
    """Call js/ntp_words.js under node: ``[[name, *args], ...]`` -> the results (a function's return value, or the
    value of an exported constant). Skips the test where node is not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (Node.js) not found: the JS word-rule tests need it (apt-get install -y nodejs)")
    proc = subprocess.run([node, str(REPO_ROOT / "tests" / "js" / "run_words.mjs")], input=json.dumps({"calls": calls}),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


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


def edit_graph(loader: dict, source: str = "a cat sitting on a table", target: str = "a tiger sitting on a table",
               prefix: str = "ntp_graph") -> dict:
    """The API prompt of the whole edit: ``loader`` (node "1", outputs MODEL, CLIP, VAE) -> CLIP Text Encode (source,
    "") -> LoadImage photo.png -> VAE Encode -> DDIM Invert (4 steps) -> Null-Text Optimize (2 inner steps) ->
    Attention Controller (replace, reweight tiger=2, blend cat/tiger) -> Edited Sample -> VAE Decode -> Save Image
    (node "11")."""
    return {
        "1": loader,
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": source, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "NTP_DDIMInvert", "inputs": {"model": ["1", 0], "source": ["2", 0], "latent": ["5", 0], "steps": 4}},
        "7": {"class_type": "NTP_NullTextOptimize", "inputs": {"model": ["1", 0], "source": ["2", 0], "null": ["3", 0],
                                                           "inversion": ["6", 0], "guidance": 7.5, "inner_steps": 2, "epsilon": 1e-5}},
        "8": {"class_type": "NTP_AttentionController", "inputs": {
            "clip": ["1", 1], "source_prompt": source, "target_prompts": target, "mode": "replace",
            "cross_replace": 0.8, "self_replace": 0.5, "word_windows": "", "reweight": "tiger=2", "blend_words": "cat, tiger",
            "blend_threshold": 0.3, "blend_start": 0.2}},
        "9": {"class_type": "NTP_EditedSample", "inputs": {"model": ["1", 0], "inversion": ["6", 0], "null_embeddings": ["7", 0],
                                                        "source": ["2", 0], "guidance": 7.5, "target": ["8", 2], "control": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": prefix}},
    }


def blend_regions(out: torch.Tensor, cross_maps: torch.Tensor, control, steps: int, hw: tuple[int, int]) -> tuple:
    """(mask fraction, max |edit - source| outside the final local-blend mask, inside it) for row 1 of ``out``."""
    from nulltext_p2p.nodes.common import build_edit

    mask = build_edit(control, steps).blend_mask(cross_maps.unsqueeze(1), hw)[1, 0].bool()
    outside = float((out[1] - out[0]).abs()[:, ~mask].max()) if (~mask).any() else 0.0
    inside = float((out[1] - out[0]).abs()[:, mask].max()) if mask.any() else 0.0
    return float(mask.float().mean()), outside, inside


def control_for(clip, target: str, source: str = "a cat sitting on a table", **kw):
    """``build_control`` (Attention Controller) with the paper's defaults (replace, cross 0.8, self 0.5, blend
    threshold 0.3 from 0.2, no reweight/blend words); ``kw`` overrides any of them."""
    from nulltext_p2p.nodes.attention_controller import build_control

    args = dict(mode="replace", cross_replace=0.8, self_replace=0.5, word_windows="", reweight="", blend_words="",
                blend_threshold=0.3, blend_start=0.2)
    args.update(kw)
    return build_control(clip, source, target, **args)


def tiny_loader_node(build, doc: str) -> type:
    """A test-only loader node class: ``seed`` -> the MODEL, CLIP and VAE of ``build(seed=seed)`` (the tiny models are
    built in-process; the host's loaders cannot detect them)."""

    class TinyLoader:
        __doc__ = doc
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 100})}}

        def load(self, seed):
            return tuple(build(seed=seed))

    return TinyLoader
