"""Reconstruction Check: PSNR / SSIM against hand computations, identical images, sizes, batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nulltext_p2p.core.image_metrics import PSNR_CAP_DB, psnr, ssim


def numpy_ssim(a: np.ndarray, b: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 by hand: Gaussian-weighted local statistics at every 'valid' window position, per channel."""
    x = np.arange(win) - (win - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    h, wd, ch = a.shape
    per_channel = []
    for c in range(ch):
        vals = []
        for i in range(h - win + 1):
            for j in range(wd - win + 1):
                pa = a[i:i + win, j:j + win, c]
                pb = b[i:i + win, j:j + win, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va = (w * (pa - ma) ** 2).sum()
                vb = (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def pair(h=20, w=24, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a = torch.stack([xx, yy, 0.5 * (xx + yy)], -1) * 0.8 + 0.1 * torch.rand(h, w, 3, generator=g)
    b = (a + noise * torch.randn(h, w, 3, generator=g)).clamp(0, 1)
    return a, b


def test_psnr_of_a_known_mse():
    a = torch.zeros(1, 8, 8, 3)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)  # MSE 0.01
    b = a.clone()
    b[0, 0, 0, 0] = 1.0  # MSE 1/192
    assert psnr(a, b) == pytest.approx(10 * math.log10(192), abs=1e-9)


def test_ssim_matches_a_numpy_hand_computation():
    a, b = pair()
    ours = ssim(a, b)
    ref = numpy_ssim(a.double().numpy(), b.double().numpy())
    print(f"SSIM torch {ours:.12f} vs numpy {ref:.12f}")
    assert abs(ours - ref) < 1e-10
    assert 0.0 < ours < 0.99


def test_identical_images_give_the_psnr_cap_and_ssim_one():
    a, _ = pair()
    assert psnr(a, a.clone()) == PSNR_CAP_DB
    assert ssim(a, a.clone()) == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(psnr(a, a))


def test_small_images_use_a_smaller_window():
    a, b = pair(h=7, w=9)
    assert abs(ssim(a, b) - numpy_ssim(a.double().numpy(), b.double().numpy(), win=7)) < 1e-10


@pytest.fixture(scope="module")
def node(host):
    from nulltext_p2p.nodes.reconstruction_check import ReconstructionCheck

    schema = ReconstructionCheck.GET_SCHEMA()
    assert schema.node_id == "NTP_ReconstructionCheck" and schema.category == "nulltext_p2p/inversion"
    return ReconstructionCheck


def test_node_outputs_row_zero_and_lists_every_row(node):
    a, b = pair()
    source = a[None]
    recon = torch.stack([a, b, a * 0.5])
    out = node.execute(source, recon)
    p, s = out.args
    assert p == PSNR_CAP_DB and s == pytest.approx(1.0)
    text = out.ui["text"][0]
    print(text)
    assert "reconstruction: PSNR 100.00 dB (identical), SSIM 1.0000" in text
    assert f"row 1: PSNR {psnr(a, b):.2f} dB" in text and "row 2:" in text


def test_node_compares_with_the_first_source_image(node):
    a, b = pair()
    out = node.execute(torch.stack([a, b]), b[None])
    assert out.args[0] == pytest.approx(psnr(a, b))
    assert "compared with the first" in out.ui["text"][0]


def test_node_ignores_alpha(node):
    a, b = pair()
    rgba = torch.cat([a, torch.rand(*a.shape[:2], 1)], -1)
    out = node.execute(rgba[None], b[None])
    assert out.args[0] == pytest.approx(psnr(a, b)) and out.args[1] == pytest.approx(ssim(a, b))


def test_different_sizes_are_refused_with_a_fix(node):
    a, _ = pair(20, 24)
    b, _ = pair(16, 24)
    with pytest.raises(ValueError) as e:
        node.execute(a[None], b[None])
    msg = str(e.value)
    print(msg)
    assert "[Null-text P2P: Reconstruction Check] input 'reconstruction'" in msg and "24x16" in msg and "24x20" in msg
    assert "Upscale Image" in msg and "Fix:" in msg
