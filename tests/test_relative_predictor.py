"""model.predictor=relative: level-1 dynamics that see keypoints relative to the agent."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from hmpc.checkpoint import load_checkpoint, save_checkpoint
from hmpc.models import RelativePredictor, ResidualPredictor, make_predictor
from hmpc.objective import LossWeights, world_model_loss
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model
from robots import make_env

K, V, P, A = 3, 1, 2, 2  # keypoints, vectors per keypoint, fused state, action
D = 2 * K * (1 + V) + P


def _latent(g: torch.Generator, b: int = 5) -> torch.Tensor:
    return torch.rand(b, D, generator=g) * 2 - 1


def _shift(s: torch.Tensor, delta: torch.Tensor, state_delta: torch.Tensor) -> torch.Tensor:
    """Every keypoint moved by delta (2,), the fused state's x, y by state_delta (2,)."""
    out = s.clone()
    out[:, : 2 * K] += delta.repeat(K)
    out[:, D - P : D - P + 2] += state_delta
    return out


def test_a_shifted_scene_predicts_the_same_change_shifted():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    # the anchor: keypoint coordinates = 2 * state + 0.1
    rel = RelativePredictor(K, V, P, A, hidden=16, anchor_map=[[2.0, 0.0, 0.1], [0.0, 2.0, 0.1]])
    s, a = _latent(g), torch.rand(5, A, generator=g) * 2 - 1
    delta = torch.tensor([0.3, -0.2])
    moved = _shift(s, delta, delta / 2)  # the agent moves with the scene: its anchor by delta
    torch.testing.assert_close(rel(moved, a) - moved, rel(s, a) - s)
    # moving the keypoints but not the agent is a different scene: a different change
    apart = _shift(s, delta, torch.zeros(2))
    assert not torch.allclose(rel(apart, a) - apart, rel(s, a) - s, atol=1e-4)
    # a plain residual MLP sees absolute places, so the same shift changes its prediction
    res = ResidualPredictor(D, A, hidden=16)
    assert not torch.allclose(res(moved, a) - moved, res(s, a) - s, atol=1e-4)


def test_without_fused_state_the_keypoints_centroid_is_the_anchor():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    d = 2 * K * (1 + V)
    rel = RelativePredictor(K, V, 0, A, hidden=16)
    assert not rel.anchored and not hasattr(rel, "anchor_map")
    s, a = torch.rand(4, d, generator=g), torch.rand(4, A, generator=g)
    moved = s.clone()
    moved[:, : 2 * K] += torch.tensor([-0.4, 0.25]).repeat(K)
    torch.testing.assert_close(rel(moved, a) - moved, rel(s, a) - s)
    spread = s.clone()
    spread[:, 0] += 0.5  # one keypoint moves relative to the others
    assert not torch.allclose(rel(spread, a) - spread, rel(s, a) - s, atol=1e-4)


def test_world_model_with_a_relative_predictor_trains_and_round_trips(tmp_path):
    spec = WorldModelSpec(image_size=16, action_dim=A, latent_dim=D, widths=(4, 8), hidden=16,
                          state_dim=P, keypoints=K, keypoint_vectors=V, num_predictors=2,
                          predictor="relative", anchor_map=[[1.5, 0.0, -0.7], [0.0, -1.5, 0.7]],
                          levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),))
    m = build_world_model(spec, seed=0)
    assert isinstance(m.predictor, RelativePredictor) and isinstance(m.ensemble[0], RelativePredictor)
    g = torch.Generator().manual_seed(0)
    b = {"pixels": torch.randint(0, 256, (4, 5, 3, 16, 16), generator=g, dtype=torch.uint8),
         "action": torch.rand(4, 4, A, generator=g) * 2 - 1, "state": torch.rand(4, 5, 4, generator=g)}
    loss, _ = world_model_loss(m, b, LossWeights())
    loss.backward()
    assert m.spec.anchor_map == ((1.5, 0.0, -0.7), (0.0, -1.5, 0.7))  # lists become tuples
    # the map is a fixed buffer, scaled onto the keypoint grid of a 16-pixel image (side 4)
    assert not any("anchor" in n for n, _ in m.named_parameters())
    torch.testing.assert_close(m.predictor.anchor_map[0, 0], torch.tensor(1.5 * 4 / 3))
    save_checkpoint(tmp_path / "ck", m, {})
    back, _ = load_checkpoint(tmp_path / "ck")
    assert back.spec == m.spec
    s = m.encode(b["pixels"][:, 0], b["state"][:, 0, :P])
    torch.testing.assert_close(back.rollout(s, b["action"]), m.rollout(s, b["action"]))


def test_relative_predictor_needs_a_keypoint_latent_without_a_linear_head():
    """The spec refuses it (before any data is read), and so does the factory on its own."""
    base = WorldModelSpec(image_size=16, latent_dim=D, widths=(4, 8), hidden=16, state_dim=P,
                          keypoints=K, keypoint_vectors=V, predictor="relative",
                          anchor_map=((2.0, 0.0, -1.0), (0.0, -2.0, 1.0)))
    with pytest.raises(ValueError, match=r"model.latent_dim=9 must equal .* = 14"):
        replace(base, latent_dim=9)
    with pytest.raises(ValueError, match=r"model.keypoints > 0 \(got 0\)"):
        replace(base, keypoints=0, keypoint_vectors=0, state_dim=0)
    with pytest.raises(ValueError, match="model.predictor='mlp'; use 'residual' or 'relative'"):
        replace(base, predictor="mlp")
    with pytest.raises(ValueError, match=r"model.latent_dim=9 must equal .* = 14"):
        make_predictor("relative", 9, A, 16, K, V, P, base.anchor_map)
    with pytest.raises(ValueError, match="model.predictor='mlp'"):
        make_predictor("mlp", D, A, 16, K, V, P)


def test_the_anchor_map_is_required_with_fused_state_and_checked():
    base = WorldModelSpec(image_size=16, latent_dim=D, widths=(4, 8), hidden=16, state_dim=P,
                          keypoints=K, keypoint_vectors=V, predictor="relative",
                          anchor_map=((2.0, 0.0, -1.0), (0.0, -2.0, 1.0)))
    with pytest.raises(ValueError, match=r"needs model.anchor_map.*image_map\(\)"):
        replace(base, anchor_map=None)
    with pytest.raises(ValueError, match=r"needs model.anchor_map"):
        make_predictor("relative", D, A, 16, K, V, P)
    with pytest.raises(ValueError, match=r"model.anchor_map=.* must be 2 rows of 3 finite numbers"):
        replace(base, anchor_map=((2.0, 0.0), (0.0, -2.0)))
    with pytest.raises(ValueError, match=r"must be 2 rows of 3 finite numbers"):
        replace(base, anchor_map=((2.0, 0.0, float("nan")), (0.0, -2.0, 1.0)))
    with pytest.raises(ValueError, match=r"anchor_map is used only by model.predictor=relative"):
        replace(base, predictor="residual")
    with pytest.raises(ValueError, match=r"got predictor='relative', state_dim=0"):
        replace(base, state_dim=0, latent_dim=D - P)


def test_push_t_image_map_puts_the_pusher_where_the_camera_shows_it():
    """The map of the agent's x, y into image coordinates matches the rendered pusher: move it
    between two places and compare the centres of the pixels that changed with the mapped ones."""
    env = make_env("push_t", image_size=64)
    try:
        env.reset(seed=0)
        base = env.unwrapped
        m = base.image_map()
        state = base.get_state()
        block_far = state.copy()
        block_far[4:7] = [0.8, 0.8, 0.0]  # the T out of the way
        frames, places = [], [np.array([0.3, 0.35]), np.array([0.45, 0.25])]
        for p in places:
            s = block_far.copy()
            s[0:2], s[2:4] = p, 0.0
            base.set_state(s)
            frames.append(base.render().astype(int))
        changed = np.argwhere(np.abs(frames[0] - frames[1]).sum(-1) > 30)  # (n, 2) rows, cols
        uv = np.stack([(changed[:, 1] + 0.5) / 32 - 1, (changed[:, 0] + 0.5) / 32 - 1], 1)
        mapped = [m @ np.array([*p, 1.0]) for p in places]
        near_first = np.linalg.norm(uv - mapped[0], axis=1) < np.linalg.norm(uv - mapped[1], axis=1)
        for side, target in ((near_first, mapped[0]), (~near_first, mapped[1])):
            assert side.sum() > 4
            np.testing.assert_allclose(uv[side].mean(0), target, atol=2 / 64)  # within a pixel
    finally:
        env.close()
