"""Negative-prompt inversion and Direct Inversion: reconstruction through Edited Sample."""

from __future__ import annotations

import pytest
import torch

from helpers import mse
from pipeline import build_pipeline

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return build_pipeline(tiny_model)[:7]


def reconstruct(pipeline, value):
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, null, inv, _, _ = pipeline
    with torch.inference_mode():
        out, _ = run_edit(model, inv, value, source, None, None, value.guidance, preview=False)
    return out


def test_direct_inversion_reconstructs_exactly(pipeline):
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    model, clip, source, null, inv, nt_value, nt_final = pipeline
    with torch.inference_mode():
        value, final = run_fast_inversion(model, source, null, inv, "direct-inversion", 7.5)
    assert value.method == "direct-inversion" and value.latent_offsets.shape == (inv.steps, 1, 4, 16, 16)
    out = reconstruct(pipeline, value)
    z0 = inv.latents[0]
    rel = mse(out, z0) / float(z0.double().pow(2).mean())
    print(f"direct inversion: relative reconstruction MSE {rel:.2e}; null-text {mse(nt_final, z0) / float(z0.double().pow(2).mean()):.2e}")
    assert rel < 1e-7  # exact up to float32 rounding through the host sampler (measured 2.5e-9)


def test_negative_prompt_inversion_equals_conditional_sampling(pipeline):
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.unet import HostUNet
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    model, clip, source, null, inv, nt_value, nt_final = pipeline
    with torch.inference_mode():
        value, final = run_fast_inversion(model, source, null, inv, "negative-prompt", 7.5)
    assert torch.equal(value.embeddings[3], source[0][0].float())
    out = reconstruct(pipeline, value)
    unet = HostUNet(model)
    with torch.no_grad():
        g1 = ddim_sample(lambda x, t, c: unet.eps(x, t, c), inv.schedule, inv.x_T, source[0][0])
    z0 = inv.latents[0]
    rel_out = mse(out, g1) / float(g1.double().pow(2).mean())
    err_npi = mse(out, z0) / float(z0.double().pow(2).mean())
    print(f"negative-prompt inversion: relative MSE vs guidance-1 sampling {rel_out:.2e}; reconstruction {err_npi:.2e}")
    assert rel_out < 1e-8  # guidance w with eps_u == eps_c is conditional sampling
    assert mse(final, out) / float(g1.double().pow(2).mean()) < 1e-8


def test_direct_inversion_is_exact_in_float64():
    """Host-independent: with a float64 noise predictor the source row lands on z_0 to rounding error."""
    from nulltext_p2p.core.ddim import ddim_invert, ddim_step, guided_eps
    from nulltext_p2p.core.fast_inversion import direct_inversion_offsets
    from nulltext_p2p.core.schedule import DDIMSchedule

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    sched = DDIMSchedule.from_alphas_cumprod(torch.cumprod(1 - betas, 0), 20)
    w = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def eps_fn(x, t, ctx):  # a smooth, nonlinear stand-in for the UNet, depending on t and the context
        return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x) * (1 + t / 1000)) + ctx.mean() * x

    z0 = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cond, null = torch.full((1, 77, 8), 0.3, dtype=torch.float64), torch.zeros(1, 77, 8, dtype=torch.float64)
    traj = ddim_invert(eps_fn, sched, z0, cond)
    offsets = direct_inversion_offsets(eps_fn, sched, traj, cond, null, 7.5).to(torch.float64)
    x = traj[-1]
    for i, t in enumerate(sched.timesteps):
        eps = guided_eps(eps_fn(x, t, null), eps_fn(x, t, cond), 7.5)
        x = ddim_step(x, eps, sched.alphas_cumprod[i], sched.next_alpha_cumprod(i)) + offsets[i]
    plain = traj[-1]
    for i, t in enumerate(sched.timesteps):
        plain = ddim_step(plain, guided_eps(eps_fn(plain, t, null), eps_fn(plain, t, cond), 7.5),
                          sched.alphas_cumprod[i], sched.next_alpha_cumprod(i))
    err, err_plain = float((x - z0).abs().max()), float((plain - z0).abs().max())
    print(f"float64 direct inversion: max |x - z0| {err:.1e} (plain guided DDIM {err_plain:.1e})")
    assert err < 1e-6 * err_plain and err < 1e-12


def test_pair_calls_are_used_and_equal_in_float64():
    """Host-independent: ddim_sample and direct_inversion_offsets take both predictions of a step from eps_pair_fn
    when given (one call per step) and then equal the single-call results exactly (float64 stand-in)."""
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.core.fast_inversion import direct_inversion_offsets
    from nulltext_p2p.core.schedule import DDIMSchedule

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    sched = DDIMSchedule.from_alphas_cumprod(torch.cumprod(1 - betas, 0), 8)
    w = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    calls = {"single": 0, "pair": 0}

    def eps_fn(x, t, ctx):
        calls["single"] += 1
        return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x) * (1 + t / 1000)) + ctx.mean() * x

    def eps_pair(x, t, unc, cond):
        calls["pair"] += 1
        out = torch.tanh(torch.einsum("ij,bjhw->bihw", w, torch.cat([x, x])) * (1 + t / 1000))
        return out[0:1] + unc.mean() * x, out[1:2] + cond.mean() * x

    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    traj = torch.stack([x * (1 + 0.1 * k) for k in range(9)])
    cond, null = torch.full((1, 77, 8), 0.3, dtype=torch.float64), torch.zeros(1, 77, 8, dtype=torch.float64)
    nulls = null.unsqueeze(0).expand(8, *null.shape)
    a = ddim_sample(eps_fn, sched, x, cond, nulls, 7.5)
    b = ddim_sample(eps_fn, sched, x, cond, nulls, 7.5, eps_pair_fn=eps_pair)
    o1 = direct_inversion_offsets(eps_fn, sched, traj, cond, null, 7.5)
    n_single = calls["single"]
    o2 = direct_inversion_offsets(eps_fn, sched, traj, cond, null, 7.5, eps_pair_fn=eps_pair)
    assert calls["single"] == n_single and calls["pair"] == 2 * 8  # 8 steps each, no single calls once paired
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.allclose(o1, o2, rtol=0, atol=1e-12)


class _RowCounter:
    """UNet forward calls and evaluated rows (a forward hook on the diffusion model)."""

    def __init__(self, diffusion_model) -> None:
        self.calls = self.rows = 0
        self._handle = diffusion_model.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.calls += 1
        self.rows += int(output.shape[0])

    def close(self) -> None:
        self._handle.remove()


def test_direct_inversion_batched_pairs_equal_single_calls(pipeline):
    """One batch-2 call per step (the default, on every device) gives the offsets of two batch-1 calls to float32
    rounding, with half the calls and the same rows."""
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    model, clip, source, null, inv, _, _ = pipeline
    counts, values = {}, {}
    for pairs in (False, True, None):  # None: the node's default
        counter = _RowCounter(model.model.diffusion_model)
        try:
            with torch.inference_mode():
                kw = {} if pairs is None else {"batch_pairs": pairs}
                values[pairs], _ = run_fast_inversion(model, source, null, inv, "direct-inversion", 7.5, **kw)
        finally:
            counter.close()
        counts[pairs] = (counter.calls, counter.rows)
    steps = inv.steps
    assert counts[False] == (2 * steps, 2 * steps) and counts[True] == (steps, 2 * steps)
    assert counts[None] == counts[True]  # batch-2 by default, on the CPU too
    assert torch.equal(values[None].latent_offsets, values[True].latent_offsets)
    single, paired = values[False].latent_offsets.double(), values[True].latent_offsets.double()
    scale = float(single.abs().max())
    diff = float((paired - single).abs().max())
    print(f"direct inversion offsets, batch-2 vs batch-1 calls: max |diff| {diff:.2e} (max |offset| {scale:.2e})")
    assert diff <= 3e-5 * max(scale, 1.0)  # float32 rounding (measured 7e-6 on 1.7)
    assert torch.equal(values[True].embeddings, values[False].embeddings)
    out = reconstruct(pipeline, values[True])
    z0 = inv.latents[0]
    assert mse(out, z0) / float(z0.double().pow(2).mean()) < 1e-7  # still exact


def test_eps_pair_equals_two_calls_sd1_and_sdxl(pipeline, tiny_sdxl):
    """HostUNet.eps_pair (rows [uncond, cond], cond_or_uncond [1, 0]) equals eps(.., 1) and eps(.., 0), also with SDXL's
    packed contexts (token rows + pooled vector -> ADM input)."""
    from helpers import encode, image_latent
    from nulltext_p2p.host.text_condition import text_condition
    from nulltext_p2p.host.unet import HostUNet, load_model

    model, clip, source, null, inv, _, _ = pipeline
    x_model = tiny_sdxl[0].model.process_latent_in(image_latent(tiny_sdxl[0], 8, 8)["samples"])
    cases = [(model, source, null, inv.latents[3]),
             (tiny_sdxl[0], encode(tiny_sdxl[1], "a cat sitting on a table"), encode(tiny_sdxl[1], ""), x_model)]
    for patcher, src, nul, x in cases:
        load_model(patcher)
        unet = HostUNet(patcher)
        cond, unc = text_condition(patcher, src, "test", "source"), text_condition(patcher, nul, "test", "null")
        seen = []
        patcher_wrapper = patcher.clone()
        patcher_wrapper.set_model_unet_function_wrapper(
            lambda apply, p: (seen.append(list(p["cond_or_uncond"])), apply(p["input"], p["timestep"], **p["c"]))[1])
        for t in (981, 501, 21):
            with torch.no_grad():
                e_u, e_c = unet.eps_pair(x, t, unc, cond)
                s_u, s_c = unet.eps(x, t, unc, 1), unet.eps(x, t, cond, 0)
            scale = float(torch.cat([s_u, s_c]).abs().max())
            assert float((e_u - s_u).abs().max()) <= 1e-5 * scale and float((e_c - s_c).abs().max()) <= 1e-5 * scale
            assert float((s_u - s_c).abs().max()) > 1e-3 * scale  # the two rows differ: the pair is not one row twice
        with torch.no_grad():
            HostUNet(patcher_wrapper).eps_pair(x, 501, unc, cond)
        assert seen == [[1, 0]]  # the host's row convention reaches model wrappers
        if unet.pooled_dim:  # the ADM input, size part cached on the device, is exactly the host's encode_adm
            pooled = torch.cat([unc, cond])[:, -1, :unet.pooled_dim]
            h, w = int(x.shape[-2]) * 8, int(x.shape[-1]) * 8
            host_y = patcher.model.encode_adm(pooled_output=pooled, width=w, height=h, crop_w=0, crop_h=0,
                                              target_width=w, target_height=h, device=unet.device)
            for _ in range(2):  # first call fills the cache, second uses it
                assert torch.equal(unet.adm(pooled, x), host_y.to(torch.float32))
