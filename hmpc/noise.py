"""Sampling noise of the CEM and MPPI optimisers: Gaussian action sequences, white or coloured
along time (iCEM). Shapes: n candidates, H = horizon, A = action size."""

from __future__ import annotations

import torch


def colored_noise(gen: torch.Generator, n: int, horizon: int, dim: int, beta: float) -> torch.Tensor:
    """n sequences of Gaussian noise with power spectrum ~ 1 / f**beta along time
    -> (n, horizon, dim), on the CPU; every step is N(0, 1). beta = 0 is white noise; iCEM (Pinneri et al. 2020) uses 2-4:
    neighbouring steps agree, so samples go somewhere (a random walk of white-noise steps cancels
    itself out over a long horizon, and a route around a wall is never drawn)."""
    if beta == 0 or horizon == 1:  # one step has no time axis to colour
        return torch.randn((n, horizon, dim), generator=gen)
    freqs = torch.fft.rfftfreq(horizon)  # (F,), F = horizon // 2 + 1, cycles per step
    freqs[0] = 1.0 / horizon  # the constant component gets the lowest frequency's power
    scale = freqs.pow(-beta / 2.0)  # amplitude = sqrt(power)
    re = torch.randn((n, dim, len(freqs)), generator=gen)
    im = torch.randn((n, dim, len(freqs)), generator=gen)
    im[..., 0] = 0.0  # the constant and (even horizons) the Nyquist components are real
    real_only = [0, len(freqs) - 1] if horizon % 2 == 0 else [0]
    if horizon % 2 == 0:
        im[..., -1] = 0.0
    x = torch.fft.irfft(torch.complex(re, im) * scale, n=horizon)  # (n, dim, horizon)
    # every x_t has variance (sum_real s^2 + 4 sum_complex s^2) / horizon^2: divide that out, so
    # each step is N(0, 1) as with white noise (a sequence's own spread is left as drawn)
    weight = torch.full_like(scale, 4.0)
    weight[real_only] = 1.0
    sigma = (weight * scale.pow(2)).sum().sqrt() / horizon
    x = x / sigma
    return x.transpose(1, 2).contiguous()


def sample_around(
    gen: torch.Generator, mean: torch.Tensor, std: torch.Tensor, n: int, beta: float = 0.0
) -> torch.Tensor:
    """n Gaussian sequences around mean (H, A) -> (n, H, A) (noise coloured by ``beta`` along
    time, see :func:`colored_noise`); row 0 is the mean itself."""
    eps = colored_noise(gen, n, *mean.shape, beta).to(mean)  # CPU generator: any device
    cand = mean + std * eps
    cand[0] = mean  # always score the current mean (the warm start on the first iteration)
    return cand
