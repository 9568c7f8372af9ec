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
    assert "[Null-text P2P: DDIM Invert] input 'model'" in msg and "SD 1.x" in msg and "Fix:" in msg


def test_latent_batch_and_steps_are_checked(pipeline):
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip, source, null, inv, value, final = pipeline
    two = {"samples": torch.cat([image_latent(model)["samples"]] * 2)}
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: DDIM Invert\] input 'latent'.*2 images.*Fix:"):
        run_inversion(model, source, two, 4)
    sd3_latent = {"samples": torch.zeros(1, 16, 16, 16)}  # a LATENT from a 16-channel VAE (SD3/Flux)
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: DDIM Invert\] input 'latent'.*16 channels.*Fix:"):
        run_inversion(model, source, sd3_latent, 4)
    with pytest.raises(ValueError, match=r"\[Null-text P2P: DDIM Invert\] input 'steps'.*-1"):
        run_inversion(model, source, image_latent(model), -1)


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
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Null-Text Optimize\] input 'source'.*not the one DDIM Invert used"):
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
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Null-Text Optimize\] input 'guidance'"):
        run_null_text(model, source, null, inv, -1.0, 10, 1e-5)
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Edited Sample\] input 'guidance'"):
        run_edit(model, inv, value, source, None, None, -2.0, preview=False)


def test_inversion_from_another_checkpoint_is_refused(pipeline):
    import dataclasses

    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.host.model_fingerprint import model_fingerprint
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, null, inv, value, final = pipeline
    assert inv.model_fingerprint == model_fingerprint(model)
    foreign = dataclasses.replace(inv, model_fingerprint="0123456789abcdef")  # as made by another checkpoint
    with torch.inference_mode(), pytest.raises(NodeInputError, match=r"\[Null-text P2P: Edited Sample\] input 'model'.*checkpoint"):
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


def test_error_messages_read_once_with_full_stops():
    """'[<display name>] input '<x>': <problem>. Fix: <fix>.': the problem and the fix each end a sentence once."""
    from nulltext_p2p.host.errors import NodeInputError

    msg = str(NodeInputError("Null-text P2P: Attention Controller", "mode", "unknown mode 'swap'", "choose one of replace, refine"))
    assert msg == ("[Null-text P2P: Attention Controller] input 'mode': unknown mode 'swap'. "
                   "Fix: choose one of replace, refine.")
    assert str(NodeInputError("N", "x", "bad.", "do this!")) == "[N] input 'x': bad. Fix: do this!"


def test_word_count_error_gives_the_advice_once(pipeline):
    from nulltext_p2p.host.errors import NodeInputError

    model, clip, *_ = pipeline
    with pytest.raises(NodeInputError) as e:
        control_for(clip, "a big tiger sitting on a table", "a cat sitting on a table")
    msg = str(e.value)
    assert msg.startswith("[Null-text P2P: Attention Controller] input 'target_prompts': ")
    assert msg.count("refine") == 1 and '"' not in msg, msg  # advice once, one kind of quotes
    problem, fix = msg.split(" Fix: ")
    assert problem.endswith(" words.") and fix.endswith(".") and "choose mode 'refine'" in fix


@pytest.mark.parametrize("name,value", [("blend_threshold", 1.0), ("blend_threshold", -0.1), ("blend_start", 1.5),
                                        ("cross_replace", 1.2), ("self_replace", -1.0), ("blend_threshold", float("nan"))])
def test_controller_numbers_outside_their_bounds_blame_that_input(pipeline, name, value):
    """A number outside what the core accepts is refused against its own input, even with blend words given (the
    threshold used to be refused as "input 'blend_words'")."""
    from nulltext_p2p.host.errors import NodeInputError

    model, clip, *_ = pipeline
    with pytest.raises(NodeInputError) as e:
        control_for(clip, "a tiger sitting on a table", "a cat sitting on a table", blend_words="cat, tiger",
                    **{name: value})
    assert f"input '{name}'" in str(e.value) and "blend_words" not in str(e.value), str(e.value)


def test_controller_schema_bounds_are_what_the_core_accepts(pipeline):
    """Every value the widgets allow (their min and max) builds a control; the core refuses blend_threshold 1.0,
    so the widget stops below it."""
    from nulltext_p2p.nodes.attention_controller import AttentionController

    model, clip, *_ = pipeline
    schema = AttentionController.define_schema()
    bounds = {i.id: (i.min, i.max) for i in schema.inputs if i.id in ("cross_replace", "self_replace",
                                                                       "blend_threshold", "blend_start")}
    assert bounds["blend_threshold"][1] < 1.0
    for name, (lo, hi) in bounds.items():
        for value in (lo, hi):
            control_for(clip, "a tiger sitting on a table", "a cat sitting on a table", blend_words="cat, tiger",
                        **{name: value})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_latent_is_refused_at_ddim_invert(pipeline, bad):
    """What an fp16 VAE overflow gives: refused by the first node, naming the input and the fix."""
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.ddim_invert import run_inversion

    model, clip, source, *_ = pipeline
    latent = image_latent(model)
    latent["samples"] = latent["samples"].clone()
    latent["samples"][0, 1, 3, 4] = bad
    with pytest.raises(NodeInputError) as e:
        run_inversion(model, source, latent, 4)
    msg = str(e.value)
    assert msg.startswith("[Null-text P2P: DDIM Invert] input 'latent': ") and "NaN or infinite" in msg
    assert "1 of 1024 values" in msg and "--fp32-vae" in msg


def test_nan_inputs_are_refused_downstream_too(pipeline):
    """An inversion or null embeddings holding NaN (a damaged file, another pack's node) are refused by Null-Text
    Optimize, Fast Inversion and Edited Sample before any sampling, each naming its input."""
    import dataclasses

    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.edited_sample import run_edit
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion
    from nulltext_p2p.nodes.null_text_optimize import run_null_text

    model, clip, source, null, inv, value, final = pipeline
    latents = inv.latents.clone()
    latents[-1, 0, 0, 0, 0] = float("nan")
    bad_inv = dataclasses.replace(inv, latents=latents)
    with torch.inference_mode():
        with pytest.raises(NodeInputError, match=r"Null-Text Optimize\] input 'inversion': .*NaN"):
            run_null_text(model, source, null, bad_inv, 7.5, 1, 1e-5)
        with pytest.raises(NodeInputError, match=r"Fast Inversion\] input 'inversion': .*NaN"):
            run_fast_inversion(model, source, null, bad_inv, "negative-prompt", 7.5)
        emb = value.embeddings.clone()
        emb[2] = float("inf")
        with pytest.raises(NodeInputError, match=r"Edited Sample\] input 'null_embeddings': .*NaN or infinite"):
            run_edit(model, inv, dataclasses.replace(value, embeddings=emb), source, None, None, 7.5, preview=False)


def test_nan_loss_is_an_error_not_a_result(pipeline):
    """A model that overflows (here: a wrapper that turns the UNet output to NaN) stops Null-Text Optimize with an
    error naming the step, instead of 'last loss nan' and black images."""
    import comfy.patcher_extension
    from nulltext_p2p.host.errors import NodeInputError
    from nulltext_p2p.nodes.null_text_optimize import run_null_text, status_text

    model, clip, source, null, inv, value, final = pipeline
    broken = model.clone()

    def overflow(executor, *args, **kwargs):
        return executor(*args, **kwargs) * float("nan")

    broken.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_overflow", overflow)
    with torch.inference_mode(), pytest.raises(NodeInputError) as e:
        run_null_text(broken, source, null, inv, 7.5, 2, 1e-5)
    msg = str(e.value)
    assert "[Null-text P2P: Null-Text Optimize] input 'model'" in msg and "step 1 of" in msg and "nan" in msg.lower()
    assert "--force-fp32" in msg
    text = status_text(value)
    assert "nan" not in text.lower() and "inner iterations" in text and "last loss" in text
