"""Null-Text Optimize where the layers do not compute with their parameters (dynamic VRAM's situation), on CPU.

Since ComfyUI 0.12 a CUDA server loads models with ``ModelPatcherDynamic``: each layer casts its weight per call
into a cached copy (``comfy/ops.py``, ``_v_weight``) made under ``torch.inference_mode``, so swapping the module
parameters (the plain patcher's fix for "Inference tensors cannot be saved for backward") does not reach the
tensors the layers use. ``ModelPatcherDynamic`` cannot be built without CUDA (on CPU its ``__new__`` returns a
plain ``ModelPatcher``, and comfy-aimdo's host buffers need the CUDA library), so this test builds the same
situation with the host's own machinery: a weight wrapper (``ModelPatcher.add_weight_wrapper``, applied by
``comfy.ops.cast_bias_weight`` on every call) that hands each layer a cached inference-mode copy of its weight.
On the old code (parameter swap only) the backward fails with "Inference tensors cannot be saved for backward".
The real patcher on a GPU: ``tests_gpu/test_dynamic_vram.py`` (README, Tests).
"""

from __future__ import annotations

import pytest
import torch

from helpers import encode, image_latent

pytestmark = pytest.mark.host

STEPS, INNER, GUIDANCE = 3, 3, 7.5


class CachedInferenceCast:
    """Weight wrapper of one layer: the layer computes with a copy of its weight made once under inference mode and
    kept, as dynamic VRAM keeps ``_v_weight``."""

    def __init__(self) -> None:
        self.copy: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.copy is None:
            with torch.inference_mode():
                self.copy = weight.detach().clone()
        return self.copy


@pytest.fixture(scope="module")
def own_model(host, tiny_checkpoint_path):
    """A model of its own: weight wrappers are set on the shared modules when a patcher loads."""
    out = host.sd.load_checkpoint_guess_config(tiny_checkpoint_path, output_vae=False, output_clip=True,
                                               embedding_directory=None)
    return out[0], out[1]


def test_null_text_through_per_call_inference_weights_equals_the_plain_run(own_model):
    import comfy.model_management

    from nulltext_p2p.host.unet import weights_made_per_call
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip = own_model
    source, null = encode(clip, "a cat sitting on a table"), encode(clip, "")
    with torch.inference_mode():
        inv = run_inversion(model, source, image_latent(model, 16, 16), STEPS)
        plain, final_plain = run_null_text(model, source, null, inv, GUIDANCE, INNER, 1e-5)
    assert not weights_made_per_call(model)

    wrapped = model.clone()
    names = [n for n, m in wrapped.model.diffusion_model.named_modules()
             if hasattr(m, "weight_function") and getattr(m, "weight", None) is not None]
    casts = [CachedInferenceCast() for _ in names]
    for n, cast in zip(names, casts):
        wrapped.add_weight_wrapper(f"diffusion_model.{n}.weight", cast)
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([wrapped])
        assert weights_made_per_call(wrapped)
        before = [(p, p.requires_grad) for p in wrapped.model.diffusion_model.parameters()]
        per_call, final_per_call = run_null_text(wrapped, source, null, inv, GUIDANCE, INNER, 1e-5)
    d_emb = float((plain.embeddings - per_call.embeddings).abs().max())
    d_final = float((final_plain - final_per_call).abs().max())
    print(f"{len(names)} layers computing with kept inference-mode copies ({sum(c.calls for c in casts)} casts): "
          f"iterations {per_call.iterations} vs plain {plain.iterations}; max |diff| embeddings {d_emb:.1e}, "
          f"reconstruction {d_final:.1e}")
    assert all(c.calls > 0 and c.copy.is_inference() for c in casts)
    assert per_call.iterations == plain.iterations
    assert d_emb == 0.0 and d_final == 0.0
    after = list(wrapped.model.diffusion_model.parameters())
    assert all(p is q and p.requires_grad == rg and p.grad is None for (q, rg), p in zip(before, after))  # put back
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([model])  # the plain patcher again: its load clears the wrappers
    assert not weights_made_per_call(model)


def test_compat_reads_the_hosts_patcher(own_model, host):
    from nulltext_p2p.host.compat import is_dynamic_patcher, multigpu_device_count

    model, _ = own_model
    assert is_dynamic_patcher(model) is False  # CPU: always the plain patcher
    assert multigpu_device_count(model) == 0
    if host.version != "0.3.64":  # ModelPatcherDynamic exists from 0.12 on and falls back to ModelPatcher on CPU
        import comfy.model_patcher

        fallback = comfy.model_patcher.ModelPatcherDynamic(model.model, model.load_device, model.offload_device)
        assert type(fallback) is comfy.model_patcher.ModelPatcher and not is_dynamic_patcher(fallback)
