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
    assert rel < 1e-9  # exact up to float32 rounding (float64 algebra is exact by construction)


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
