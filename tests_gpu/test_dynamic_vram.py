"""Null-Text Optimize through the real ``ModelPatcherDynamic`` equals the plain ``ModelPatcher`` run (GPU only)."""

from __future__ import annotations

import torch

from helpers import encode, image_latent

STEPS, INNER, GUIDANCE = 5, 5, 7.5


def test_null_text_under_dynamic_vram_equals_plain_patcher(dynamic_host, tmp_path):
    import comfy.model_patcher
    import comfy.sd

    from tiny_model import build_tiny_sd15_checkpoint
    from nulltext_p2p.host.compat import is_dynamic_patcher
    from nulltext_p2p.host.model_fingerprint import model_fingerprint
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    path = build_tiny_sd15_checkpoint(str(tmp_path / "tiny.safetensors"), seed=0)
    runs = {}
    for kind in ("dynamic", "plain"):
        if kind == "plain":
            comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcher
        model, clip = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=True)[:2]
        assert is_dynamic_patcher(model) == (kind == "dynamic")
        source, null = encode(clip, "a cat sitting on a table"), encode(clip, "")
        with torch.inference_mode():
            inv = run_inversion(model, source, image_latent(model, 32, 32), STEPS)
            value, final = run_null_text(model, source, null, inv, GUIDANCE, INNER, 1e-5)
        runs[kind] = (value, final.cpu(), inv.latents.cpu(), model_fingerprint(model))
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    (vd, fd, ld, pd), (vp, fp, lp, pp) = runs["dynamic"], runs["plain"]
    d_emb = float((vd.embeddings - vp.embeddings).abs().max())
    d_final = float((fd - fp).abs().max())
    print(f"dynamic vs plain: iterations {vd.iterations} / {vp.iterations}, max |diff| embeddings {d_emb:.1e}, "
          f"reconstruction {d_final:.1e}, inversion {float((ld - lp).abs().max()):.1e}")
    assert pd == pp  # the fingerprint reads the checkpoint's weights under both patchers
    assert vd.iterations == vp.iterations
    assert d_emb < 1e-3 and d_final < 1e-3
