"""Image similarity in pure torch: PSNR and SSIM of images in [0, 1] (data range 1).

PSNR
    ``10 log10(1 / MSE)`` over all pixels and channels, in dB. Identical images (MSE <= 1e-10) give the cap
    :data:`PSNR_CAP_DB` = 100 dB instead of infinity, so the value stays a finite FLOAT (JSON-safe in the UI and
    usable in comparisons downstream).

SSIM
    Wang et al. 2004 with the usual constants: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range
    1 (C1 = 0.0001, C2 = 0.0009). Computed **per colour channel and averaged** (not on luminance), over the
    'valid' window positions only (no padding, as the authors' MATLAB code), in float64. Images smaller than 11 px
    on a side use the largest odd window that fits (same sigma).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0
MSE_FLOOR = 1e-10  # 10 log10(1 / 1e-10) = 100 dB
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB of two same-shape images (any layout), capped at :data:`PSNR_CAP_DB`."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    if mse <= MSE_FLOOR * data_range * data_range:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range * data_range / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian window [size, size] (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2) -> float:
    """Mean SSIM of two images [H, W, C] (ComfyUI IMAGE row layout) or [H, W], averaged over channels."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected [H, W, C] or [H, W], got {list(a.shape)}")
    h, w, c = a.shape
    size = min(window, h, w)
    if size % 2 == 0:
        size -= 1
    if size < 1:
        raise ValueError("empty image")
    kernel = gaussian_window(size, sigma)[None, None].repeat(c, 1, 1, 1)  # [C, 1, k, k] depthwise
    x = a.detach().double().permute(2, 0, 1)[None]  # [1, C, H, W]
    y = b.detach().double().permute(2, 0, 1)[None]

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x * mu_x
    syy = filt(y * y) - mu_y * mu_y
    sxy = filt(x * y) - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))
    return float(smap.mean(dim=(0, 2, 3)).mean())  # per channel, then averaged over channels
