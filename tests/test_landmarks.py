"""Landmark graph: routes that follow the data around a wall the learned top level ignores.

The world is a 1-D track x in [0, L] folded into a U in the plane: p(x) = (x, 0) along the
bottom, up the right side, then back left along the top. The start (x = 0) and goal (x = 22) are
4.5 apart in the plane but 22 apart along the track. Level 1 is exact (x' = clip(x + a)); level 2
is a *free-space* model (macro codes move p in any direction, through the wall between the arms),
the error a learned model makes when it smooths over walls. The graph is built from random walks
along the track, as a dataset would hold them.
"""

import numpy as np
import pytest
import torch
from torch import nn

from hmpc.controllers import ControllerSpec, build_controller
from hmpc.costs import CostWeights
from hmpc.hierarchy import HierarchicalMPC
from hmpc.landmarks import build_graph, farthest_points
from hmpc.optimizers import CEM, GradientDescent
from hmpc.world_model import LevelSpec, MacroSupport, WorldModel, WorldModelSpec

LENGTH, GOAL, K, SCALE, ARM, SIDE = 24.0, 22.0, 4, 10.0, 10.0, 4.0


def embed(x: torch.Tensor) -> torch.Tensor:
    """Track position (...,) -> point in the plane (..., 2)."""
    bottom = torch.stack([x, torch.zeros_like(x)], -1)
    side = torch.stack([torch.full_like(x, ARM), x - ARM], -1)
    top = torch.stack([2 * ARM + SIDE - x, torch.full_like(x, SIDE)], -1)
    return torch.where((x <= ARM)[..., None], bottom, torch.where((x <= ARM + SIDE)[..., None], side, top))


def track(p: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`embed` on the track (..., 2) -> (...,)."""
    return torch.where(p[..., 1] <= 0, p[..., 0],
                       torch.where(p[..., 1] >= SIDE, 2 * ARM + SIDE - p[..., 0], ARM + p[..., 1]))


class FoldedTrack(nn.Module):
    spec = WorldModelSpec(image_size=1, action_dim=1, state_dim=1, latent_dim=2,
                          levels=(LevelSpec(latent_dim=2, k=K, macro_dim=2),))
    rollout = WorldModel.rollout

    def encode(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return embed(state[:, 0])

    def project(self, s1: torch.Tensor, level: int) -> torch.Tensor:
        return s1 if level == 1 else s1 / SCALE

    def project_from(self, s: torch.Tensor, from_level: int, to_level: int) -> torch.Tensor:
        return s if from_level == to_level else self.project(s, to_level)

    def macro_support(self, level: int) -> MacroSupport:
        return MacroSupport(center=torch.zeros(2), low=-torch.ones(2), high=torch.ones(2), radius=1.5)

    def predict(self, s: torch.Tensor, a: torch.Tensor, level: int = 1) -> torch.Tensor:
        if level == 1:
            return embed((track(s) + a[..., 0]).clamp(0.0, LENGTH))
        return s + K * a / SCALE  # free space: the wall between the arms does not exist here


def obs(x: float) -> dict:
    return {"pixels": np.zeros((1, 1, 3), np.uint8), "state": np.array([x], np.float32)}


def walks(episodes: int = 12, steps: int = 120, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Latents (N, 2) and episode indices (N,) of random walks along the track."""
    rng = np.random.default_rng(seed)
    xs, ep = [], []
    for e in range(episodes):
        x = rng.uniform(0, LENGTH)
        for _ in range(steps):
            x = float(np.clip(x + rng.uniform(-1, 1), 0, LENGTH))
            xs.append(x)
            ep.append(e)
    return embed(torch.tensor(xs)), np.array(ep)


def test_farthest_points_spread_deterministically():
    z = torch.tensor([[0.0, 0], [0.1, 0], [5, 0], [10, 0], [9.9, 0]])
    idx = farthest_points(z, 3)
    assert idx.tolist() == [0, 3, 2] and torch.equal(idx, farthest_points(z, 3))
    same = torch.tensor([[1.0, 1], [2, 2], [1, 1], [2, 2]])  # two distinct points only
    assert farthest_points(same, 4).tolist() == [0, 1]


def test_graph_routes_along_the_track_not_across_the_wall():
    z, ep = walks()
    g = build_graph(z, ep, 40)
    start, goal = (int(g.nearest(embed(torch.tensor([x]))[None, 0].numpy())[0]) for x in (0.0, GOAL))
    to_goal = g.distances_to(goal)
    assert to_goal[start] == pytest.approx(GOAL, rel=0.15)  # along the track, not 4.5 across
    route = g.route(start, to_goal, 1000)
    assert route[-1] == goal
    along = track(torch.as_tensor(g.latents[route])).numpy()
    assert np.all(np.diff(along) > 0)  # every step moves forward along the track
    # a component nothing connects to cannot be routed to
    z2 = torch.cat([z, torch.tensor([[50.0, 50.0], [50.0, 51.0]])])
    g2 = build_graph(z2, np.concatenate([ep, [99, 100]]), 41)
    here, far = g2.nearest(np.array([[0.0, 0.0], [50.0, 50.2]], np.float32)).tolist()
    assert np.isinf(g2.distances_to(far)[here]) and g2.route(here, g2.distances_to(far), 5) == []
    with pytest.raises(ValueError, match="landmarks=1"):
        build_graph(z, ep, 1)


def run(ctrl, steps: int = 60) -> tuple[float, set[int]]:
    """Closed loop on the exact track; returns the final x and the waypoints the planner used."""
    x, marks = 0.0, set()
    ctrl.reset(obs(x), obs(GOAL))
    for _ in range(steps):
        a, info = ctrl.act(obs(x))
        assert not info["fallback"]
        marks.add(info.get("landmark", -1))
        x = float(np.clip(x + a[0], 0.0, LENGTH))
        if abs(x - GOAL) < 0.5:
            break
    return x, marks


@pytest.mark.parametrize("hops,goal_switch", [(0, 0.0), (4, 0.0), (4, 1.0)])
def test_landmarks_lead_the_hierarchy_around_the_wall_its_top_level_ignores(hops, goal_switch):
    """Start and goal are 0.2 apart in level 2 (so within goal_switch=1.0 of each other): the
    final approach must wait until the route itself reaches the goal, or it cuts the corner."""
    z, ep = walks()
    weights = CostWeights(goal_mode="sum", smoothness=0.01, macro_prior=0.01)
    hier = HierarchicalMPC(
        FoldedTrack(), [GradientDescent(iters=15, lr=0.3), CEM(iters=3, population=32, elites=6)],
        top_horizon=3, candidates=4, weights=weights, goal_switch=goal_switch,
        landmarks=build_graph(z, ep, 40) if hops else None, landmark_hops=hops,
    )
    x, marks = run(hier)
    if hops:
        assert abs(x - GOAL) < 0.5, f"stopped at x={x:.2f}, goal {GOAL}"
        assert len(marks - {-1}) >= 5  # it followed waypoints, then the goal
    else:  # straight at the goal through the wall: stuck on the bottom arm
        assert x < ARM, f"x={x:.2f}"


def test_landmark_settings_are_checked():
    with pytest.raises(ValueError, match="landmarks=300 needs kind hierarchical"):
        ControllerSpec(name="f", kind="flat", landmarks=300)
    with pytest.raises(ValueError, match="landmark_hops >= 1"):
        ControllerSpec(name="h", kind="hierarchical", landmarks=300, landmark_hops=0)
    spec = ControllerSpec(name="h", kind="hierarchical", landmarks=300)
    with pytest.raises(ValueError, match="no graph of that size"):
        build_controller(spec, FoldedTrack(), 1, seed=0)
    with pytest.raises(ValueError, match="landmark_hops=2"):
        HierarchicalMPC(FoldedTrack(), [GradientDescent(), CEM()], landmark_hops=2)


def test_model_blob_builds_the_graph_from_the_checkpoint_dataset(square_dataset, tmp_path):
    from hmpc.checkpoint import save_checkpoint
    from hmpc.evaluate import model_blob
    from hmpc.world_model import build_world_model

    spec = WorldModelSpec(image_size=16, action_dim=2, latent_dim=8, widths=(8, 8), hidden=16,
                          levels=(LevelSpec(latent_dim=4, k=2, macro_dim=2, hidden=16),))
    model = build_world_model(spec, seed=0)
    ck = save_checkpoint(tmp_path / "ck", model, {"dataset": {"root": str(square_dataset)}})
    graphs = model_blob(ck, landmarks={6, 10})["landmarks"]
    assert sorted(graphs) == [6, 10] and graphs[6].latents.shape == (6, 8)
    g = graphs[10]
    assert len(g.edges) > 0 and np.isfinite(g.distances_to(int(g.edges[0, 1]))).sum() >= 2
    assert "landmarks" not in model_blob(ck)
    gone = save_checkpoint(tmp_path / "gone", model, {"dataset": {"root": str(tmp_path / "nope")}})
    with pytest.raises(FileNotFoundError, match="controllers.<name>.landmarks. build their graph"):
        model_blob(gone, landmarks={6})


def test_graphs_are_cached_beside_the_frame_cache_and_rebuilt_when_the_model_changes(
    square_dataset, tmp_path, monkeypatch
):
    import shutil

    import hmpc.landmarks as lm
    from hmpc.data import LeRobotDataset, build_frame_cache
    from hmpc.world_model import build_world_model

    spec = WorldModelSpec(image_size=16, action_dim=2, latent_dim=8, widths=(8, 8), hidden=16,
                          levels=(LevelSpec(latent_dim=4, k=2, macro_dim=2, hidden=16),))
    model = build_world_model(spec, seed=0)
    root = tmp_path / "ds"  # a copy: no cache from other tests
    shutil.copytree(square_dataset, root, ignore=shutil.ignore_patterns(".cache"))
    frames = build_frame_cache(LeRobotDataset(root), progress=False)
    encoded = []
    real_encode = lm.encode_frames
    monkeypatch.setattr(lm, "encode_frames", lambda m, f: encoded.append(1) or real_encode(m, f))
    first = lm.landmark_graphs(model, frames, {6})
    files = sorted(p.name for p in frames.path.parent.glob("landmarks-*.npz"))
    assert len(encoded) == 1 and len(files) == 1 and files[0].endswith("-6.npz")
    again = lm.landmark_graphs(model, frames, {6, 10})  # 6 from the cache, 10 built
    assert len(encoded) == 2
    np.testing.assert_array_equal(again[6].latents, first[6].latents)
    np.testing.assert_array_equal(again[6].edges, first[6].edges)
    lm.landmark_graphs(model, frames, {6, 10})
    assert len(encoded) == 2  # both cached now
    with torch.no_grad():
        next(model.parameters()).add_(0.1)  # other weights: other latents, a new graph
    changed = lm.landmark_graphs(model, frames, {6})
    assert len(encoded) == 3 and not np.array_equal(changed[6].latents, first[6].latents)
    lm.landmark_graphs(model, frames, {6}, cache=False)
    assert len(encoded) == 4
