"""The flow-matching schedule of the joint-attention transformers (SD3/SD3.5, Qwen-Image): Euler steps on sigmas.

The host's flow models (``model_sampling`` CONST) see ``x_sigma = (1 - sigma) x0 + sigma noise`` and predict the
velocity ``v = (x_sigma - x0) / sigma`` (the host returns ``denoised = x - sigma v``). The Euler step the host's
``euler`` sampler takes from ``sigma_i`` to ``sigma_{i+1}`` is::

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, sigma_i)

Inversion undoes step ``i`` the way the reference undoes a DDIM step: the velocity at the less noisy latent, at the
step's own sigma::

    x_i = x_{i+1} + (sigma_i - sigma_{i+1}) v(x_{i+1}, sigma_i)

Latents need no rescaling: the host's sampler works on ``x_sigma`` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class FlowSchedule:
    """``sigmas[i]`` is the noise level at the start of sampling step ``i`` (descending, ``steps + 1`` values; the
    last is where sampling ends, 0 for a full run)."""

    sigmas_: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.sigmas_) < 2:
            raise ValueError("a flow schedule needs at least two sigmas")
        if any(b >= a for a, b in zip(self.sigmas_, self.sigmas_[1:])):
            raise ValueError(f"flow sigmas must decrease, got {list(self.sigmas_)}")

    @classmethod
    def from_sigmas(cls, sigmas: Sequence[float] | torch.Tensor) -> "FlowSchedule":
        values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas
        return cls(tuple(float(s) for s in values))

    @property
    def kind(self) -> str:
        return "flow"

    @property
    def steps(self) -> int:
        return len(self.sigmas_) - 1

    @property
    def timesteps(self) -> tuple[float, ...]:
        """The model's level at each sampling step (its sigma), as ``DDIMSchedule.timesteps`` (integer timesteps)."""
        return self.sigmas_[:-1]

    def model_level(self, i: int) -> float:
        """The sigma the model is evaluated at for sampling step ``i``."""
        return self.sigmas_[i]

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        """Sampling step ``i``: Euler from ``sigma_i`` to ``sigma_{i+1}``."""
        return x + (self.sigmas_[i + 1] - self.sigmas_[i]) * v

    def inverse_step(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        """Undo sampling step ``i``: from ``sigma_{i+1}`` back to ``sigma_i`` with ``v`` evaluated at ``sigma_i``."""
        return x + (self.sigmas_[i] - self.sigmas_[i + 1]) * v

    def to_sampler(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The host sampler's scaling is the flow latent itself."""
        return x

    def from_sampler(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x

    def sigmas(self) -> torch.Tensor:
        """The sigmas for the host sampler (float32, ``steps + 1``)."""
        return torch.tensor(self.sigmas_, dtype=torch.float32)

    def step_of_sigma(self, sigma: float, rel_tol: float = 1e-3) -> int | None:
        """Index of the sampling step whose starting sigma is ``sigma``; None when it is not on this schedule."""
        sig = self.sigmas_[:-1]
        best = min(range(len(sig)), key=lambda i: abs(math.log(max(sig[i], 1e-12)) - math.log(max(sigma, 1e-12))))
        return best if abs(sig[best] - sigma) <= rel_tol * sig[best] else None
