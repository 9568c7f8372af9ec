"""Half-precision models (forward in the model's dtype, embedding and Adam in float32) and v-prediction."""

from __future__ import annotations

import pytest
import torch

from helpers import encode, image_latent

pytestmark = pytest.mark.host


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_model_gives_finite_results(host, tiny_checkpoint_path, dtype):
    import comfy.sd
    from nulltext_p2p.nodes.attention_controller import build_control
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, _ = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint_path, output_vae=False, output_clip=True,
                                                           embedding_directory=None, model_options={"dtype": dtype})[:3]
    assert model.model.get_dtype() == dtype
    source, null = encode(clip, "a cat sitting on a table"), encode(clip, "")
    inv = run_inversion(model, source, image_latent(model), 3)
    control, _, target = build_control(clip, "a cat sitting on a table", "a tiger sitting on a table", "replace",
                                       0.8, 0.5, "", "tiger=2", "cat, tiger", 0.3, 0.2)
    with torch.inference_mode():
        value, final = run_null_text(model, source, null, inv, 7.5, 2, 1e-5)
        out, _ = run_edit(model, inv, value, source, target, control, 7.5, preview=False)
    assert value.embeddings.dtype == torch.float32 and torch.isfinite(value.embeddings).all()
    assert all(torch.isfinite(torch.tensor(loss)) for loss in value.losses)
    assert torch.isfinite(inv.latents).all() and torch.isfinite(out).all() and out.shape[0] == 2


def test_v_prediction_model_inverts_and_reconstructs(pipeline_model):
    """SD 2.x-style v-prediction: apply_model returns the denoised x0 either way, so the same code works."""
    import comfy.model_sampling
    from nulltext_p2p.core.ddim import ddim_sample
    from nulltext_p2p.host.unet import HostUNet
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip = pipeline_model

    class VSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.V_PREDICTION):
        pass

    vmodel = model.clone()
    vmodel.add_object_patch("model_sampling", VSampling(model.model.model_config))
    source = encode(clip, "a cat sitting on a table")
    inv = run_inversion(vmodel, source, image_latent(model), 10)
    with torch.no_grad():
        unet = HostUNet(vmodel)
        rec = ddim_sample(lambda x, t, c: unet.eps(x, t, c), inv.schedule, inv.x_T, source[0][0])
    z0 = inv.latents[0]
    rel = float(((rec - z0) ** 2).mean() / (z0 ** 2).mean())
    assert torch.isfinite(rec).all() and rel < 0.1, rel


@pytest.fixture(scope="module")
def pipeline_model(tiny_model):
    return tiny_model[0], tiny_model[1]
