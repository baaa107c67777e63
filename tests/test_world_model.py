"""World-model shapes, multi-level objective, checkpoint round trip."""

import json

import numpy as np
import pytest
import torch

from hmpc.checkpoint import load_checkpoint, save_checkpoint
from hmpc.objective import LossWeights, world_model_loss
from hmpc.world_model import LevelSpec, MacroSupport, WorldModelSpec, build_world_model

SPEC = WorldModelSpec(
    image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
    levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),),
)


def batch(spec: WorldModelSpec, b: int = 4, top_steps: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    length = 1 + top_steps * spec.span(spec.num_levels)
    return {
        "pixels": torch.randint(0, 256, (b, length, 3, spec.image_size, spec.image_size), generator=g, dtype=torch.uint8),
        "action": torch.rand(b, length - 1, spec.action_dim, generator=g) * 2 - 1,
        "state": torch.rand(b, length, 4, generator=g),
    }


def test_shapes_of_every_verb():
    m = build_world_model(SPEC, seed=0)
    x = batch(SPEC)
    s = m.encode(x["pixels"][:, 0])
    assert s.shape == (4, 8)
    assert m.project(s, 2).shape == (4, 6)
    assert m.rollout(s, x["action"][:, :3]).shape == (4, 3, 8)
    z = m.encode_macro(x["action"][:, :2].reshape(4, 4), 2)
    assert z.shape == (4, 2) and z.abs().max() <= 1
    assert m.rollout(m.project(s, 2), z.unsqueeze(1), level=2).shape == (4, 1, 6)
    assert m.rollout(s[:1], torch.zeros(5, 2, 2)).shape == (5, 2, 8)  # one start, 5 candidates
    with pytest.raises(ValueError, match="level 3 out of range"):
        m.predict(s, s, level=3)


def test_three_levels_build_and_train_step():
    spec = WorldModelSpec(
        image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
        levels=(LevelSpec(6, 2, 2, 16), LevelSpec(4, 2, 2, 16)),
    )
    m = build_world_model(spec, seed=0)
    assert spec.span(3) == 4
    loss, metrics = world_model_loss(m, batch(spec), LossWeights())
    loss.backward()
    assert torch.isfinite(loss) and "l3/pred" in metrics and "l2/idm" in metrics


class FirstActionsCode(torch.nn.Module):
    """Macro encoder with a known image: tanh(0.5 * the chunk's first M entries)."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.5 * chunk[..., : self.m])


def test_macro_support_is_the_image_of_the_action_box():
    m = build_world_model(SPEC, seed=0)
    m.abstract[0].macro = FirstActionsCode(2)
    state = torch.random.get_rng_state()
    sup = m.macro_support(2)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded privately
    edge = float(torch.tanh(torch.tensor(0.5)))
    assert torch.allclose(sup.low, torch.full((2,), -edge)) and torch.allclose(sup.high, torch.full((2,), edge))
    assert torch.allclose(sup.center, torch.zeros(2)) and sup.radius == pytest.approx(2**0.5 * edge)
    with pytest.raises(ValueError, match="out of range"):
        m.macro_support(1)  # level 1 has real actions, no macro codes


def test_macro_support_projection():
    sup = MacroSupport(center=torch.tensor([0.1, 0.0]), low=torch.tensor([-0.5, -0.8]),
                       high=torch.tensor([0.6, 0.8]), radius=0.5)
    inside = torch.tensor([[0.2, 0.3], [0.1, -0.4]])
    assert torch.equal(sup.project(inside), inside)  # identity inside the region
    outside = torch.tensor([[1.0, 0.0], [0.1, 0.9], [-1.0, -1.0]], requires_grad=True)
    p = sup.project(outside)
    assert torch.all(p >= sup.low) and torch.all(p <= sup.high)
    assert torch.allclose((p - sup.center).norm(dim=-1), torch.full((3,), 0.5))  # on the ball
    assert torch.allclose(p[0], torch.tensor([0.6, 0.0]))  # clamped to the box, then on the ball
    p.sum().backward()
    assert torch.isfinite(outside.grad).all()


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone(monkeypatch):
    gpu_seeds = []  # torch.manual_seed would also (lazily) seed every GPU's generator
    monkeypatch.setattr(torch.cuda, "manual_seed_all", gpu_seeds.append)
    state = torch.random.get_rng_state()
    a, b = build_world_model(SPEC, 3), build_world_model(SPEC, 3)
    assert torch.equal(torch.random.get_rng_state(), state) and gpu_seeds == []
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_loss_decreases_on_a_fixed_batch():
    m = build_world_model(SPEC, seed=0)
    x = batch(SPEC)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss, _ = world_model_loss(m, x, LossWeights())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_checkpoint_round_trip(tmp_path):
    m = build_world_model(SPEC, seed=1)
    save_checkpoint(tmp_path / "ck", m, {"note": "x"})
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith(".")]  # no temp files
    m2, meta = load_checkpoint(tmp_path / "ck")
    assert meta["note"] == "x" and m2.spec == SPEC
    x = batch(SPEC)["pixels"][:, 0]
    assert torch.equal(m.encode(x), m2.encode(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="hmpc-train"):
        load_checkpoint(tmp_path / "missing")
    m = build_world_model(SPEC, seed=1)
    save_checkpoint(tmp_path / "ck", m, {})
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["model"]["latent_dim"] = 9
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, RuntimeError)):
        load_checkpoint(tmp_path / "ck")


def test_expander_carries_the_vicreg_terms_and_leaves_the_rest_of_the_model_unchanged():
    from dataclasses import replace

    from hmpc import losses

    spec = replace(SPEC, expander_dim=12)
    m, plain = build_world_model(spec, seed=0), build_world_model(SPEC, seed=0)
    for k, v in plain.state_dict().items():  # built last: same init for everything else
        assert torch.equal(m.state_dict()[k], v), k
    x = batch(spec)
    _, metrics = world_model_loss(m, x, LossWeights())
    with torch.no_grad():
        flat = m.encode_window(x["pixels"]).flatten(0, 1)
        wide = m.expand(flat)
    assert wide.shape == (flat.shape[0], 12)
    var = 0.5 * (losses.variance_loss(flat) + losses.variance_loss(wide))
    assert metrics["l1/var"] == pytest.approx(float(var), rel=1e-5)
    assert metrics["l1/cov"] == pytest.approx(float(losses.covariance_loss(wide)), rel=1e-5)
    assert metrics["l2/cov"] != pytest.approx(metrics["l1/cov"])  # level 2 keeps its own latent
    loss, _ = world_model_loss(m, x, LossWeights())
    loss.backward()
    assert m.expander[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no expander head"):
        plain.expand(flat)
    with pytest.raises(ValueError, match="expander_dim=-1"):
        WorldModelSpec(expander_dim=-1)


def test_variance_target_sets_the_std_the_hinge_asks_of_the_latent_not_of_the_expander():
    from dataclasses import replace

    from hmpc import losses

    spec = replace(SPEC, expander_dim=12)
    m, x = build_world_model(spec, seed=0), batch(spec)
    with torch.no_grad():
        s1 = m.encode_window(x["pixels"])
        flat, wide = s1.flatten(0, 1), m.expand(s1.flatten(0, 1))
        flat2 = m.abstract[0].project(s1[:, :: spec.levels[0].k]).flatten(0, 1)
    _, metrics = world_model_loss(m, x, LossWeights(variance_target=0.05))
    var = 0.5 * (losses.variance_loss(flat, gamma=0.05) + losses.variance_loss(wide))
    assert metrics["l1/var"] == pytest.approx(float(var), rel=1e-5)
    assert metrics["l2/var"] == pytest.approx(float(losses.variance_loss(flat2, gamma=0.05)), rel=1e-5)
    _, default = world_model_loss(m, x, LossWeights())
    assert default["l1/var"] > metrics["l1/var"]  # a lower target is easier to meet
    with pytest.raises(ValueError, match="variance_target=0"):
        LossWeights(variance_target=0.0)


def test_contrastive_term_scores_one_step_predictions_against_the_batch():
    from hmpc import losses

    m = build_world_model(SPEC, seed=0)
    x = batch(SPEC)
    _, off = world_model_loss(m, x, LossWeights())
    assert "l1/nce" not in off
    _, metrics = world_model_loss(m, x, LossWeights(contrastive=1.0, temperature=0.2))
    with torch.no_grad():
        s = m.encode_window(x["pixels"])
        expected = losses.predictive_nce_loss(m.predict(s[:, :-1], x["action"]), s[:, 1:], 0.2)
    assert metrics["l1/nce"] == pytest.approx(float(expected), rel=1e-5)
    assert "l2/nce" in metrics
    with pytest.raises(ValueError, match="temperature"):
        LossWeights(contrastive=1.0, temperature=0.0)


def test_keypoint_encoder_finds_a_bright_spot_where_it_is():
    """With the convs swapped for 4x pooling and one heat map reading the red channel at a low
    temperature, the keypoint is the pooled cell of the red square, in [-1, 1] grid units."""
    import math

    from torch import nn

    from hmpc.models import KeypointEncoder

    enc = KeypointEncoder(image_size=64, latent_dim=4, widths=(8, 8), keypoints=1)
    enc.convs = nn.AvgPool2d(4)  # (B, 3, 64, 64) -> (B, 3, 16, 16)
    enc.maps = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        enc.maps.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        enc.maps.bias.zero_()
        enc.log_temperature.fill_(math.log(0.01))
    img = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    img[0, 0, 8:12, 40:44] = 255  # pooled cell (row 2, col 10)
    img[1, 0, 60:64, 0:4] = 255  # pooled cell (row 15, col 0)
    kp = enc.keypoints(img)
    assert kp.shape == (2, 1, 2)
    cell = lambda i: -1.0 + 2.0 * i / 15  # noqa: E731
    assert kp[0, 0].tolist() == pytest.approx([cell(10), cell(2)], abs=1e-4)
    assert kp[1, 0].tolist() == pytest.approx([cell(0), cell(15)], abs=1e-4)
    assert enc(img).shape == (2, 4)
    bare = KeypointEncoder(image_size=64, latent_dim=2, widths=(8, 8), keypoints=1)
    bare.convs, bare.maps, bare.log_temperature = enc.convs, enc.maps, enc.log_temperature
    assert torch.equal(bare(img), kp.flatten(1))  # latent_dim == 2K: the coordinates themselves


def test_equivariance_term_is_zero_for_a_detector_that_follows_the_image():
    """The pooled red-square detector above follows 90-degree turns of the image exactly, and a
    detector that ignores the image (a fixed bright corner of its own) does not."""
    import math
    from dataclasses import replace

    from torch import nn

    from hmpc.objective import equivariance_term

    spec = replace(SPEC, image_size=64, keypoints=1, widths=(8, 8))
    m = build_world_model(spec, seed=0)
    m.encoder.convs = nn.AvgPool2d(4)
    m.encoder.maps = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        m.encoder.maps.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        m.encoder.maps.bias.zero_()
        m.encoder.log_temperature.fill_(math.log(0.01))
    pixels = torch.zeros(2, 1, 3, 64, 64, dtype=torch.uint8)
    pixels[0, 0, 0, 8:12, 40:44] = 255
    pixels[1, 0, 0, 52:56, 4:8] = 255
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    x = {"pixels": pixels, "warp": torch.stack([quarter, -quarter])}  # +90 and -90 degrees
    assert equivariance_term(m, x).item() == pytest.approx(0.0, abs=1e-6)
    fixed = nn.Conv2d(3, 3, 1)  # reads nothing of the image ...
    with torch.no_grad():
        fixed.weight.zero_()
        fixed.bias.zero_()
    corner = torch.zeros(1, 3, 16, 16)
    corner[0, 0, 0, 15] = 255.0  # ... and sees a bright red cell at row 0, col 15: (x, y) = (1, -1)
    m.encoder.convs = nn.Sequential(nn.AvgPool2d(4), fixed, _AddMap(corner))
    # keypoint stays at (1, -1) whatever the image; a quarter turn should take it to (1, 1)
    assert equivariance_term(m, x).item() == pytest.approx(4.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"batch\['warp'\]"):
        equivariance_term(m, {"pixels": pixels})
    with pytest.raises(ValueError, match="model.keypoints"):
        equivariance_term(build_world_model(SPEC, seed=0), x)


def test_keypoint_vectors_average_features_under_the_heat_map_and_must_turn_with_the_image():
    """One keypoint on the red channel; its vector reads (green, blue) under the keypoint. Colours
    do not change when the image turns, so this vector ignores the turn and is penalised."""
    import math
    from dataclasses import replace

    from torch import nn

    from hmpc.objective import equivariance_term

    spec = replace(SPEC, image_size=64, keypoints=1, keypoint_vectors=1, widths=(8, 8), latent_dim=4)
    m = build_world_model(spec, seed=0)
    enc = m.encoder
    assert isinstance(enc.head, nn.Identity)  # latent_dim == 2K(1 + V): coordinates then vector
    enc.convs = nn.AvgPool2d(4)
    enc.maps = nn.Conv2d(3, 1, 1)
    enc.vector_maps = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        enc.maps.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        enc.maps.bias.zero_()
        enc.log_temperature.fill_(math.log(0.01))
        # vector = (green, blue) of the normalised pixels (in [-0.5, 0.5]) + 0.5
        enc.vector_maps.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1))
        enc.vector_maps.bias.fill_(0.5)
    img = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    img[0, 0, 8:12, 40:44] = 255
    img[0, 1, 8:12, 40:44] = 255  # green: vector (1, 0) at the keypoint
    points, vecs = enc.parts(img)
    assert vecs.shape == (1, 1, 1, 2)
    assert vecs[0, 0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-4)
    assert enc(img)[0].tolist() == pytest.approx([*points[0, 0].tolist(), 1.0, 0.0], abs=1e-6)
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # direction (1, 0) -> (0, -1)
    # the keypoint follows a +90 degree turn exactly, but the turned square is still green: the
    # vector stays (1, 0) where an equivariant one would be (0, -1), |(1, 1)|^2 = 2
    x = {"pixels": img[:, None], "warp": quarter[None]}
    assert equivariance_term(m, x).item() == pytest.approx(2.0, abs=1e-3)
    m.encoder.vector_maps = None  # without vectors only the (exact) keypoint term is left
    m.encoder.num_vectors = 0
    assert equivariance_term(m, x).item() == pytest.approx(0.0, abs=1e-6)


def test_keypoint_latent_appends_the_fused_state_prefix_and_ignores_the_rest():
    from hmpc.models import KeypointEncoder

    enc = KeypointEncoder(image_size=64, latent_dim=2 * 3 + 2, widths=(8, 8), state_dim=2, keypoints=3)
    img = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    state = torch.tensor([[0.1, 0.2, 5.0, 6.0], [0.3, 0.4, 7.0, 8.0]])
    z = enc(img, state)
    assert z.shape == (2, 8)
    assert torch.equal(z[:, :6], enc.keypoints(img).flatten(1))  # identity: coordinates ...
    assert torch.equal(z[:, 6:], state[:, :2])  # ... then the proprioceptive prefix
    other = state.clone()
    other[:, 2:] = -1.0  # what follows the prefix (an object's pose) never reaches the latent
    assert torch.equal(enc(img, other), z)
    with pytest.raises(ValueError, match=r"model.state_dim=2 .* got \(2, 1\)"):
        enc(img, state[:, :1])


def test_keypoint_vectors_need_a_keypoint_encoder():
    with pytest.raises(ValueError, match="keypoint_vectors=1"):
        WorldModelSpec(keypoint_vectors=1)
    with pytest.raises(ValueError, match="keypoint_vectors=-1"):
        WorldModelSpec(keypoints=4, keypoint_vectors=-1)


class _AddMap(torch.nn.Module):
    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m


@pytest.mark.parametrize("vectors", [0, 2])
def test_keypoint_world_model_trains_and_round_trips(tmp_path, vectors):
    from dataclasses import replace

    from hmpc.augment import sample_warps

    spec = replace(SPEC, keypoints=6, keypoint_vectors=vectors)
    m = build_world_model(spec, seed=0)
    assert type(m.encoder).__name__ == "KeypointEncoder"
    b = batch(spec)
    b["warp"] = sample_warps(b["pixels"].shape[0], np.random.default_rng(0), 90.0, 0.1)
    loss, terms = world_model_loss(m, b, LossWeights(equivariance=1.0))
    loss.backward()
    assert m.encoder.maps.weight.grad.abs().sum() > 0
    if vectors:
        assert m.encoder.vector_maps.weight.grad.abs().sum() > 0
    assert WorldModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    save_checkpoint(tmp_path / "ck", m, {})
    back, _ = load_checkpoint(tmp_path / "ck")
    x = batch(spec)["pixels"][:, 0]
    assert torch.equal(back.encode(x), m.encode(x))
    with pytest.raises(ValueError, match="keypoints=-2"):
        WorldModelSpec(keypoints=-2)
