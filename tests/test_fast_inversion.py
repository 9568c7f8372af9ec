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
