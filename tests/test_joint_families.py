"""SD3/SD3.5 and Qwen-Image: flow-matching inversion, null-text optimisation and Prompt-to-Prompt on joint attention,
on tiny random-weight models built with the host's own classes (tests/tiny_sd3.py, tests/tiny_qwen_image.py).

Random weights cannot show edit quality; these tests check exactness against float64 transcriptions of the Euler
equations, the identities of the editing hook, the null-text gain over plain inversion, the word -> token positions
against the host's tokenizers, and that no weight is ever differentiated.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from helpers import control_for, encode, mse

pytestmark = pytest.mark.host

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"
STEPS = 8
LATENT_SHAPE = {"SD3": (1, 16, 16, 24), "Qwen-Image": (1, 16, 1, 16, 24), "Chroma": (1, 16, 16, 24),
                "Flux": (1, 16, 16, 24)}  # 128 x 192 px
FIXTURE = {"SD3": "tiny_sd3", "Qwen-Image": "tiny_qwen_image", "Chroma": "tiny_chroma", "Flux": "tiny_flux"}
#: The families null-text inversion runs on (Flux-dev is guidance-distilled: Direct Inversion at guidance 1)
NULL_TEXT = ["SD3", "Qwen-Image", "Chroma"]
FAMILIES = [*NULL_TEXT, "Flux"]
_MADE: dict = {}


def _latent(family: str) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"samples": torch.randn(*LATENT_SHAPE[family], generator=g)}


def _made(request, name: str) -> SimpleNamespace:
    """The family's tiny model, its inversion (8 steps) and per-step values at the family's default guidance:
    null-text optimisation, or for Flux-dev the plain conditional values at guidance 1 (made once per module)."""
    from nulltext_p2p.host.families import family_of
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    if name in _MADE:
        return _MADE[name]
    model, clip, vae = request.getfixturevalue(FIXTURE[name])
    family = family_of(model, "test")
    source, null = encode(clip, SOURCE), encode(clip, "")
    latent = _latent(name)
    with torch.inference_mode():  # as the host's executor runs nodes
        inv = run_inversion(model, source, latent, STEPS)
        if name in NULL_TEXT:
            value, final = run_null_text(model, source, null, inv, family.default_guidance, 10, 1e-5)
        else:  # guidance 1, no offsets: the plain conditional sampling (Direct Inversion: its own test)
            value, final = run_fast_inversion(model, source, null, inv, "negative-prompt", family.default_guidance)
    _MADE[name] = SimpleNamespace(name=name, model=model, clip=clip, family=family, source=source, null=null,
                                  latent=latent, inv=inv, value=value, final=final, guidance=family.default_guidance)
    return _MADE[name]


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request):
    """Every joint-attention family with its inversion and per-step values (null-text; Flux-dev: guidance 1)."""
    return _made(request, request.param)


@pytest.fixture(scope="module", params=NULL_TEXT)
def nt(request):
    """The families with null-text inversion, their inversion and optimised null embeddings."""
    return _made(request, request.param)


@pytest.fixture(scope="module")
def flux(request):
    """Flux-dev and its inversion."""
    return _made(request, "Flux")


def _unet64(model):
    return copy.deepcopy(model.model.diffusion_model).to(torch.float64)


def _velocity64(unet64, model, x: torch.Tensor, sigma: float, context: torch.Tensor, extra: dict) -> torch.Tensor:
    """The raw diffusion model's output (the velocity of a CONST flow model) in float64 (0.33's rotary-embedding
    kernels take no float64: the host's pure-torch path, ``compat.pure_torch_rope``); ``extra``: the model's other
    inputs (``y``, ``guidance``)."""
    from nulltext_p2p.host.compat import pure_torch_rope

    t = model.model.model_sampling.timestep(torch.tensor([sigma], dtype=torch.float64)).to(torch.float64)
    kw = {k: v.to(torch.float64) for k, v in extra.items()}
    with pure_torch_rope():
        return unet64(x.to(torch.float64), t, context=context.to(torch.float64), **kw).to(torch.float64)


def _parts(fam, conditioning) -> tuple[torch.Tensor, dict]:
    """(context, the model's other inputs) of a CONDITIONING as the host's sampler would pass them."""
    extras = conditioning[0][1]
    kw = {}
    if fam.family.pooled_width(fam.model):
        kw["y"] = extras["pooled_output"]
    if fam.name == "Flux":
        kw["guidance"] = torch.tensor([float(extras.get("guidance", 3.5))])
    if fam.name == "Chroma":
        kw["guidance"] = torch.tensor([0.0])
    return conditioning[0][0], kw


def _packed_parts(fam, packed: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """:func:`_parts` of a tensor as the family's ``text_condition`` packs it."""
    return _parts(fam, fam.family.to_conditioning(packed, fam.model))


# ----------------------------------------------------------------------------------------------------------------
# The family and its schedule
# ----------------------------------------------------------------------------------------------------------------
def test_the_family_is_detected_and_uses_the_hosts_sigmas(fam):
    import comfy.samplers

    assert fam.inv.model_family == fam.name
    ms = fam.model.get_model_object("model_sampling")
    host = comfy.samplers.calculate_sigmas(ms, "simple", STEPS).to(torch.float64)
    assert torch.allclose(fam.inv.schedule.sigmas().to(torch.float64), host, atol=1e-7)
    assert fam.inv.schedule.sigmas_[0] == pytest.approx(1.0) and fam.inv.schedule.sigmas_[-1] == 0.0
    assert fam.inv.latents.shape == (STEPS + 1, *LATENT_SHAPE[fam.name])


def test_steps_0_is_the_familys_usual_step_count(fam):
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    with torch.inference_mode():
        inv = run_inversion(fam.model, fam.source, fam.latent, 0)
    assert inv.steps == fam.family.default_steps == {"SD3": 28, "Qwen-Image": 30, "Chroma": 26, "Flux": 28}[fam.name]


def test_a_latent_without_the_frame_axis_gets_the_models_layout(fam):
    """Qwen-Image's latents are [1, 16, 1, h, w] (Wan 2.1); a 4-D one from a 2-D 16-channel VAE gets the frame axis
    (as the host's samplers add it), and SD3 takes a 5-D one with one frame as 4-D: the same inversion either way."""
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    samples = fam.latent["samples"]
    other = samples.squeeze(2) if samples.ndim == 5 else samples.unsqueeze(2)
    with torch.inference_mode():
        a = run_inversion(fam.model, fam.source, {"samples": other}, 2)
        b = run_inversion(fam.model, fam.source, fam.latent, 2)
    assert a.latents.shape == b.latents.shape == (3, *LATENT_SHAPE[fam.name])
    assert torch.equal(a.latents, b.latents)


def test_inversion_equals_a_float64_euler_transcription(fam):
    """x_i = x_{i+1} + (sigma_i - sigma_{i+1}) v(x_{i+1}, sigma_i), from the clean latent, source prompt, guidance 1,
    written out here on the raw diffusion model in float64: relative deviation below 1e-4 (float32 rounding)."""
    unet64 = _unet64(fam.model)
    ctx, extra = _parts(fam, fam.source)
    sig = fam.inv.schedule.sigmas_
    x = fam.model.model.process_latent_in(fam.latent["samples"].to(torch.float32)).to(torch.float64)
    ref = [x]
    with torch.no_grad():
        for i in reversed(range(STEPS)):
            x = x + (sig[i] - sig[i + 1]) * _velocity64(unet64, fam.model, x, sig[i], ctx, extra)
            ref.append(x)
    ref = torch.stack(ref)
    rel = float((fam.inv.latents.to(torch.float64) - ref).abs().max() / ref.abs().max())
    print(f"{fam.name}: inversion vs float64 Euler, max relative deviation {rel:.2e}")
    assert rel < 1e-4


def test_guided_sampling_through_the_host_equals_a_float64_euler_transcription(nt):
    """Edited Sample's reconstruction row (the host's CFGGuider and sampler machinery with the pack's sampler
    function) equals x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (v_u + w (v_c - v_u)) in float64 with the per-step
    null embeddings: relative deviation below 1e-4."""
    from nulltext_p2p.nodes.edited_sample import run_edit

    fam = nt
    with torch.inference_mode():
        out, _ = run_edit(fam.model, fam.inv, fam.value, fam.source, None, None, fam.guidance, preview=False)
    unet64 = _unet64(fam.model)
    ctx, extra = _parts(fam, fam.source)
    sig = fam.inv.schedule.sigmas_
    x = fam.inv.x_T.to(torch.float64)
    with torch.no_grad():
        for i in range(STEPS):
            n_ctx, n_extra = _packed_parts(fam, fam.value.embeddings[i])
            v_c = _velocity64(unet64, fam.model, x, sig[i], ctx, extra)
            v_u = _velocity64(unet64, fam.model, x, sig[i], n_ctx, n_extra)
            x = x + (sig[i + 1] - sig[i]) * (v_u + fam.guidance * (v_c - v_u))
    rel = float((out[0].to(torch.float64) - x[0]).abs().max() / x.abs().max())
    print(f"{fam.name}: guided sampling vs float64 Euler, max relative deviation {rel:.2e}")
    assert rel < 1e-4


def test_flux_direct_inversion_reconstructs_the_photo_exactly(flux):
    """Flux-dev at guidance 1 with Direct Inversion (Fast Inversion): Edited Sample's source row lands on the photo's
    latent to float32 rounding (the offsets were made with the model's own guidance input, the sampler runs the
    conditional branch only), where the same sampling without the offsets misses it by the inversion's error; a word
    swap changes the edit row only."""
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    fam = flux
    z0 = fam.inv.latents[0]
    control, _, tgt = control_for(fam.clip, TARGET)
    with torch.inference_mode():
        value, final = run_fast_inversion(fam.model, fam.source, fam.null, fam.inv, "direct-inversion", 1.0)
        out, _ = run_edit(fam.model, fam.inv, value, fam.source, tgt, control, 1.0, preview=False)
    assert value.latent_offsets is not None and torch.equal(final, z0)
    rel = float((out[0] - z0).abs().max() / z0.abs().max())
    miss = float((fam.final - z0).abs().max() / z0.abs().max())
    print(f"Flux-dev Direct Inversion: reconstruction max relative deviation {rel:.2e}; without offsets {miss:.2e}")
    assert rel < 1e-5 and miss > 1e-3
    assert mse(out[1], out[0]) > 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Null-text optimisation
# ----------------------------------------------------------------------------------------------------------------
def test_null_text_reconstructs_at_least_10x_better_than_plain_inversion(nt):
    """At the family's default guidance, from x_T: guided Euler sampling with the optimised per-step null embeddings
    against the same with the plain empty-prompt embedding (what inversion without optimisation gives)."""
    fam = nt
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.unet import load_model

    load_model(fam.model)
    unet = fam.family.unet(fam.model, fam.inv.schedule)
    cond = fam.family.text_condition(fam.model, fam.source, "test", "source")
    null = fam.family.text_condition(fam.model, fam.null, "test", "null")
    with torch.no_grad():
        plain = ddim_sample(lambda x, t, c: unet.eps(x, t, c, 0), fam.inv.schedule, fam.inv.x_T, cond,
                            null.unsqueeze(0).repeat(STEPS, 1, 1, 1), fam.guidance)
    z0 = fam.inv.latents[0]
    plain_err, nt_err = mse(plain, z0), mse(fam.final, z0)
    print(f"{fam.name}: guidance {fam.guidance}, {STEPS} steps: latent MSE plain {plain_err:.4g}, "
          f"null-text {nt_err:.4g} ({plain_err / nt_err:.1f}x)")
    assert nt_err * 10 <= plain_err


def test_null_text_starts_where_the_family_says(nt):
    """SD3 optimises from the 'null' input (the reference); Qwen-Image and Chroma from the source prompt (their empty
    negatives are 5 and 1 tokens); the first step's embedding has that start's shape."""
    fam = nt
    want = fam.family.text_condition(fam.model, fam.null if fam.name == "SD3" else fam.source, "test", "x")
    assert fam.family.null_start == ("null" if fam.name == "SD3" else "source")
    assert fam.value.embeddings.shape[1:] == want.shape


def test_inner_iterations_and_early_stop(nt):
    fam = nt
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    with torch.inference_mode():
        capped, _ = run_null_text(fam.model, fam.source, fam.null, fam.inv, fam.guidance, 3, -1.0)
        stopped, _ = run_null_text(fam.model, fam.source, fam.null, fam.inv, fam.guidance, 10, 1.0)
    assert capped.iterations == [3] * STEPS  # a negative epsilon: never below the threshold
    assert stopped.iterations == [1] * STEPS  # every first loss is below 1.0 + i * 2e-5
    assert all(it <= 10 for it in fam.value.iterations) and len(fam.value.iterations) == STEPS


def test_no_weight_receives_a_gradient_and_the_model_is_left_as_it_was(nt):
    fam = nt
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    params = dict(fam.model.model.named_parameters())
    before = {n: (p.requires_grad, p.data_ptr()) for n, p in params.items()}
    with torch.inference_mode():
        run_null_text(fam.model, fam.source, fam.null, fam.inv, fam.guidance, 2, 0.0, memory_saving=True)
    after = dict(fam.model.model.named_parameters())
    assert all(p.grad is None for p in after.values())
    assert {n: (p.requires_grad, p.data_ptr()) for n, p in after.items()} == before


def test_the_gradient_is_the_derivative_of_the_loss(nt):
    """What null-text optimisation follows: the gradient of ||v(x, c)||^2 in the text condition c, under the family's
    gradient context (Flux/Chroma: their in-place residual adds made safe), against a central finite difference
    along a random direction, with and without memory saving (relative error below 1e-2, float32)."""
    from nulltext_p2p.host.unet import load_model

    fam = nt
    load_model(fam.model)
    unet = fam.family.unet(fam.model, fam.inv.schedule)
    cond = fam.family.text_condition(fam.model, fam.source, "test", "source").to(torch.float32)
    x, t = fam.inv.latents[3], fam.inv.schedule.model_level(3)
    u = torch.randn(cond.shape, generator=torch.Generator().manual_seed(1))

    def loss(c):
        return unet.eps(x, t, c, 1).square().mean()

    with torch.no_grad():
        h = 1e-2
        fd = float((loss(cond + h * u) - loss(cond - h * u)) / (2 * h))
    for saving in (False, True):
        with fam.family.gradients(fam.model, saving), torch.inference_mode(False):
            c = cond.clone().requires_grad_(True)
            loss(c).backward()
            directional = float((c.grad * u).sum())
        print(f"{fam.name}: memory_saving {saving}: gradient . u = {directional:.6g}, finite difference {fd:.6g}")
        assert abs(directional - fd) <= 1e-2 * abs(fd)


def test_memory_saving_gives_the_same_embeddings(nt):
    fam = nt
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    with torch.inference_mode():
        plain, _ = run_null_text(fam.model, fam.source, fam.null, fam.inv, fam.guidance, 2, 0.0)
        saved, _ = run_null_text(fam.model, fam.source, fam.null, fam.inv, fam.guidance, 2, 0.0, memory_saving=True)
    assert float((plain.embeddings - saved.embeddings).abs().max()) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Prompt-to-Prompt identities
# ----------------------------------------------------------------------------------------------------------------
def _edit(fam, target: str, **kw):
    from nulltext_p2p.nodes.edited_sample import run_edit

    mask = kw.pop("mask", None)
    control, _, tgt = control_for(fam.clip, target, **kw)
    with torch.inference_mode():
        return run_edit(fam.model, fam.inv, fam.value, fam.source, tgt, control, fam.guidance, preview=False, mask=mask)


def test_identical_prompts_give_exactly_the_reconstruction(fam):
    out, _ = _edit(fam, SOURCE)
    assert torch.equal(out[1], out[0])
    assert mse(out[0], fam.final) < 1e-10


def test_an_all_zero_mask_gives_exactly_the_reconstruction(fam):
    h, w = LATENT_SHAPE[fam.name][-2:]
    out, result = _edit(fam, TARGET, mask=torch.zeros(1, h * 8, w * 8))
    assert torch.equal(out[1], out[0])
    assert float(result.edit_mask.max()) == 0.0


def test_an_edit_changes_only_the_edited_rows(fam):
    from nulltext_p2p.nodes.edited_sample import run_edit

    out, result = _edit(fam, TARGET, reweight="tiger=2", blend_words="cat, tiger")
    with torch.inference_mode():
        recon, _ = run_edit(fam.model, fam.inv, fam.value, fam.source, None, None, fam.guidance, preview=False)
    # bit for bit unless Qwen-Image pads the rows (" tiger" is 2 tokens): masked padding, float32 rounding
    assert float((out[0] - recon[0]).abs().max()) <= 1e-5 * float(recon.abs().max())
    assert mse(out[1], out[0]) > 1e-4
    h, w = LATENT_SHAPE[fam.name][-2:]
    assert result.cross_maps.shape[:3] == (2, h // 2, w // 2)


def test_refine_with_an_added_word(fam):
    out, result = _edit(fam, "a big cat sitting on a table", mode="refine")
    assert torch.isfinite(out).all() and mse(out[1], out[0]) > 1e-5


def test_another_nodes_attention_override_stays_in_effect(fam):
    """An ``optimized_attention_override`` another node put on the MODEL (here: scales every attention output by 0.9)
    still acts inside Edited Sample, the pack's hook wraps it (identical prompts still give exactly the
    reconstruction), and the input MODEL keeps it untouched."""
    from nulltext_p2p.nodes.edited_sample import run_edit

    calls = []

    def upstream(func, *args, **kwargs):
        calls.append(1)
        return func(*args, **kwargs) * 0.9

    model = fam.model.clone()
    model.model_options["transformer_options"] = dict(model.model_options.get("transformer_options", {}),
                                                      optimized_attention_override=upstream)
    control, _, tgt = control_for(fam.clip, SOURCE)
    with torch.inference_mode():
        plain, _ = run_edit(fam.model, fam.inv, fam.value, fam.source, None, None, fam.guidance, preview=False)
        recon, _ = run_edit(model, fam.inv, fam.value, fam.source, None, None, fam.guidance, preview=False)
        n = len(calls)
        out, _ = run_edit(model, fam.inv, fam.value, fam.source, tgt, control, fam.guidance, preview=False)
    assert n > 0 and len(calls) > n
    assert float((recon[0] - plain[0]).abs().max()) > 1e-3  # the override acted
    assert torch.equal(out[1], out[0])
    assert float((out[0] - recon[0]).abs().max()) <= 1e-5 * float(recon.abs().max())
    assert model.model_options["transformer_options"]["optimized_attention_override"] is upstream


def test_the_hook_with_no_edit_is_the_unpatched_model(fam):
    """The joint-attention override installed with no edit (recording maps only) gives the model's output bit for
    bit; so does an edit outside its windows (cross and self replace 0)."""
    from nulltext_p2p.core.attention_edit import build_attention_edit
    from nulltext_p2p.host.unet import load_model
    from nulltext_p2p.nodes.attention_controller import family_prompt_tokens

    load_model(fam.model)
    schedule = fam.inv.schedule
    cond = fam.family.text_condition(fam.model, fam.source, "test", "source")
    ctx, extra = _packed_parts(fam, cond)
    ctx2 = ctx.repeat(2, 1, 1)
    x = fam.inv.latents[3].repeat(2, *([1] * (fam.inv.latents.ndim - 2)))
    sigma = torch.full((2,), schedule.sigmas_[3])
    prompts = family_prompt_tokens(fam.family, fam.clip, [SOURCE, SOURCE])
    outside = build_attention_edit(prompts[0], prompts[1:], "replace", STEPS, cross_replace=0.0, self_replace=0.0)

    def run(patch_edit, install: bool):
        patcher = fam.model.clone()
        if install:
            fam.family.install_edit(patcher, patch_edit, schedule, 2, ctx.shape[1], tuple(fam.inv.x_T.shape), None)
        opts = dict(patcher.model_options.get("transformer_options", {}))
        opts.update(cond_or_uncond=[0], sigmas=sigma)
        kw = {"c_crossattn": ctx2, "transformer_options": opts}
        kw.update({k: v.repeat(2, *([1] * (v.ndim - 1))) for k, v in extra.items()})
        with torch.no_grad():
            return patcher.model.apply_model(x, sigma, **kw)

    plain = run(None, False)
    assert torch.equal(run(None, True), plain)
    assert torch.equal(run(outside, True), plain)


def test_the_hooks_attention_equals_the_hosts(fam):
    """The probabilities the hook computes (its own softmax) times V equal the host's attention on every joint call
    of a forward pass to 1e-5 (Flux and Chroma: the double- and the single-stream blocks, one call each)."""
    from nulltext_p2p.host.joint_attention import AttentionCall, joint_probs
    from nulltext_p2p.host.unet import load_model

    load_model(fam.model)
    worst = []

    def compare(func, *args, **kwargs):
        out = func(*args, **kwargs)
        call = AttentionCall(args, kwargs)
        mine = torch.matmul(joint_probs(call.q, call.k, call.scale, call.mask), call.v.float())
        host = out.view(out.shape[0], out.shape[1], call.heads, -1).transpose(1, 2) if not call.skip_output_reshape else out
        worst.append(float((mine - host.float()).abs().max()))
        return out

    patcher = fam.model.clone()
    patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = compare
    unet = fam.family.unet(patcher, fam.inv.schedule)
    cond = fam.family.text_condition(fam.model, fam.source, "test", "source")
    with torch.no_grad():
        unet.eps(fam.inv.latents[4], fam.inv.schedule.model_level(4), cond, 0)
    assert worst and max(worst) < 1e-5, worst
    if fam.name in ("Flux", "Chroma"):
        dm = fam.model.model.diffusion_model
        assert len(worst) == len(dm.double_blocks) + len(dm.single_blocks) == 4


# ----------------------------------------------------------------------------------------------------------------
# Words -> token positions, against the host's tokenizers
# ----------------------------------------------------------------------------------------------------------------
def test_sd3_word_positions_in_clip_and_t5(tiny_sd3):
    from nulltext_p2p.host.families.sd3 import SD3

    _, clip, _ = tiny_sd3
    tokens = clip.tokenize(SOURCE)
    clip_ids = [t[0] for t in tokens["l"][0]]
    t5_ids = [t[0] for t in tokens["t5xxl"][0]]
    layout = SD3.prompt_tokens(clip, SOURCE)
    assert layout.max_len == 154 and [o for o, _ in layout.segments] == [0, 77]
    cat = layout.find("cat")
    assert cat == [2, 79]  # CLIP: [BOS, a, cat ...]; T5: [_, a, _cat ...] after the 77 CLIP positions
    assert clip_ids[2] == layout.segments[0][1].word_tokens[1][0] and t5_ids[2] == layout.segments[1][1].word_tokens[1][0]
    # a word of several pieces: T5 splits "tiger" into three, CLIP keeps one
    tiger = SD3.prompt_tokens(clip, TARGET)
    t5_tiger = [p - 77 for p in tiger.find("tiger") if p >= 77]
    t5_target = [t[0] for t in clip.tokenize(TARGET)["t5xxl"][0]]
    assert len(t5_tiger) == len(tiger.segments[1][1].word_tokens[1]) > 1
    assert [t5_target[p] for p in t5_tiger] == list(tiger.segments[1][1].word_tokens[1])


def test_sd3_prompts_over_75_tokens_take_a_second_clip_chunk(tiny_sd3):
    """Every word's tokens sit at its positions in each segment (CLIP chunk 1, chunk 2, T5); a word the host cuts at
    the 75-token boundary (0.33 cuts the prompt as one piece) is in both chunks, each part at its own positions."""
    from nulltext_p2p.host.families.sd3 import SD3

    _, clip, _ = tiny_sd3
    words = [f"word{i}" for i in range(40)] + ["cat"]  # "wordN" is 2-3 CLIP tokens: over 75 in all
    text = " ".join(words)
    tokens = clip.tokenize(text)
    assert len(tokens["l"]) == 2
    layout = SD3.prompt_tokens(clip, text)
    t5_len = len(tokens["t5xxl"][0])
    assert [o for o, _ in layout.segments] == [0, 77, 154] and layout.max_len == 154 + t5_len
    assert encode(clip, text)[0][0].shape[1] == layout.max_len  # the context has exactly these positions
    flat = [t[0] for chunk in tokens["l"] for t in chunk] + [t[0] for t in tokens["t5xxl"][0]]
    clip_parts = {i: [] for i in range(len(words))}
    for (offset, seg), first in zip(layout.segments, layout.first_words):
        for k in range(len(seg.words)):
            assert tuple(flat[offset + p] for p in seg.word_positions(k)) == seg.word_tokens[k]
            if offset < 154:
                clip_parts[first + k].extend(seg.word_tokens[k])
    for i, word in enumerate(words):  # the parts of each word make up its CLIP tokens
        alone = [t[0] for t in clip.tokenize(word)["l"][0]]
        assert clip_parts[i] == alone[1:alone.index(49407, 1)]
    for word in ("cat", "word0", "word39"):
        pos = layout.find(word)
        assert [p for p in pos if p < 154] and [p for p in pos if p >= 154]


def test_qwen_image_word_positions_after_the_template(tiny_qwen_image):
    from nulltext_p2p.host.families.qwen_image import QWEN_IMAGE

    _, clip, _ = tiny_qwen_image
    prompt = QWEN_IMAGE.prompt_tokens(clip, SOURCE)
    emb = encode(clip, SOURCE)[0][0]
    assert prompt.max_len == emb.shape[1] == 11
    assert prompt.find("cat") == [1]  # [a, _cat, _sitting, _on, _a, _table, <|im_end|>, \n, <|im_start|>, assistant, \n]
    ids = [t[0] for t in clip.tokenize(SOURCE)["qwen25_7b"][0]]
    start = len(ids) - emb.shape[1]
    assert ids[start + 1] == prompt.word_tokens[1][0]
    long_word = QWEN_IMAGE.prompt_tokens(clip, "a hippopotamus sitting on a table")
    pos = long_word.find("hippopotamus")
    ids = [t[0] for t in clip.tokenize("a hippopotamus sitting on a table")["qwen25_7b"][0]]
    start = len(ids) - long_word.n_tokens
    assert len(pos) > 1 and tuple(ids[start + p] for p in pos) == long_word.word_tokens[1]


def test_qwen_image_prompts_of_different_lengths_are_padded_to_the_longest(tiny_qwen_image):
    from nulltext_p2p.nodes.attention_controller import build_control

    _, clip, _ = tiny_qwen_image
    control, source, target = build_control(clip, SOURCE, "a big fluffy cat sitting on a table", "refine", 0.8, 0.5,
                                            "", "", "", 0.3, 0.2)
    assert source[0][0].shape[1] == 11 and target[0][0].shape[1] == 13
    assert control.family == "Qwen-Image"
    assert control.source.max_len == control.targets[0].max_len == 13
    assert target[0][1]["attention_mask"].tolist() == [[1] * 13]


def test_prompt_syntax_that_cannot_be_mapped_to_words_is_refused(tiny_sd3):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.attention_controller import build_control

    _, clip, _ = tiny_sd3
    with pytest.raises(NodeInputError, match="target_prompts.*syntax"):
        build_control(clip, SOURCE, "a (tiger:1.3) sitting on a table", "replace", 0.8, 0.5, "", "", "", 0.3, 0.2)


def test_flux_word_positions_in_t5(tiny_flux):
    """Flux's context is the T5 stream (CLIP-L gives only the pooled vector): words from position 0, then the end
    token, then padding to 256."""
    from nulltext_p2p.host.families.flux import FLUX

    _, clip, _ = tiny_flux
    layout = FLUX.prompt_tokens(clip, TARGET)
    ids = [t[0] for t in clip.tokenize(TARGET)["t5xxl"][0]]
    assert layout.max_len == encode(clip, TARGET)[0][0].shape[1] == len(ids) == 256
    tiger = layout.find("tiger")
    assert len(tiger) > 1 and tuple(ids[p] for p in tiger) == layout.word_tokens[1]
    assert ids[layout.n_tokens - 1] == 1 and set(ids[layout.n_tokens:]) == {0}  # end token, then padding


def test_chroma_prompts_of_different_lengths_are_padded_to_the_longest(tiny_chroma):
    from nulltext_p2p.nodes.attention_controller import build_control

    _, clip, _ = tiny_chroma
    control, source, target = build_control(clip, SOURCE, "a big fluffy cat sitting on a table", "refine", 0.8, 0.5,
                                            "", "", "", 0.3, 0.2)
    n_src, n_tgt = source[0][0].shape[1], target[0][0].shape[1]
    assert control.family == "Chroma" and n_tgt > n_src  # T5 unpadded: each prompt its own length
    assert control.source.max_len == control.targets[0].max_len == n_tgt
    assert target[0][1]["attention_mask"].tolist() == [[1] * n_tgt]


def test_the_flux_guidance_travels_with_the_prompt(flux):
    """The FluxGuidance value of the source prompt (the host's default 3.5 without one) is what inversion, Direct
    Inversion and Edited Sample give the model: at 2.0 the inversion differs from 3.5's, and Direct Inversion's
    reconstruction is still exact (the sampler got 2.0 as well); Load Inversion's source carries it."""
    import node_helpers

    from nulltext_p2p.host.families.flux import FLUX
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    fam = flux
    source = node_helpers.conditioning_set_values(fam.source, {"guidance": 2.0})  # what FluxGuidance does
    packed = FLUX.text_condition(fam.model, source, "test", "source")
    assert float(packed[0, -1, FLUX.pooled_width(fam.model)]) == 2.0
    assert FLUX.to_conditioning(packed, fam.model)[0][1]["guidance"] == 2.0
    default = FLUX.text_condition(fam.model, fam.source, "test", "source")
    assert float(default[0, -1, FLUX.pooled_width(fam.model)]) == 3.5
    with torch.inference_mode():
        inv = run_inversion(fam.model, source, fam.latent, STEPS)
        value, _ = run_fast_inversion(fam.model, source, fam.null, inv, "direct-inversion", 1.0)
        out, _ = run_edit(fam.model, inv, value, source, None, None, 1.0, preview=False)
    assert float((inv.latents[-1] - fam.inv.latents[-1]).abs().max()) > 1e-3
    z0 = inv.latents[0]
    assert float((out[0] - z0).abs().max() / z0.abs().max()) < 1e-5
