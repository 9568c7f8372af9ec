"""User masks in, the applied mask out (Edited Sample's 'mask' / 'mask_combine' inputs and 'mask' output).

The first tests are pure (core/masks.py); the host tests edit a 16x16 latent (6 steps, negative-prompt values, no
optimisation needed: they check where the edit may act, not the reconstruction quality).
"""

from __future__ import annotations

import pytest
import torch

from nulltext_p2p.core.masks import MaskError, blend_rows, combine_masks, prepare_user_mask, to_image_mask

SOURCE = "a cat sitting on a table"
TARGET = "a tiger sitting on a table"
LATENT = 16
IMAGE = LATENT * 8
STEPS = 6
# random weights give nearly uniform word maps (max-normalised and pooled: 0.8-1.0 on the 4x4 maps of a 16x16
# latent), so a high threshold makes the local-blend mask partial; real models are used at 0.3
BLEND = dict(blend_words="cat, tiger", blend_threshold=0.97)


# ----------------------------------------------------------------------------------------------------------------
# core/masks.py
# ----------------------------------------------------------------------------------------------------------------
def test_prepare_resizes_nearest_and_broadcasts():
    m = torch.zeros(1, 128, 96)
    m[:, :, :48] = 1
    out = prepare_user_mask(m, 2, (16, 12))
    assert out.shape == (2, 1, 16, 12) and out.dtype == torch.float32
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0, 0, :, :6], torch.ones(16, 6)) and torch.equal(out[0, 0, :, 6:], torch.zeros(16, 6))
    # [H, W] and [B, 1, H, W] are accepted; values are clamped to 0..1
    assert prepare_user_mask(torch.full((8, 8), 2.0), 1, (4, 4)).max() == 1.0
    assert prepare_user_mask(torch.full((1, 1, 8, 8), -1.0), 1, (4, 4)).min() == 0.0
    # another size and aspect ratio: stretched by nearest sampling (source index floor(i * in / out))
    odd = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 5, 7) / 34
    got = prepare_user_mask(odd, 1, (10, 3))[0, 0]
    rows, cols = (torch.arange(10) * 5) // 10, (torch.arange(3) * 7) // 3
    assert torch.equal(got, odd[0][rows][:, cols])


def test_prepare_refuses_wrong_batches_and_values():
    with pytest.raises(MaskError, match="3 masks but there are 2 edits"):
        prepare_user_mask(torch.ones(3, 8, 8), 2, (4, 4))
    with pytest.raises(MaskError, match="NaN or infinite"):
        prepare_user_mask(torch.full((1, 8, 8), float("nan")), 1, (4, 4))
    with pytest.raises(MaskError, match="shape"):
        prepare_user_mask(torch.ones(1, 3, 8, 8), 1, (4, 4))
    with pytest.raises(MaskError, match="expected a MASK"):
        prepare_user_mask("mask.png", 1, (4, 4))
    two = prepare_user_mask(torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]), 2, (4, 4))
    assert two[0].max() == 0 and two[1].min() == 1  # one mask per edit, in order


def test_image_mask_round_trip():
    m = torch.rand(2, 1, 6, 5)
    image = to_image_mask(m)
    assert image.shape == (2, 48, 40)
    assert torch.equal(image[:, ::8, ::8], m[:, 0])
    assert torch.equal(prepare_user_mask(image, 2, (6, 5)), m)  # the MASK output goes back in unchanged


def test_combine_modes():
    user = torch.tensor([0.0, 0.5, 1.0, 1.0]).reshape(1, 1, 1, 4)
    blend = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]]).reshape(2, 1, 1, 4)  # rows: source, edit
    assert combine_masks(None, None) is None
    assert torch.equal(combine_masks(user, None, "union"), user)  # before the blend start: the user mask alone
    assert torch.equal(combine_masks(None, blend), blend[1:])
    assert combine_masks(user, blend, "intersection").flatten().tolist() == [0.0, 0.5, 0.0, 1.0]
    assert combine_masks(user, blend, "union").flatten().tolist() == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(MaskError, match="intersection, union"):
        combine_masks(user, blend, "xor")


def test_blend_rows_is_exact_at_0_and_1_and_proportional_between():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 3, generator=g) * 7
    mask = torch.tensor([[0.0, 1.0, 0.25], [1.0, 0.0, 0.5]]).reshape(1, 1, 2, 3).expand(2, 1, 2, 3)
    out = blend_rows(x, mask)
    assert torch.equal(out[0], x[0])
    for r in (1, 2):
        m = mask[r - 1, 0]
        assert torch.equal(out[r][:, m == 0], x[0][:, m == 0])
        assert torch.equal(out[r][:, m == 1], x[r][:, m == 1])
        soft = (m > 0) & (m < 1)
        assert torch.equal(out[r][:, soft], (x[0] + m * (x[r] - x[0]))[:, soft])


# ----------------------------------------------------------------------------------------------------------------
# Edited Sample with masks (host)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tiny_model):
    from helpers import encode, image_latent
    from nulltext_p2p.nodes.ddim_invert import run_inversion
    from nulltext_p2p.nodes.fast_inversion import run_fast_inversion

    model, clip, vae = tiny_model
    source, null = encode(clip, SOURCE), encode(clip, "")
    inv = run_inversion(model, source, image_latent(model, LATENT, LATENT, seed=5), STEPS)
    with torch.inference_mode():
        value, _ = run_fast_inversion(model, source, null, inv, "negative-prompt", 7.5)
    return model, clip, source, inv, value


def edit(setup, target=TARGET, mask=None, mask_combine="intersection", **control_kw):
    from helpers import control_for
    from nulltext_p2p.nodes.edited_sample import run_edit

    model, clip, source, inv, value = setup
    if target is None:
        tgt, control = None, None
    else:
        control, _, tgt = control_for(clip, target, **control_kw)
    with torch.inference_mode():
        return run_edit(model, inv, value, source, tgt, control, 7.5, preview=False, mask=mask,
                        mask_combine=mask_combine)


def half_mask() -> torch.Tensor:
    """Ones on the left half of the image, zeros on the right: [1, 128, 128]."""
    m = torch.zeros(1, IMAGE, IMAGE)
    m[:, :, : IMAGE // 2] = 1
    return m


def test_mask_of_ones_changes_nothing(setup):
    plain, _ = edit(setup)
    ones, stats = edit(setup, mask=torch.ones(1, IMAGE, IMAGE))
    assert torch.equal(plain, ones)
    assert torch.equal(stats.edit_mask, torch.ones(1, 1, LATENT, LATENT))
    plain_b, _ = edit(setup, **BLEND)
    ones_b, _ = edit(setup, mask=torch.ones(1, IMAGE, IMAGE), **BLEND)
    assert torch.equal(plain_b, ones_b)  # intersection with ones = the local blend alone
    print(f"all-ones mask: max |diff| to no mask {float((plain - ones).abs().max()):.1e} (no blend), "
          f"{float((plain_b - ones_b).abs().max()):.1e} (local blend)")


def test_mask_of_zeros_gives_the_reconstruction(setup):
    zeros, stats = edit(setup, mask=torch.zeros(1, IMAGE, IMAGE))
    plain, _ = edit(setup)
    recon, _ = edit(setup, target=None)
    assert torch.equal(zeros[1], zeros[0])  # the edit row is the reconstruction row, bit for bit
    assert torch.equal(zeros[0], plain[0])  # the reconstruction row itself is not changed by the mask
    print(f"zero mask: edit vs reconstruction row 0; row 0 vs reconstruction alone "
          f"{float((zeros[0] - recon[0]).abs().max()):.1e}; unmasked edit changes "
          f"{float((plain[1] - plain[0]).abs().max()):.2e}")
    assert float((zeros[0] - recon[0]).abs().max()) < 1e-4
    assert float((plain[1] - plain[0]).abs().max()) > 1e-3


def test_half_mask_keeps_the_other_half(setup):
    from nulltext_p2p.nodes.edited_sample import output_mask

    out, stats = edit(setup, mask=half_mask())
    diff = (out[1] - out[0]).abs()
    outside, inside = float(diff[:, :, LATENT // 2:].max()), float(diff[:, :, : LATENT // 2].max())
    print(f"half mask: max |edit - reconstruction| outside {outside:.1e}, inside {inside:.2e}")
    assert outside == 0.0  # bit-identical
    assert inside > 1e-3
    assert torch.equal(output_mask(stats, 1), half_mask())  # the MASK output is the mask applied


@pytest.mark.parametrize("mode", ["intersection", "union"])
def test_mask_with_local_blend(setup, mode):
    """The output is user x blend (or max) of the last step, and the latent follows it: where it is 0 the edit is
    the reconstruction, bit for bit."""
    from nulltext_p2p.nodes.common import build_edit
    from nulltext_p2p.nodes.edited_sample import output_mask

    from helpers import control_for

    model, clip, source, inv, value = setup
    control, _, _ = control_for(clip, TARGET, **BLEND)
    out, stats = edit(setup, mask=half_mask(), mask_combine=mode, **BLEND)
    blend = build_edit(control, inv.steps).blend_mask(stats.cross_maps.unsqueeze(1), (LATENT, LATENT))[1:]
    user = prepare_user_mask(half_mask(), 1, (LATENT, LATENT))
    expected = user * blend if mode == "intersection" else torch.maximum(user, blend)
    assert torch.equal(stats.edit_mask, expected)
    assert torch.equal(output_mask(stats, 1), to_image_mask(expected))
    zero = expected[0, 0] == 0
    outside = float((out[1] - out[0]).abs()[:, zero].max()) if zero.any() else 0.0
    print(f"{mode}: blend mask covers {float(blend.mean()):.0%}, applied mask {float(expected.mean()):.0%}; "
          f"max |edit - reconstruction| where it is 0: {outside:.1e}")
    assert 0 < float(blend.mean()) < 1 and 0 < float(expected.mean()) < 1
    assert not torch.equal(expected, user)  # the blend mask took part
    assert outside == 0.0


def test_before_the_blend_start_only_the_mask_applies(setup):
    """blend_start 1.0: the local blend never starts, so 'union' leaves the user mask alone."""
    from nulltext_p2p.nodes.edited_sample import output_mask

    out_u, stats_u = edit(setup, mask=half_mask(), mask_combine="union", blend_start=1.0, **BLEND)
    out_m, _ = edit(setup, mask=half_mask(), blend_start=1.0)
    assert torch.equal(output_mask(stats_u, 1), half_mask())
    assert torch.equal(out_u, out_m)


def test_one_mask_per_edit_and_soft_masks(setup):
    from nulltext_p2p.nodes.edited_sample import output_mask

    two = f"{TARGET}\na dog sitting on a table"
    plain, _ = edit(setup, target=two)
    masks = torch.stack([torch.zeros(IMAGE, IMAGE), torch.ones(IMAGE, IMAGE)])
    out, stats = edit(setup, target=two, mask=masks)
    assert torch.equal(out[1], out[0])  # edit 1: mask 0
    assert torch.equal(out[2], plain[2])  # edit 2: mask 1
    assert torch.equal(output_mask(stats, 2), masks)
    soft, _ = edit(setup, mask=torch.full((1, IMAGE, IMAGE), 0.5))
    d_src, d_edit = float((soft[1] - plain[0]).abs().max()), float((soft[1] - plain[1]).abs().max())
    print(f"soft mask 0.5: max |edit - reconstruction| {d_src:.2e}, |edit - unmasked edit| {d_edit:.2e}")
    assert d_src > 1e-4 and d_edit > 1e-4


def test_mask_of_another_size_is_stretched(setup):
    from nulltext_p2p.nodes.edited_sample import output_mask

    m = torch.zeros(1, 30, 50)
    m[:, :, :25] = 1  # left half, another size and aspect ratio
    out, stats = edit(setup, mask=m)
    assert torch.equal(output_mask(stats, 1), half_mask())
    assert float((out[1] - out[0]).abs()[:, :, LATENT // 2:].max()) == 0.0


def test_bad_masks_name_the_input(setup):
    from nulltext_p2p.host.errors import NodeInputError

    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Edited Sample\] input 'mask': it holds 3 masks but there is 1 edit.*Fix:"):
        edit(setup, mask=torch.ones(3, IMAGE, IMAGE))
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Edited Sample\] input 'mask': .*NaN"):
        edit(setup, mask=torch.full((1, IMAGE, IMAGE), float("inf")))
    with pytest.raises(NodeInputError, match=r"\[Null-text P2P: Edited Sample\] input 'mask_combine': .*intersection, union"):
        edit(setup, mask=half_mask(), mask_combine="both")


def test_node_outputs_the_mask(setup):
    """Through the node class: three outputs; all ones without any mask; one mask of zeros without edits."""
    from helpers import control_for
    from nulltext_p2p.nodes.edited_sample import EditedSample

    model, clip, source, inv, value = setup
    control, _, tgt = control_for(clip, TARGET)
    with torch.inference_mode():
        masked = EditedSample.execute(model, inv, value, source, 7.5, tgt, control, mask=half_mask()).result
        plain = EditedSample.execute(model, inv, value, source, 7.5, tgt, control).result
        alone = EditedSample.execute(model, inv, value, source, 7.5).result
    assert len(masked) == 3
    assert torch.equal(masked[2], half_mask())
    assert torch.equal(plain[2], torch.ones(1, IMAGE, IMAGE))
    assert torch.equal(alone[2], torch.zeros(1, IMAGE, IMAGE))
    assert masked[0]["samples"].shape == (2, 4, LATENT, LATENT)


def test_schema_mask_input_and_output_have_tooltips(host):
    from nulltext_p2p.nodes.edited_sample import EditedSample

    schema = EditedSample.GET_SCHEMA()  # validates the schema as the host does (unique ids, ...)
    inputs = {i.id: i for i in schema.inputs}
    outputs = {o.id: o for o in schema.outputs}
    assert inputs["mask"].optional and inputs["mask_combine"].optional
    assert inputs["mask_combine"].options == ["intersection", "union"] and inputs["mask_combine"].default == "intersection"
    assert list(outputs) == ["latent", "attention", "applied_mask"]  # new output last: saved links keep their slots
    assert all(item.tooltip for item in [*schema.inputs, *schema.outputs])
