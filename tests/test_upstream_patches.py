"""Other packs' attention patches stay in effect inside Edited Sample and Attention Maps (host/attention_patch.py).

Through the host's execution engine with the host's own patch nodes (SelfAttentionGuidance,
PerturbedAttentionGuidance, HyperTile) and a test-only node that sets an attn2 replace patch on every block the way
IPAdapter's ``CrossAttentionPatch`` does (plain attention plus a weighted attention over image tokens, cond and
uncond rows with their own image embeddings), or an ``optimized_attention_override`` doing the same.

The inversion is made with the unpatched model and shared by every run (cached); the patch node feeds Edited
Sample only, so each run samples 4 steps.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from nulltext_p2p.host.compat import cached_node_outputs, new_prompt_executor
from helpers import ServerStub, edit_graph, make_test_image

pytestmark = pytest.mark.host

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"


class ImageAttentionPatch:
    """An IPAdapter-style attn2 replace patch: ``attention(q, k, v) + weight * attention(q, k_img, v_img)``, the image
    tokens projected by fixed random maps; conditional rows use a random image embedding, unconditional rows zeros
    (IPAdapter's negative image embedding). ``weight`` 0 returns the host's attention unchanged."""

    def __init__(self, weight: float, tokens: int = 4, width: int = 16, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = weight
        self.cond_tokens = torch.randn(1, tokens, width, generator=g)
        self.projections: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.seed = seed
        self.width = width

    def _project(self, inner: int) -> tuple[torch.Tensor, torch.Tensor]:
        if inner not in self.projections:
            g = torch.Generator().manual_seed(self.seed + inner)
            self.projections[inner] = (torch.randn(self.width, inner, generator=g), torch.randn(self.width, inner, generator=g))
        return self.projections[inner]

    def image_attention(self, q: torch.Tensor, heads: int, cond_or_uncond: list[int]) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention

        chunk = q.shape[0] // len(cond_or_uncond)
        emb = torch.cat([(self.cond_tokens if c == 0 else torch.zeros_like(self.cond_tokens)).expand(chunk, -1, -1)
                         for c in cond_or_uncond]).to(q.device, q.dtype)
        wk, wv = self._project(q.shape[-1])
        return optimized_attention(q, emb @ wk.to(q), emb @ wv.to(q), heads)

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        out = optimized_attention(q, k, v, extra_options["n_heads"])
        if self.weight == 0:
            return out
        return out + self.weight * self.image_attention(q, extra_options["n_heads"], extra_options["cond_or_uncond"])


class ImageAttentionOverride:
    """The same addition as an ``optimized_attention_override`` (on cross-attention only: keys of text length)."""

    def __init__(self, weight: float) -> None:
        self.patch = ImageAttentionPatch(weight)

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        out = func(q, k, v, heads, *args, **kwargs)
        options = kwargs.get("transformer_options") or {}
        if self.patch.weight == 0 or k.shape[1] == q.shape[1] or q.dim() != 3:
            return out
        return out + self.patch.weight * self.patch.image_attention(q, heads, options.get("cond_or_uncond") or [0])


class TestImageAttention:
    """Test-only node: the MODEL with ``ImageAttentionPatch`` on every attn2 block (mode 'replace', full block keys as
    IPAdapter sets them) or ``ImageAttentionOverride`` in its transformer options (mode 'override')."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
                             "mode": (["replace", "override"],)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, weight, mode):
        from nulltext_p2p.host.unet_layers import attention_layers

        m = model.clone()
        if mode == "override":
            m.model_options["transformer_options"]["optimized_attention_override"] = ImageAttentionOverride(weight)
            return (m,)
        patch = ImageAttentionPatch(weight)
        for layer in attention_layers(m.model.diffusion_model):
            if layer.has_cross:
                m.set_model_attn2_replace(patch, *layer.key)
        return (m,)


@pytest.fixture(scope="module")
def engine(host, checkpoint_dir, tmp_path_factory):
    import execution
    import folder_paths
    import nodes
    import numpy as np
    from PIL import Image

    from nulltext_p2p.runner.comfy_host import init_nodes, setup_host

    asyncio.run(init_nodes(setup_host(host.path, cpu=True)))
    nodes.NODE_CLASS_MAPPINGS["NTPTest_ImageAttention"] = TestImageAttention
    for node_id in ("SelfAttentionGuidance", "PerturbedAttentionGuidance", "HyperTile"):
        assert node_id in nodes.NODE_CLASS_MAPPINGS, node_id
    io_dir = tmp_path_factory.mktemp("upstream_io")
    folder_paths.set_input_directory(str(io_dir / "input"))
    folder_paths.set_output_directory(str(io_dir / "output"))
    (io_dir / "input").mkdir(exist_ok=True)
    Image.fromarray((make_test_image(128, 128)[0].numpy() * 255).astype(np.uint8)).save(io_dir / "input" / "photo.png")
    yield execution, new_prompt_executor(execution, ServerStub())
    nodes.NODE_CLASS_MAPPINGS.pop("NTPTest_ImageAttention", None)


def run_graph(engine, ckpt: str, patch: dict | None, target: str | None = TARGET) -> tuple[torch.Tensor, torch.Tensor]:
    """Edited Sample's latent batch and its cross-attention maps (the ``attention`` output Attention Maps draws),
    with ``patch`` (an API node taking ``model`` from the loader) between the loader and Edited Sample."""
    execution, executor = engine
    api = edit_graph({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}, source=SOURCE,
                     target=target or TARGET)
    api["8"]["inputs"].update(reweight="", blend_words="")
    if patch is not None:
        api["20"] = {"class_type": patch["class_type"], "inputs": {**patch["inputs"], "model": ["1", 0]}}
        api["9"]["inputs"]["model"] = ["20", 0]
    if target is None:  # the reconstruction alone, saved
        for name in ("target", "control"):
            del api["9"]["inputs"][name]
        del api["8"]
    else:  # Attention Maps is the output (it draws the maps Edited Sample recorded)
        del api["10"], api["11"]
        api["12"] = {"class_type": "NTP_AttentionMaps", "inputs": {"attention": ["9", 1], "row": 0, "words": "",
                                                                  "normalize": "each", "columns": 0}}
    valid = asyncio.run(execution.validate_prompt("t", api, None))
    assert valid[0], f"validation failed: {valid[1]} {valid[3]}"
    executor.execute(api, "upstream", {}, valid[2])
    errors = [d for e, d in executor.status_messages if e == "execution_error"]
    assert executor.success, errors
    latent, attention, _ = cached_node_outputs(executor.caches.outputs, "9")
    return latent[0]["samples"].double(), attention[0].cross_maps.double()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the larger tensor's largest element."""
    return float((a - b).abs().max() / max(a.abs().max(), b.abs().max()))


IPA = {"class_type": "NTPTest_ImageAttention", "inputs": {"weight": 1.0, "mode": "replace"}}
IPA_NOOP = {"class_type": "NTPTest_ImageAttention", "inputs": {"weight": 0.0, "mode": "replace"}}
OVERRIDE = {"class_type": "NTPTest_ImageAttention", "inputs": {"weight": 1.0, "mode": "override"}}
SAG = {"class_type": "SelfAttentionGuidance", "inputs": {"scale": 0.5, "blur_sigma": 2.0}}
PAG = {"class_type": "PerturbedAttentionGuidance", "inputs": {"scale": 3.0}}
# tile 32 px = 4 latent pixels: the 16x16 level in 4x4 tiles of 4x4, the 8x8 level (where self-attention is edited)
# in 2x2 tiles
HYPERTILE = {"class_type": "HyperTile", "inputs": {"tile_size": 32, "swap_size": 1, "max_depth": 1, "scale_depth": False}}


@pytest.fixture(scope="module")
def baseline(engine, tiny_checkpoint_name):
    return run_graph(engine, tiny_checkpoint_name, None)


def test_a_patch_that_changes_nothing_is_bit_identical_to_no_patch(engine, tiny_checkpoint_name, baseline):
    latent, maps = run_graph(engine, tiny_checkpoint_name, IPA_NOOP)
    assert torch.equal(latent, baseline[0])
    assert torch.equal(maps, baseline[1])


@pytest.mark.parametrize("patch", [IPA, OVERRIDE], ids=["replace_patch", "attention_override"])
def test_image_attention_acts_on_every_row_and_keeps_the_identities(engine, tiny_checkpoint_name, baseline, patch):
    latent, maps = run_graph(engine, tiny_checkpoint_name, patch)
    # in effect on the reconstruction and on the edited row, and in what Attention Maps draw
    assert rel(latent[0], baseline[0][0]) > 1e-2 and rel(latent[1], baseline[0][1]) > 1e-2
    assert rel(maps, baseline[1]) > 1e-3
    # the reconstruction row equals the patch's own sampling without the pack's edit
    recon, _ = run_graph(engine, tiny_checkpoint_name, patch, target=None)
    assert rel(latent[0], recon[0]) < 1e-4
    # identical source and target prompts: the edit is the reconstruction, under the patch
    same, _ = run_graph(engine, tiny_checkpoint_name, patch, target=SOURCE)
    assert rel(same[1], same[0]) < 1e-4
    assert rel(same[0], recon[0]) < 1e-4
    # and the edit row carries the image attention: it differs from the plain edit as the reconstruction does
    assert rel(latent[1], baseline[0][1]) > 0.5 * rel(latent[0], baseline[0][0])


@pytest.mark.parametrize("patch", [SAG, PAG, HYPERTILE], ids=["SAG", "PAG", "HyperTile"])
def test_host_attention_patches_run_to_the_end_and_are_in_effect(engine, tiny_checkpoint_name, baseline, patch):
    latent, maps = run_graph(engine, tiny_checkpoint_name, patch)
    assert torch.isfinite(latent).all()
    assert rel(latent[0], baseline[0][0]) > 1e-3 and rel(latent[1], baseline[0][1]) > 1e-3
    recon, _ = run_graph(engine, tiny_checkpoint_name, patch, target=None)
    assert rel(latent[0], recon[0]) < 1e-4
    same, _ = run_graph(engine, tiny_checkpoint_name, patch, target=SOURCE)
    assert rel(same[1], same[0]) < 1e-4


def test_the_input_model_keeps_its_patches(host, tiny_model):
    """Edited Sample patches a clone: the upstream patch stays on the input MODEL, nothing of the pack's is added."""
    from nulltext_p2p.host.attention_patch import P2PAttentionPatch
    from nulltext_p2p.host.unet_layers import attention_layers, blend_downsample
    from nulltext_p2p.core.schedule import DDIMSchedule

    (model,) = TestImageAttention().patch(tiny_model[0], 1.0, "replace")
    before = {k: dict(v) for k, v in model.model_options["transformer_options"]["patches_replace"].items()}
    clone = model.clone()
    layers = attention_layers(clone.model.diffusion_model)
    schedule = DDIMSchedule.from_alphas_cumprod(torch.linspace(0.999, 0.01, 1000, dtype=torch.float64), 4)
    patch = P2PAttentionPatch(None, schedule, 1, layers, blend_downsample(layers))
    patch.install(clone, layers)
    after = model.model_options["transformer_options"]["patches_replace"]
    assert {k: dict(v) for k, v in after.items()} == before
    installed = clone.model_options["transformer_options"]["patches_replace"]
    cross = [l for l in layers if l.has_cross]
    assert all(installed["attn2"][l.key] == patch.cross for l in cross)
    # the wrapped patch is the input's (0.3.64 deep-copies model options on clone: equal type and weight)
    assert all(type(patch.upstream[("attn2", l.key)].replace) is ImageAttentionPatch
               and patch.upstream[("attn2", l.key)].replace.weight == 1.0 for l in cross)
    # self-attention had no upstream patch: the pack's sits at the block level, where PAG's per-call replace goes
    assert all(installed["attn1"][l.key[:2]] == patch.self_attn for l in layers)

