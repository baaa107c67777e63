"""Representation health checks run at every validation: collapse, probes, prediction error.

All functions take tensors and return plain floats, so they log to CSV/TensorBoard unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from hmpc.losses import collapse_metrics
from hmpc.world_model import WorldModel

# The probe that reads *predicted* latents is regularised in proportion to its sample count. A
# near-unregularised one puts large weights on low-variance latent directions, and predictions
# that leave the encoder's manifold along them read as huge state errors (Push-T: 10-step block
# angle ratio 13 with ridge 1e-3, 0.99 with 20 = 1e-3 per sample; the probe's R² 0.858 vs 0.854).
PREDICTION_PROBE_RIDGE = 1e-3  # per fitted sample


def fit_prediction_probe(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`fit_linear_probe` regularised for reading predicted latents (PREDICTION_PROBE_RIDGE)."""
    return fit_linear_probe(z, y, PREDICTION_PROBE_RIDGE * z.shape[0])


def fit_linear_probe(z: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Ridge-regression weights (D + 1, d), bias last, reading states y (N, d) off latents z (N, D)."""
    x = _with_bias(z)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(x.T @ x + ridge * eye, x.T @ y.double())


def apply_probe(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """States (N, d) a probe from :func:`fit_linear_probe` reads off latents z (N, D) (float64)."""
    return _with_bias(z) @ w


def _with_bias(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.ones_like(z[:, :1])], dim=1).double()


def linear_probe_r2(
    z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
    ridge: float = 1e-3,
) -> float:
    """R² of a ridge-regression probe fit on (z_train, y_train), scored on held-out data.

    z: (N, D) latents, y: (N, d) simulator state. R² is averaged over the d state dims; 1 means
    the state is linearly decodable from the latent, 0 means no better than the mean.
    """
    return _r2(apply_probe(fit_linear_probe(z_train, y_train, ridge), z_test), y_test)


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """R² of predictions (N, d) of y (N, d), averaged over the d dims."""
    yt = y.double()
    ss_tot = (yt - yt.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return float((1 - (pred - yt).pow(2).sum(0) / ss_tot).mean())


def probed_error_ratio(
    w: torch.Tensor, start: torch.Tensor, pred: torch.Tensor, y_end: torch.Tensor
) -> float:
    """Open-loop prediction error in *state units*, relative to copying the start.

    The probe ``w`` (:func:`fit_prediction_probe`, fit on encoded latents) reads the predicted final
    latents ``pred`` (N, D) and the start latents ``start`` (N, D); both are compared with the true
    final states ``y_end`` (N, d). < 1: the predictor moves the probed state the right way; >= 1:
    it does not, even when its error in latent units (``pred_err_ratio``) is small, since the
    latent distance may be dominated by dims that say little about this state.

    Both errors include the probe's own read error. Passing the *encoded* final latents as
    ``pred`` measures that floor (``probe_floor_ratio``): what a predictor that hits the encoder's
    latent of the true final frame would read. A state the encoder reads poorly compared with how
    far it moves in a window has a floor near 1, and then so has every predictor.
    """
    y = y_end.double()
    err = (apply_probe(w, pred) - y).pow(2).sum()
    base = (apply_probe(w, start) - y).pow(2).sum().clamp_min(1e-12)
    return float(err / base)


def level_views(
    model: WorldModel, batch: dict[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per level l: (latents (B, n_l + 1, D_l), actions/codes (B, n_l, A_l), state (B, n_l + 1, d)).

    Level 1 sees every frame with real actions; level l >= 2 every span(l)-th frame through its
    projector, with the macro codes of the real-action chunks in between.
    """
    pixels, action, state = batch["pixels"], batch["action"], batch["state"]
    spec = model.spec
    s = model.encode_window(pixels, state)
    views = [(s, action, state)]
    for level in range(2, spec.num_levels + 1):
        k = spec.levels[level - 2].k
        s = model.abstract[level - 2].project(s[:, ::k])
        views.append((s, model.macro_codes(action, level), state[:, :: spec.span(level)]))
    return views


View = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


@torch.no_grad()
def rolled_views(model: WorldModel, batch: dict[str, torch.Tensor]) -> list[View]:
    """:func:`level_views` with each window's open-loop prediction of its last latent (B, D_l)
    from its first and its actions/codes (None for a model without ``rollout``): one encoding
    and one rollout per batch, shared by :func:`window_diagnostics` and :func:`pooled_probe_r2`."""
    rolls = hasattr(model, "rollout")
    return [(s, a, y, model.rollout(s[:, 0], a, level)[:, -1] if rolls else None)
            for level, (s, a, y) in enumerate(level_views(model, batch), start=1)]


@torch.no_grad()
def window_diagnostics(
    model: WorldModel, batch: dict[str, torch.Tensor], views: list[View] | None = None
) -> dict[str, float]:
    """Collapse metrics and k-step error ratios of one batch, per level (``l<l>/...`` keys).

    The error ratio divides the open-loop prediction error over the whole window by the error of
    the "nothing moves" baseline (s_T predicted as s_0): < 1 means the predictor learned dynamics.
    Probe R² needs many windows to be honest: see :func:`pooled_probe_r2`. ``views``: the batch's
    :func:`rolled_views`, when already computed.
    """
    out: dict[str, float] = {}
    views = views or rolled_views(model, batch)
    for level, (s, *_) in enumerate(views, start=1):
        for name, v in collapse_metrics(s.flatten(0, 1)).items():
            out[f"l{level}/{name}"] = v
    out.update(pooled_error_ratios(model, [views]))
    return out


def pooled_error_ratios(model: WorldModel, views: list[list[View]]) -> dict[str, float]:
    """``l<l>/pred_err_ratio`` over every window of several batches' :func:`rolled_views`: the
    total prediction error over the total copy-last error, so each window weighs the same whatever
    the batch sizes (a mean of per-batch ratios weighs a short batch like a full one)."""
    totals: dict[int, tuple[float, float]] = {}
    for batch_views in views:
        for level, (err, base) in enumerate(_error_sums(model, batch_views), start=1):
            e0, b0 = totals.get(level, (0.0, 0.0))
            totals[level] = (e0 + err, b0 + base)
    return {f"l{level}/pred_err_ratio": err / max(base, 1e-12) for level, (err, base) in totals.items()}


def _error_sums(model: WorldModel, views: list[View]) -> list[tuple[float, float]]:
    """Per level: the summed squared error of the windows' open-loop predictions of their last
    latent, and that of the copy-last baseline (s_T predicted as s_0)."""
    out = []
    for s, _, _, pred in views:
        if pred is None:
            raise TypeError(f"{type(model).__name__} has no rollout(): no prediction error to report")
        out.append((float((pred - s[:, -1]).pow(2).sum()), float((s[:, 0] - s[:, -1]).pow(2).sum())))
    return out


@torch.no_grad()
def pooled_probe_r2(
    model: WorldModel, batches: list[dict[str, torch.Tensor]], probe_dims: Sequence[int] = (0, 1),
    views: list[list[View]] | None = None,
) -> dict[str, float]:
    """Linear-probe R² of the state dims ``probe_dims``, per level (``l<l>/probe_r2``), and the
    open-loop prediction error over a window read through that probe (``l<l>/probe_pred_ratio``,
    :func:`probed_error_ratio`; for models with ``rollout``) with its floor, the same ratio for the
    encoded final frames (``l<l>/probe_floor_ratio``).

    The windows of all ``batches`` are pooled; the probe is fit on the first half of the windows
    and scored on the second half. Frames of one window are nearly the same state, so a probe fit
    within one small batch sees only a few distinct states: in a large maze it overfits and reads
    far too low (0.5 where the pooled probe reads 0.99). Windows whose episode logged no state
    (``has_state`` False: imported video) are left out. ``views``: each batch's
    :func:`rolled_views`, when already computed.
    """
    zs: dict[int, list[torch.Tensor]] = {}
    ys: dict[int, list[torch.Tensor]] = {}
    ends: dict[int, list[torch.Tensor]] = {}  # predicted final latents (N_windows, D_l)
    for batch, batch_views in zip(batches, views or [rolled_views(model, b) for b in batches], strict=True):
        keep = batch.get("has_state")
        keep = slice(None) if keep is None else keep.cpu()  # (B,) bool
        for level, (s, _, y, pred) in enumerate(batch_views, start=1):
            zs.setdefault(level, []).append(s.float().cpu()[keep])
            y = y[..., list(probe_dims)] if y.shape[-1] else y  # no observation.state: no probe
            ys.setdefault(level, []).append(y.float().cpu()[keep])
            if pred is not None:
                ends.setdefault(level, []).append(pred.float().cpu()[keep])
    out: dict[str, float] = {}
    for level in zs:
        z, y = torch.cat(zs[level]), torch.cat(ys[level])  # (N_windows, n_l + 1, .)
        half = z.shape[0] // 2
        if half >= 1 and y.shape[-1]:
            zf, yf = z[:half].flatten(0, 1), y[:half].flatten(0, 1)
            out[f"l{level}/probe_r2"] = linear_probe_r2(zf, yf, z[half:].flatten(0, 1),
                                                        y[half:].flatten(0, 1))
            if level in ends:  # the model rolls out
                w = fit_prediction_probe(zf, yf)
                out[f"l{level}/probe_pred_ratio"] = probed_error_ratio(
                    w, z[half:, 0], torch.cat(ends[level])[half:], y[half:, -1])
                out[f"l{level}/probe_floor_ratio"] = probed_error_ratio(
                    w, z[half:, 0], z[half:, -1], y[half:, -1])
    return out


@torch.no_grad()
def representation_report(
    model: WorldModel, batches: list[dict[str, torch.Tensor]], probe_dims: Sequence[int] = (0, 1)
) -> dict[str, dict]:
    """End-of-training health report, per level, over held-out ``batches``.

    Returns {"level_<l>": {"probe_r2", "pred_err_ratio", "probe_pred_ratio", "probe_floor_ratio",
    "steps_per_window", "eff_rank", "std_mean", "std_min", "std_per_dim": [D_l floats]}}. Every
    number pools all windows: the error ratio is the total prediction error over the total
    copy-last error (a mean of per-batch ratios weighs a short last batch like a full one: on
    PointMaze medium's 271 held-out windows, in batches of 64 and 15, one model read 0.442 that
    way and 0.275 pooled); probe R² (:func:`pooled_probe_r2`), std and effective rank likewise.
    Each batch is encoded and rolled out once.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    latents: dict[int, list[torch.Tensor]] = {}
    views = [rolled_views(model, batch) for batch in batches]
    for batch_views in views:
        for level, (s, *_) in enumerate(batch_views, start=1):
            latents.setdefault(level, []).append(s.flatten(0, 1).float().cpu())
    sums.update(pooled_error_ratios(model, views))
    sums.update(pooled_probe_r2(model, batches, probe_dims, views))
    model.train(was_training)
    report: dict[str, dict] = {}
    for level, zs in latents.items():
        z = torch.cat(zs)
        entry = {
            "probe_r2": sums.get(f"l{level}/probe_r2", float("nan")),
            "pred_err_ratio": sums[f"l{level}/pred_err_ratio"],
            "probe_pred_ratio": sums.get(f"l{level}/probe_pred_ratio", float("nan")),
            "probe_floor_ratio": sums.get(f"l{level}/probe_floor_ratio", float("nan")),
            "steps_per_window": int(batches[0]["action"].shape[1] // model.spec.span(level)),
            **collapse_metrics(z),
            "std_per_dim": [round(float(v), 5) for v in z.std(dim=0)],
        }
        report[f"level_{level}"] = entry
    return report


# Thresholds of :func:`health_warnings`.
COLLAPSED_STD = 0.1  # held-out latents' mean std below this share of the variance target: collapsed
LINE_RANK = 1.5  # effective rank below this: the latents lie near a line
LOW_PROBE_R2 = 0.5  # a linear probe reads the probed state dims worse than this: barely encoded
# held-out level-1 prediction loss over the training loss (mean of the last OVERFIT_ROWS logged
# rows) above which level 1 overfits. PointMaze medium, 2000 steps: 1.2x with 200 labelled
# episodes, 6-11x with 20, 6-61x with 20 + 180 video-only (bench/RESULTS.md#health-warnings)
OVERFIT_RATIO = 5.0
OVERFIT_ROWS = 10


def health_warnings(
    report: dict[str, dict], variance_target: float = 1.0,
    rows: Sequence[dict[str, float]] = (), window_jitter: str = "",
) -> list[str]:
    """Plain-language warnings about a trained model; empty when nothing looks wrong.

    ``report``: :func:`representation_report` on held-out windows; ``variance_target``: the std the
    variance term asks of each latent dim (``model.loss.variance_target``; 0 when the term is off:
    no collapse check); ``rows``: the logged training rows, whose ``l1/pred`` (training level-1
    prediction loss, averaged over the last rows that have one > 0: a batch without labelled
    windows logs 0) and last ``val/l1/pred`` (held out) tell overfitting. The training loss is
    measured on augmented windows (``trainer.augment``), which raises it and can hide overfitting.
    ``window_jitter``: the augmentations drawn once per window, e.g. "shift=4" (a collapse then
    names them; ``ImageAugment.window_jitter``). Each warning names the level, the measured value,
    the threshold and what to try.
    """
    out: list[str] = []
    for key, entry in report.items():
        level = key.removeprefix("level_")
        std, rank, ratio = entry["std_mean"], entry["eff_rank"], entry["pred_err_ratio"]
        if not all(math.isfinite(v) for v in (std, rank, ratio)):
            out.append(f"level {level}'s held-out diagnostics are not finite (mean std {std}, "
                       f"effective rank {rank}, error ratio {ratio}): the model gives NaN/inf "
                       "latents or predictions; check the data (hmpc-dataset validate) and lower "
                       "trainer.lr")
            continue
        if std < COLLAPSED_STD * variance_target:
            why = (f"the encoder may read the jitter drawn once per window (trainer.augment "
                   f"{window_jitter} with per_frame=false; it did on PointMaze: "
                   "bench/jitter_shortcut.py): set trainer.augment.per_frame=true" if window_jitter else
                   "train longer (trainer.steps), or raise model.loss.variance or "
                   "model.loss.inverse_dynamics")
            out.append(f"level {level} has collapsed on held-out windows: its latents' mean std is "
                       f"{std:.3g} where the variance term asks {variance_target:g}; {why}")
        elif rank < LINE_RANK:
            out.append(f"level {level}'s latents lie near a line (effective rank {rank:.3g} of "
                       f"{len(entry.get('std_per_dim', [])) or '?'} dims): raise model.loss.covariance")
        if ratio >= 1.0:
            out.append(
                f"level {level} predicts no better than copying its first latent (error ratio "
                f"{ratio:.3g} >= 1 over {entry['steps_per_window']} steps): train longer "
                "(trainer.steps), or check that the dataset's actions move what the camera sees")
        r2 = entry.get("probe_r2", float("nan"))
        if math.isfinite(r2) and r2 < LOW_PROBE_R2:  # NaN: no probed state
            out.append(f"level {level}: a linear probe reads the probed observation.state dims "
                       f"(trainer.probe_dims) with R² {r2:.3g} < {LOW_PROBE_R2}: the latents barely "
                       "encode them")
    train = [r["l1/pred"] for r in rows if r.get("l1/pred", 0) > 0][-OVERFIT_ROWS:]  # NaN: not > 0
    held = [r["val/l1/pred"] for r in rows if "val/l1/pred" in r][-1:]
    fit = float(np.mean(train)) if train else float("nan")
    if held and math.isfinite(held[0]) and held[0] > OVERFIT_RATIO * fit:  # NaN fit: no warning
        gap = held[0] / fit
        out.append(
            f"level 1 overfits its training episodes: held-out prediction loss {held[0]:.3g} is "
            f"{gap:.0f}x the training loss {fit:.3g} (warned above {OVERFIT_RATIO:g}x). More "
            "action-labelled episodes help most (PointMaze medium: 1.2x with 200, 6-11x with 20). "
            "With trainer.video_only=use, model.loss.video_vicreg=false keeps video-only windows "
            "out of level 1 (bench/RESULTS.md#video-only-data). A model that overfits may still "
            "plan well: check with hmpc-eval")
    return out
