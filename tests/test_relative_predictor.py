"""model.predictor=relative: level-1 dynamics that see keypoints relative to the agent."""

from dataclasses import replace

import pytest
import torch

from hmpc.checkpoint import load_checkpoint, save_checkpoint
from hmpc.models import RelativePredictor, ResidualPredictor, make_predictor
from hmpc.objective import LossWeights, world_model_loss
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model

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
    rel = RelativePredictor(K, V, P, A, hidden=16)
    with torch.no_grad():  # the anchor: keypoint coordinates = 2 * state + 0.1
        rel.anchor.weight.copy_(2 * torch.eye(2))
        rel.anchor.bias.fill_(0.1)
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
    assert rel.anchor is None
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
                          predictor="relative",
                          levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),))
    m = build_world_model(spec, seed=0)
    assert isinstance(m.predictor, RelativePredictor) and isinstance(m.ensemble[0], RelativePredictor)
    g = torch.Generator().manual_seed(0)
    b = {"pixels": torch.randint(0, 256, (4, 5, 3, 16, 16), generator=g, dtype=torch.uint8),
         "action": torch.rand(4, 4, A, generator=g) * 2 - 1, "state": torch.rand(4, 5, 4, generator=g)}
    loss, _ = world_model_loss(m, b, LossWeights())
    loss.backward()
    assert m.predictor.anchor.weight.grad.abs().sum() > 0
    save_checkpoint(tmp_path / "ck", m, {})
    back, _ = load_checkpoint(tmp_path / "ck")
    assert back.spec.predictor == "relative"
    s = m.encode(b["pixels"][:, 0], b["state"][:, 0, :P])
    torch.testing.assert_close(back.rollout(s, b["action"]), m.rollout(s, b["action"]))


def test_relative_predictor_needs_a_keypoint_latent_without_a_linear_head():
    """The spec refuses it (before any data is read), and so does the factory on its own."""
    base = WorldModelSpec(image_size=16, latent_dim=D, widths=(4, 8), hidden=16, state_dim=P,
                          keypoints=K, keypoint_vectors=V, predictor="relative")
    with pytest.raises(ValueError, match=r"model.latent_dim=9 must equal .* = 14"):
        replace(base, latent_dim=9)
    with pytest.raises(ValueError, match=r"model.keypoints > 0 \(got 0\)"):
        replace(base, keypoints=0, keypoint_vectors=0, state_dim=0)
    with pytest.raises(ValueError, match="model.predictor='mlp'; use 'residual' or 'relative'"):
        replace(base, predictor="mlp")
    with pytest.raises(ValueError, match=r"model.latent_dim=9 must equal .* = 14"):
        make_predictor("relative", 9, A, 16, K, V, P)
    with pytest.raises(ValueError, match="model.predictor='mlp'"):
        make_predictor("mlp", D, A, 16, K, V, P)
