"""Representation diagnostics: probe R² must be honest (pooled over many windows)."""

import pytest
import torch

from hmpc.diagnostics import (
    health_warnings,
    linear_probe_r2,
    pooled_error_ratios,
    pooled_probe_r2,
    representation_report,
    rolled_views,
    window_diagnostics,
)
from hmpc.world_model import WorldModelSpec


class _StateEncoder:
    """WorldModel stand-in with one level whose latent is (state, then per-window nuisance dims)."""

    spec = WorldModelSpec(levels=())

    def __init__(self, nuisance: int, collapsed: bool = False) -> None:
        self.nuisance, self.collapsed = nuisance, collapsed
        self.gen = torch.Generator().manual_seed(0)

    def encode_window(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        b, t, _ = state.shape
        junk = torch.randn(b, 1, self.nuisance, generator=self.gen).expand(b, t, self.nuisance)
        z = torch.cat([state, junk], dim=-1)
        return torch.zeros_like(z) if self.collapsed else z


def _window_batches(n: int, windows: int = 4, frames: int = 8) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):  # each window: one random place, drifting a little
        start = torch.rand(windows, 1, 2, generator=gen) * 10
        state = start + 0.05 * torch.arange(frames).view(1, frames, 1)
        out.append({"pixels": torch.zeros(windows, frames, 3, 1, 1),
                    "action": torch.zeros(windows, frames - 1, 2), "state": state})
    return out


def test_pooled_probe_reads_a_decodable_state_and_flags_a_collapsed_encoder():
    batches = _window_batches(16)  # 64 windows: the probe (31 inputs) is fit on 32 distinct places
    assert pooled_probe_r2(_StateEncoder(nuisance=29), batches)["l1/probe_r2"] > 0.95
    assert pooled_probe_r2(_StateEncoder(29, collapsed=True), batches)["l1/probe_r2"] < 0.05
    # what a probe fit inside each batch (2 windows: 2 places) reads for the same healthy encoder
    enc = _StateEncoder(nuisance=29)
    per_batch = []
    for b in batches:
        z, y = enc.encode_window(b["pixels"], b["state"]), b["state"]
        per_batch.append(linear_probe_r2(z[:2].flatten(0, 1), y[:2].flatten(0, 1),
                                         z[2:].flatten(0, 1), y[2:].flatten(0, 1)))
    assert sum(per_batch) / len(per_batch) < 0.5


class _PusherOnlyEncoder(_StateEncoder):
    """Encodes state dims 0-1 (the part the actions move) and drops dims 2-3 (what they push)."""

    def encode_window(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return super().encode_window(pixels, state[..., :2])


def test_probe_dims_choose_which_state_the_diagnostics_read():
    # Push-T-like: a model that tracks the pusher and ignores the block reads healthy on the
    # default dims (0, 1) and fails on the block's dims, which trainer.probe_dims selects
    batches = _window_batches(16)
    gen = torch.Generator().manual_seed(2)
    for b in batches:
        block = torch.rand(b["state"].shape[0], 1, 2, generator=gen).expand(-1, b["state"].shape[1], 2)
        b["state"] = torch.cat([b["state"], block], dim=-1)
    enc = _PusherOnlyEncoder(nuisance=29)
    assert pooled_probe_r2(enc, batches)["l1/probe_r2"] > 0.95
    assert pooled_probe_r2(enc, batches, probe_dims=(2, 3))["l1/probe_r2"] < 0.3


class _DriftModel(_StateEncoder):
    """A stand-in with a level-1 rollout that moves the state dims by ``drift`` per step (the
    windows' state drifts by +0.05 per frame) and, with ``nuisance_drift``, the nuisance dims too."""

    def __init__(self, drift: float, nuisance_drift: float = 0.0) -> None:
        super().__init__(nuisance=29)
        self.drift, self.nuisance_drift = drift, nuisance_drift

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor, level: int = 1) -> torch.Tensor:
        steps = torch.arange(1, actions.shape[1] + 1, dtype=s0.dtype).view(1, -1, 1)
        step = torch.full((s0.shape[-1],), self.nuisance_drift)
        step[:2] = self.drift
        return s0.unsqueeze(1) + steps * step


def test_probed_prediction_ratio_reads_the_state_the_latent_error_hides():
    batches = _window_batches(16)
    def ratio(model):
        return pooled_probe_r2(model, batches)["l1/probe_pred_ratio"]
    assert ratio(_DriftModel(0.05)) < 0.05  # the true dynamics (up to the probe's shrinkage)
    assert abs(ratio(_DriftModel(0.0)) - 1) < 1e-3  # "nothing moves" is the baseline
    assert ratio(_DriftModel(-0.05)) > 3.5  # the wrong way: (2 * 0.35)^2 / 0.35^2 = 4
    # an error in the nuisance dims that makes the latent-space ratio worse than copying the
    # start leaves the probed ratio of the right state dynamics small
    noisy = _DriftModel(0.05, nuisance_drift=0.05)
    assert all(window_diagnostics(noisy, b)["l1/pred_err_ratio"] > 1 for b in batches)
    assert ratio(noisy) < 0.1


class _EvalDriftModel(_DriftModel):
    """The true dynamics of one speed (0.05 per frame), no nuisance dims, and the train/eval
    switch :func:`representation_report` flips."""

    training = False

    def __init__(self) -> None:
        super().__init__(0.05)
        self.nuisance = 0

    def eval(self) -> None:
        pass

    def train(self, mode: bool = True) -> None:
        pass


def test_report_pools_the_error_ratio_over_batches_of_any_size():
    frames, n = 8, 16
    # each window its own speed, so its own error: 12 near the model's, 4 slow ones it misreads
    speed = torch.cat([torch.linspace(0.04, 0.06, 12), torch.full((4,), 0.01)]).view(n, 1, 1)
    state = torch.rand(n, 1, 2, generator=torch.Generator().manual_seed(3)) * 10 \
        + speed * torch.arange(frames).view(1, frames, 1)
    def part(i, j):
        return {"pixels": torch.zeros(j - i, frames, 3, 1, 1), "action": torch.zeros(j - i, frames - 1, 2),
                "state": state[i:j]}
    model = _EvalDriftModel()
    whole = representation_report(model, [part(0, n)])["level_1"]["pred_err_ratio"]
    split = representation_report(model, [part(0, 12), part(12, n)])["level_1"]["pred_err_ratio"]
    pooled = float(((speed - 0.05) ** 2).sum() / (speed**2).sum())  # 7 steps cancel
    assert whole == pytest.approx(pooled, rel=1e-4) and split == pytest.approx(pooled, rel=1e-4)
    views = [rolled_views(model, part(i, j)) for i, j in ((0, 12), (12, n))]  # what validation logs
    assert pooled_error_ratios(model, views)["l1/pred_err_ratio"] == pytest.approx(pooled, rel=1e-4)
    # what a mean of the two batches' ratios would read: the short batch weighs like the long one
    per_batch = [window_diagnostics(model, part(i, j))["l1/pred_err_ratio"] for i, j in ((0, 12), (12, n))]
    assert pooled < 0.3 and sum(per_batch) / 2 > 7  # the slow batch alone reads 16


class _NoisyDriftModel(_DriftModel):
    """The true dynamics, but an encoder that reads the state with per-frame noise (std ``noise``)."""

    def __init__(self, noise: float) -> None:
        super().__init__(0.05)
        self.noise = noise

    def encode_window(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        z = super().encode_window(pixels, state)
        z[..., :2] += self.noise * torch.randn(z[..., :2].shape, generator=self.gen)
        return z


def test_probed_floor_is_the_encoders_own_reading_of_the_final_frame():
    batches = _window_batches(64)  # 128 windows to fit on: the noisy probe must not overfit
    exact = pooled_probe_r2(_DriftModel(0.05), batches)
    assert exact["l1/probe_floor_ratio"] < 0.05  # this encoder reads the state exactly
    # read with noise as large as the state's motion over a window (0.35 per dim), the floor
    # rises toward copying: (0.5^2) / (0.35^2 + 0.5^2) = 0.67, and even the true dynamics,
    # started from a noisy reading, read no better
    noisy = pooled_probe_r2(_NoisyDriftModel(0.5), batches)
    assert 0.5 < noisy["l1/probe_floor_ratio"] < 0.85
    assert noisy["l1/probe_pred_ratio"] > 0.5
    # the floor does not depend on the predictor: one that moves nothing reads 1, its floor not
    still = _NoisyDriftModel(0.5)
    still.drift = 0.0
    for model, floor in ((_DriftModel(0.0), exact), (still, noisy)):
        r = pooled_probe_r2(model, batches)
        assert abs(r["l1/probe_pred_ratio"] - 1) < 0.05
        assert abs(r["l1/probe_floor_ratio"] - floor["l1/probe_floor_ratio"]) < 0.1


def _healthy(**change) -> dict:
    """One level's entry of representation_report, healthy unless ``change``d."""
    return {"probe_r2": 0.99, "pred_err_ratio": 0.3, "steps_per_window": 12, "eff_rank": 12.0,
            "std_mean": 1.0, "std_min": 0.6, "std_per_dim": [1.0] * 32, **change}


def test_health_warnings_name_what_is_wrong_and_stay_quiet_on_a_healthy_model():
    fit = [{"l1/pred": 0.0136}, {"l1/pred": 0.0136, "val/l1/pred": 0.0167}]  # 200 episodes: 1.2x
    assert health_warnings({"level_1": _healthy(), "level_2": _healthy()}, 1.0, fit) == []
    # the encoder that keyed on trainer.augment.shift=4 (PointMaze medium): held-out std 0.027
    (w,) = health_warnings({"level_1": _healthy(std_mean=0.027, eff_rank=23.2)}, window_jitter="shift=4")
    assert "level 1 has collapsed" in w and "0.027" in w and "shift=4 with per_frame=false" in w
    (w,) = health_warnings({"level_1": _healthy(std_mean=0.027)})
    assert "trainer.steps" in w and "model.loss.variance" in w and "shift" not in w
    assert health_warnings({"level_1": _healthy(std_mean=0.027)}, variance_target=0.2) == []
    assert health_warnings({"level_1": _healthy(std_mean=0.027)}, variance_target=0.0) == []  # term off
    (w,) = health_warnings({"level_2": _healthy(eff_rank=1.2)})
    assert "level 2's latents lie near a line" in w and "1.2 of 32" in w
    (w,) = health_warnings({"level_2": _healthy(pred_err_ratio=1.25)})
    assert "level 2 predicts no better than copying" in w and "12 steps" in w
    for bad in ({"pred_err_ratio": float("nan")}, {"std_mean": float("inf")}):
        (w,) = health_warnings({"level_2": _healthy(**bad)})
        assert "level 2's held-out diagnostics are not finite" in w and "trainer.lr" in w
    (w,) = health_warnings({"level_1": _healthy(probe_r2=0.3)})
    assert "R² 0.3" in w and "trainer.probe_dims" in w
    assert health_warnings({"level_1": _healthy(probe_r2=float("nan"))}) == []  # nothing probed
    rows = [{"l1/pred": 0.0079}] * 9 + [{"l1/pred": 0.0079, "val/l1/pred": 0.0612}]  # 20 episodes
    (w,) = health_warnings({"level_1": _healthy()}, 1.0, rows)
    assert "level 1 overfits" in w and "8x" in w and "video_vicreg" in w
    # a last batch without labelled windows logs l1/pred 0 (or a skipped step NaN): not counted
    zero = [{"l1/pred": 0.0136}] * 9 + [{"l1/pred": 0.0, "val/l1/pred": 0.0167}]
    assert health_warnings({}, 1.0, zero) == health_warnings({}, 1.0, zero + [{"l1/pred": float("nan")}]) == []
    # the training loss is the mean of the last 10 rows: one lucky batch does not raise a warning
    lucky = [{"l1/pred": 0.0136}] * 9 + [{"l1/pred": 0.001, "val/l1/pred": 0.0167}]
    assert health_warnings({}, 1.0, lucky) == []
