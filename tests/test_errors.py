"""Bad inputs get errors that name the node, the input and the fix; Cancel leaves the model as it was."""

from __future__ import annotations

import pytest
import torch

from helpers import control_for, encode, image_latent
from pipeline import build_pipeline

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return build_pipeline(tiny_model)[:7]


def test_wrong_model_family_is_refused(pipeline):
    import comfy.model_sampling
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip, source, null, inv, value, final = pipeline
    flow = model.clone()  # a rectified-flow model sampling (SD3/Flux style) patched onto the real host model
    flow.add_object_patch("model_sampling", comfy.model_sampling.ModelSamplingDiscreteFlow())
    with pytest.raises(NodeInputError) as e:
        run_inversion(flow, source, image_latent(model), 4)
    msg = str(e.value)
    assert "[DDIM Invert] input 'model'" in msg and "SD 1.x" in msg and "Fix:" in msg


def test_latent_batch_and_steps_are_checked(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip, source, null, inv, value, final = pipeline
    two = {"samples": torch.cat([image_latent(model)["samples"]] * 2)}
    with pytest.raises(NodeInputError, match=r"\[DDIM Invert\] input 'latent'.*2 images.*Fix:"):
        run_inversion(model, source, two, 4)
    sd3_latent = {"samples": torch.zeros(1, 16, 16, 16)}  # a LATENT from a 16-channel VAE (SD3/Flux)
    with pytest.raises(NodeInputError, match=r"\[DDIM Invert\] input 'latent'.*16 channels.*Fix:"):
        run_inversion(model, source, sd3_latent, 4)
    with pytest.raises(ValueError, match=r"\[DDIM Invert\] input 'steps'.*0"):
        run_inversion(model, source, image_latent(model), 0)


def test_null_embeddings_from_another_inversion_are_refused(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    model, clip, source, null, inv, value, final = pipeline
    other = run_inversion(model, source, image_latent(model, seed=3), 4)
    with torch.inference_mode():
        with pytest.raises(NodeInputError) as e:
            run_edit(model, other, value, source, None, None, 7.5, preview=False)
        assert "input 'null_embeddings'" in str(e.value) and "10 steps" in str(e.value) and "4" in str(e.value)
        same_steps = run_inversion(model, source, image_latent(model, seed=3), inv.steps)
        with pytest.raises(NodeInputError, match="another inversion"):
            run_edit(model, same_steps, value, source, None, None, 7.5, preview=False)
        npi, _ = run_fast_inversion(model, source, null, same_steps, "negative-prompt", 7.5)
        with pytest.raises(NodeInputError, match="another inversion"):
            run_edit(model, inv, npi, source, None, None, 7.5, preview=False)


def test_source_prompt_must_match_the_inversion(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    with pytest.raises(NodeInputError, match=r"\[Null-Text Optimize\] input 'source'.*not the one DDIM Invert used"):
        run_null_text(model, encode(clip, "a dog on a sofa"), null, inv, 7.5, 1, 1e-5)


def test_controller_words_and_counts(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.attention_controller import build_control

    model, clip, *_ = pipeline

    def control(target, **kw):
        return control_for(clip, target, "a cat sitting on a table", **kw)

    with pytest.raises(NodeInputError) as e:
        control("a tiger sitting on a table", reweight="zebra=2")
    assert "input 'reweight'" in str(e.value) and "zebra" in str(e.value) and "tiger" in str(e.value)
    with pytest.raises(NodeInputError) as e:
        control("a tiger sitting on a table", blend_words="horse")
    assert "input 'blend_words'" in str(e.value) and "horse" in str(e.value)
    with pytest.raises(NodeInputError) as e:
        control("a big tiger sitting on a table")
    assert "input 'target_prompts'" in str(e.value) and "refine" in str(e.value)
    with pytest.raises(NodeInputError, match="input 'target_prompts'"):
        control("   ")
    with pytest.raises(NodeInputError, match="input 'source_prompt'.*empty"):
        build_control(clip, "  ", "a tiger", "refine", 0.8, 0.5, "", "", "", 0.3, 0.2)
    with pytest.raises(NodeInputError, match="input 'reweight'"):
        control("a tiger sitting on a table", reweight="tiger:2:3")
    with pytest.raises(NodeInputError, match="input 'source_prompt'.*75 tokens"):
        build_control(clip, " ".join(["cat"] * 90), "a tiger", "refine", 0.8, 0.5, "", "", "", 0.3, 0.2)
    ok, src, tgt = control("a tiger sitting on a table\na dog sitting on a table", mode="replace")
    assert tgt[0][0].shape[0] == 2 and len(ok.targets) == 2


def test_cancel_during_optimisation_leaves_the_model_unchanged(pipeline):
    import comfy.model_management as mm
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    params = dict(model.model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    probe = torch.linspace(-1, 1, 4 * 16 * 16).reshape(1, 4, 16, 16)
    from nulltext_p2p.host.unet import HostUNet

    with torch.no_grad():
        before = HostUNet(model).eps(probe, 501, source[0][0])
    mm.interrupt_current_processing(True)
    try:
        with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
            run_null_text(model, source, null, inv, 7.5, 10, 1e-5)
    finally:
        mm.interrupt_current_processing(False)
    after_params = dict(model.model.named_parameters())
    assert all(after_params[n] is p for n, p in params.items())  # the very same parameter objects are back
    assert {n: p.requires_grad for n, p in after_params.items()} == flags
    assert all(p.grad is None for p in after_params.values())
    with torch.no_grad():
        assert torch.equal(before, HostUNet(model).eps(probe, 501, source[0][0]))


def test_early_stop_threshold_stops_after_one_iteration(pipeline):
    """A loose epsilon stops every step after its first update (the update is kept, as in the reference)."""
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    with torch.inference_mode():
        loose, _ = run_null_text(model, source, null, inv, 7.5, 10, 1e9)
    assert loose.iterations == [1] * inv.steps
    assert not torch.equal(loose.embeddings[0], null[0][0].float())  # the first update was applied


def test_cancel_during_inversion_and_editing(pipeline):
    """Cancel (the host's interrupt flag) stops our loops; the shared MODEL keeps no patch or wrapper."""
    import comfy.model_management as mm
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, null, inv, value, final = pipeline
    options_before = repr(model.model_options)
    for run in (lambda: run_inversion(model, source, image_latent(model), 4),
                lambda: run_edit(model, inv, value, source, None, None, 7.5, preview=False)):
        mm.interrupt_current_processing(True)
        try:
            with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
                run()
        finally:
            mm.interrupt_current_processing(False)
        assert repr(model.model_options) == options_before and not model.wrappers


def test_out_of_range_numbers_name_the_input(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    with pytest.raises(NodeInputError, match=r"\[Null-Text Optimize\] input 'guidance'"):
        run_null_text(model, source, null, inv, -1.0, 10, 1e-5)
    with pytest.raises(NodeInputError, match=r"\[Edited Sample\] input 'guidance'"):
        run_edit(model, inv, value, source, None, None, -2.0, preview=False)


def test_inversion_from_another_checkpoint_is_refused(pipeline):
    import dataclasses

    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.host.model_fingerprint import model_fingerprint
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, null, inv, value, final = pipeline
    assert inv.model_fingerprint == model_fingerprint(model)
    foreign = dataclasses.replace(inv, model_fingerprint="0123456789abcdef")  # as made by another checkpoint
    with torch.inference_mode(), pytest.raises(NodeInputError, match=r"\[Edited Sample\] input 'model'.*checkpoint"):
        run_edit(model, foreign, value, source, None, None, 7.5, preview=False)


def test_out_of_memory_during_optimisation_leaves_the_model_unchanged(pipeline):
    """An error deep in the UNet (here a simulated out-of-memory on the 3rd call) propagates; the shared weights
    are the very same objects afterwards, with their requires_grad flags, and no gradient was left on them."""
    import comfy.patcher_extension
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    calls = {"n": 0}

    def fail_on_third(executor, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return executor(*args, **kwargs)

    flaky = model.clone()
    flaky.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_oom", fail_on_third)
    params = dict(model.model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    with torch.inference_mode(), pytest.raises(torch.OutOfMemoryError):
        run_null_text(flaky, source, null, inv, 7.5, 10, 1e-5)
    assert calls["n"] == 3
    after = dict(model.model.named_parameters())
    assert all(after[n] is p for n, p in params.items())
    assert {n: p.requires_grad for n, p in after.items()} == flags and all(p.grad is None for p in after.values())
    assert not model.wrappers


def test_prompts_over_77_tokens_without_attention_control(pipeline, tiny_model):
    """The host encodes a long caption as 154 tokens; inversion, null-text and a reconstruction still work (the 77-token
    null embedding is repeated to the caption's length, which leaves attention unchanged)."""
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    long_source = encode(clip, " ".join(["a small grey cat sitting on a wooden table"] * 10))
    assert long_source[0][0].shape[1] == 154
    inv_long = run_inversion(model, long_source, image_latent(model), 3)
    with torch.inference_mode():
        nt, nt_final = run_null_text(model, long_source, null, inv_long, 7.5, 2, 1e-5)
        out, _ = run_edit(model, inv_long, nt, long_source, None, None, 7.5, preview=False)
    assert torch.isfinite(out).all()
    rel = float(((out - nt_final) ** 2).mean() / (nt_final ** 2).mean())
    assert rel < 1e-8, rel  # the host sampler with the wrapper reproduces the optimiser's reconstruction
