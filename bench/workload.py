"""The bench's workload: the host (ComfyUI), the model with its CLIP and VAE, and the inputs every phase works on.

``start_host`` runs first; everything after it may import the pack as ``nulltext_p2p`` and the tests' helpers."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent

SOURCE_PROMPT = "a cat sitting on a table"
TARGET_PROMPT = "a tiger sitting on a table"  # the edit phase's


def import_pack() -> None:
    """The repo as package ``nulltext_p2p`` (a symlink in a temp dir), without the repo root on sys.path."""
    link_dir = tempfile.mkdtemp(prefix="ntp_bench_")
    os.symlink(REPO, os.path.join(link_dir, "nulltext_p2p"), target_is_directory=True)
    sys.path.insert(0, link_dir)
    sys.path.insert(0, str(REPO / "tests"))  # tiny_model, helpers
    sys.path.insert(0, str(REPO / "bench"))  # reference_nti, random_unet
    __import__("nulltext_p2p")


#: ``--random-unet`` choices built by bench/random_mmdit.py (the flow-matching transformers); the others are
#: bench/random_unet.py's SD UNets.
RANDOM_MMDITS = ("sd35m", "qwen-image", "flux-dev")
#: The flow family of each flow model option: its ``names[0]`` in host/families.
FLOW_FAMILY = {"sd35m": "SD3", "qwen-image": "Qwen-Image", "flux-dev": "Flux", "tiny_sd3": "SD3",
               "tiny_qwen_image": "Qwen-Image"}
MODEL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def uses_random_unet(args: argparse.Namespace) -> bool:
    """``--random-unet``: a random-weight UNet or transformer built with the host's classes (bench/random_unet.py,
    bench/random_mmdit.py)."""
    return args.random_unet is not None


def uses_random_mmdit(args: argparse.Namespace) -> bool:
    """``--random-unet sd35m`` / ``qwen-image``: a random-weight flow transformer (bench/random_mmdit.py)."""
    return args.random_unet in RANDOM_MMDITS


def flow_family(args: argparse.Namespace) -> Optional[str]:
    """"SD3" / "Qwen-Image" for the flow-matching model options (``--tiny-sd3``, ``--tiny-qwen-image``,
    ``--random-unet sd35m`` / ``qwen-image``), else None (the SD 1.x/SDXL bench)."""
    if getattr(args, "tiny_sd3", False):
        return FLOW_FAMILY["tiny_sd3"]
    if getattr(args, "tiny_qwen_image", False):
        return FLOW_FAMILY["tiny_qwen_image"]
    return FLOW_FAMILY.get(args.random_unet) if args.random_unet else None


def model_dtype(args: argparse.Namespace) -> Any:
    """The main model's dtype (``--model-dtype``; flow models only; default float32)."""
    import torch

    return getattr(torch, MODEL_DTYPES[getattr(args, "model_dtype", None) or "fp32"])


def uses_tiny_model(args: argparse.Namespace) -> bool:
    """No model named: the tiny random SD 1.x checkpoint or, with ``--tiny-sdxl`` / ``--tiny-sd3`` /
    ``--tiny-qwen-image``, the tests' tiny model of that family."""
    return args.checkpoint is None and not uses_random_unet(args)


def start_host(args: argparse.Namespace) -> Any:
    """Set up the host (on the CPU for the tiny models, and for the random UNets without a GPU) and make the repo
    importable as ``nulltext_p2p``; returns the host (``runner.comfy_host.setup_host``)."""
    sys.path.insert(0, str(REPO))
    from runner.comfy_host import find_comfyui, setup_host  # noqa: E402

    random_mode = uses_random_unet(args)
    tiny = uses_tiny_model(args)
    sys.path.insert(0, str(REPO / "tests"))
    from torchvision_placeholder import install_torchvision_placeholder

    if install_torchvision_placeholder():
        print("bench: torchvision unusable here, placeholder installed (SD 1.x/SDXL UNets never use it)")
    import torch

    no_gpu = random_mode and not torch.cuda.is_available()  # the tiny models always run on the CPU
    if no_gpu and not args.cpu:
        print("bench: no CUDA GPU: the random UNet is built on the CPU")
    host = setup_host(find_comfyui(args.comfyui), cpu=args.cpu or tiny or no_gpu)
    if str(REPO) in sys.path:
        sys.path.remove(str(REPO))
    import_pack()
    return host


@dataclass
class RunSettings:
    """What the command line and the host's device fix before any model is built."""

    args: argparse.Namespace
    host: Any
    device: Any  # the host's torch device
    cuda: bool
    on_cpu: bool
    steps: int
    size: int  # image side in px
    random_mode: bool
    tiny: bool
    checkpoint: Optional[str]  # the checkpoint file (the tiny SD 1.x one is built in a temp dir), or None


def resolve_settings(args: argparse.Namespace, host: Any) -> RunSettings:
    """The device, the step count and image size (defaults per model), and the checkpoint file (the tiny SD 1.x
    checkpoint is built here)."""
    import torch

    random_mode, tiny = uses_random_unet(args), uses_tiny_model(args)
    device = host.model_management.get_torch_device()
    flow = flow_family(args)
    if flow is not None:  # the family's usual steps and guidance (SD3.5: 28, 4.5; Qwen-Image: 30, 4.0)
        from nulltext_p2p.host.families import family_named

        family = family_named(flow)
        steps = args.steps or family.default_steps
        if args.guidance is None:
            args.guidance = family.default_guidance
    else:
        steps = args.steps or 50
    if args.guidance is None:
        args.guidance = 7.5
    if random_mode:
        default_size = 128 if args.random_scale == "tiny" else (1024 if args.random_unet in ("sdxl", *RANDOM_MMDITS) else 512)
    else:
        default_size = (128 if (args.tiny_sdxl or flow) else 64) if tiny else 512
    ckpt = args.checkpoint
    if tiny and not args.tiny_sdxl and flow is None:
        from tiny_model import build_tiny_sd15_checkpoint

        ckpt = build_tiny_sd15_checkpoint(os.path.join(tempfile.mkdtemp(prefix="ntp_bench_ckpt_"), "tiny.safetensors"))
    return RunSettings(args=args, host=host, device=device, cuda=torch.device(device).type == "cuda",
                       on_cpu=torch.device(device).type == "cpu", steps=steps, size=args.size or default_size,
                       random_mode=random_mode, tiny=tiny, checkpoint=ckpt)


def set_flush_denormal(args: argparse.Namespace) -> None:
    """``--flush-denormal``: flush denormal floats for the whole run (says so when the CPU cannot)."""
    import torch

    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("bench: this CPU cannot flush denormals; timings as without --flush-denormal")


def load_model(settings: RunSettings, dtype: Any = None) -> tuple:
    """(MODEL, CLIP, VAE) in ``dtype`` (None: the host's choice; random models: float32; flow models:
    ``--model-dtype``)."""
    import torch

    args = settings.args
    if uses_random_mmdit(args):
        from random_mmdit import build_random_mmdit, structure_clip

        m = build_random_mmdit(args.random_unet, settings.device, dtype or model_dtype(args), args.seed,
                               args.random_scale, args.random_layers)
        return m, (structure_clip(args.random_unet, args.seed) if dtype is None else None), None
    if getattr(args, "tiny_sd3", False):
        from tiny_sd3 import build_tiny_sd3

        return build_tiny_sd3(args.seed, dtype or model_dtype(args))
    if getattr(args, "tiny_qwen_image", False):
        from tiny_qwen_image import build_tiny_qwen_image, build_tiny_qwen_image_model

        if dtype is not None:  # another dtype of the same model (--precision): the transformer alone
            return build_tiny_qwen_image_model(args.seed, dtype), None, None
        return build_tiny_qwen_image(args.seed, model_dtype(args))
    if settings.random_mode:
        from random_unet import build_random_model, random_clip

        m = build_random_model(args.random_unet, settings.device, dtype or torch.float32, args.seed, args.random_scale)
        return m, (random_clip(m, args.seed) if dtype is None else None), None
    if args.tiny_sdxl:
        from tiny_sdxl import build_tiny_sdxl

        return build_tiny_sdxl(dtype=dtype or torch.float32)
    import comfy.sd

    opts = {} if dtype is None else {"dtype": dtype}
    return comfy.sd.load_checkpoint_guess_config(settings.checkpoint, output_vae=True, output_clip=True,
                                                 embedding_directory=None, model_options=opts)[:3]


@dataclass
class Workload:
    """The model every phase runs on (loaded on the device) and the inputs."""

    model: Any
    clip: Any  # None: the checkpoint has none (no prompts, no edit)
    vae: Any  # None for the random UNets (no PSNR)
    family: str
    model_name: str  # the report's "checkpoint"
    source: Any  # CONDITIONING of SOURCE_PROMPT (None without a CLIP)
    null: Any  # CONDITIONING of "" (None without a CLIP)
    image: Any  # [1, H, W, 3] in [0, 1]: --image, or a synthetic test image
    latent: dict  # the LATENT that is inverted
    synthetic_latent: bool  # made without the VAE (tiny and random models without --image)
    text: Any = None  # random_mmdit.RandomText: the prompts' conditioning (random values); None: the CLIP's
    model_info: Optional[dict] = None  # the report's settings["model"] (flow models: dtype, parameters, layers)


def input_image(path: Optional[str], size: int) -> Any:
    """``path`` resized to ``size`` x ``size`` as an IMAGE tensor, or the synthetic test image."""
    import torch
    from helpers import make_test_image  # tests/helpers.py

    if path:
        from PIL import Image
        import numpy as np

        im = Image.open(path).convert("RGB").resize((size, size), Image.LANCZOS)
        return torch.from_numpy(np.asarray(im).astype("float32") / 255.0)[None]
    return make_test_image(size, size)


def flow_latent(model, family: str, h: int, w: int, seed: int = 0) -> dict:
    """A 16-channel LATENT ([1, 16, h, w]; Qwen-Image [1, 16, 1, h, w], as its VAE gives) with the statistics of
    ``helpers.image_latent``: smooth structure, std 1 in model space."""
    import torch

    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 16, max(h // 4, 1), max(w // 4, 1), generator=g)
    z = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    z = z + 0.3 * torch.randn(1, 16, h, w, generator=g)
    z = z / z.std()
    if family == "Qwen-Image":
        z = z.unsqueeze(2)
    return {"samples": model.model.process_latent_out(z)}


def build_workload(settings: RunSettings) -> Workload:
    """Load the model (and say what was built), encode the prompts, make the image and latent, and load the model
    on the device."""
    from helpers import encode, image_latent  # tests/helpers.py
    from nulltext_p2p.host.families import model_family_name

    args, size = settings.args, settings.size
    model, clip, vae = load_model(settings)
    family = model_family_name(model, "bench")
    flow = flow_family(args)
    text = model_info = None
    if uses_random_mmdit(args):
        from random_mmdit import RandomText, parameters

        model_name = f"random-{args.random_unet}-{args.random_scale}"
        text = RandomText(args.random_unet, clip, args.seed)
        cfg = model.model.model_config.unet_config
        model_info = {"parameters": parameters(model), "dtype": str(model.model.get_dtype()).replace("torch.", ""),
                      "manual_cast": str(model.model.manual_cast_dtype).replace("torch.", ""),
                      "blocks": cfg.get("depth", cfg.get("num_layers")), "text": "random tensors (RandomText)"}
        print(f"bench: {model_name}: {model_info['parameters'] / 1e6:.1f} M transformer parameters, "
              f"{model_info['blocks']} blocks, {model_info['dtype']} ({family}), built on {settings.device}")
    elif settings.random_mode:
        from random_unet import unet_parameters

        model_name = f"random-{args.random_unet}-{args.random_scale}"
        print(f"bench: {model_name}: {unet_parameters(model) / 1e6:.1f} M UNet parameters ({family}), built on {settings.device}")
    elif flow is not None:
        model_name = "tiny-sd3" if args.tiny_sd3 else "tiny-qwen-image"
        model_info = {"parameters": sum(p.numel() for p in model.model.diffusion_model.parameters()),
                      "dtype": str(model.model.get_dtype()).replace("torch.", "")}
    else:
        model_name = "tiny-sdxl" if args.tiny_sdxl else ("tiny" if settings.tiny else settings.checkpoint)
    source = null = None
    if text is not None:
        source, null = text.encode(SOURCE_PROMPT), text.encode("")
    elif clip is not None:
        source, null = encode(clip, SOURCE_PROMPT), encode(clip, "")
    image = input_image(args.image, size)
    synthetic_latent = (settings.tiny or settings.random_mode) and not args.image
    if not synthetic_latent:
        latent = {"samples": vae.encode(image)}
    elif flow is not None:
        latent = flow_latent(model, flow, size // 8, size // 8, seed=args.seed)
    else:
        latent = image_latent(model, size // 8, size // 8, seed=args.seed)
    settings.host.model_management.load_models_gpu([model])
    return Workload(model=model, clip=clip, vae=vae, family=family, model_name=model_name, source=source, null=null,
                    image=image, latent=latent, synthetic_latent=synthetic_latent, text=text, model_info=model_info)
