"""Landmark graph: a map of the training data's level-1 latents, for routing around obstacles.

The learned predictors can smooth over walls (a macro step that "passes through" one costs the
top level nothing). Consecutive dataset frames cannot: the ball never crossed a wall in the data.
So the graph keeps ``M`` landmarks spread over the dataset's latents (farthest-point sampling),
assigns every frame to its nearest landmark, and links landmark a -> b when some episode stepped
from a frame of a to a frame of b. Edge lengths are latent distances between the landmarks.

:class:`hmpc.hierarchy.HierarchicalMPC` with ``landmark_hops`` > 0 asks the graph, at each
abstract replan, for the landmark ``landmark_hops`` nodes ahead on the shortest route from the
current latent to the goal's, and its top level plans macro-actions toward that waypoint instead
of the goal (the goal itself once the route is that short). The graph sees only images.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hmpc.checkpoint import atomic_write_bytes
from hmpc.data import FrameArrays
from hmpc.world_model import WorldModel


@dataclass
class LandmarkGraph:
    """Landmarks (M, D_1) and directed edges between them; plain arrays, picklable."""

    latents: np.ndarray  # float32 (M, D_1)
    edges: np.ndarray  # int64 (E, 2): (from, to)
    succ: list[list[tuple[int, float]]] = field(init=False, repr=False)  # node -> [(next, length)]
    pred: list[list[tuple[int, float]]] = field(init=False, repr=False)  # node -> [(prev, length)]
    marks: torch.Tensor = field(init=False, repr=False)  # float32 (M, D_1) copy of latents, for lookups

    def __post_init__(self) -> None:
        self.marks = torch.tensor(self.latents, dtype=torch.float32)  # Ray's arrays are read-only
        a, b = self.edges[:, 0], self.edges[:, 1]
        lengths = np.linalg.norm(self.latents[a] - self.latents[b], axis=1).tolist()
        self.succ = [[] for _ in range(self.size)]
        self.pred = [[] for _ in range(self.size)]
        for i, j, w in zip(a.tolist(), b.tolist(), lengths, strict=True):
            self.succ[i].append((j, w))
            self.pred[j].append((i, w))

    @property
    def size(self) -> int:
        return int(self.latents.shape[0])

    @property
    def entered(self) -> np.ndarray:
        """bool (M,): landmarks some edge leads into (routes can end there)."""
        return np.array([len(p) > 0 for p in self.pred], dtype=bool)

    def nearest(self, z: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
        """Index of the nearest landmark (L2) of each latent z (N, D_1) -> int64 (N,), among the
        landmarks where the bool mask ``among`` (M,) is True (all when None or all False)."""
        mask = None if among is None or not among.any() else torch.as_tensor(among)
        return _nearest(torch.as_tensor(z, dtype=torch.float32), self.marks, mask).numpy()

    def distances_to(self, goal: int) -> np.ndarray:
        """Shortest route length from every landmark to ``goal`` -> float64 (M,), inf where
        no route exists (Dijkstra on the reversed edges; length = summed latent distances)."""
        dist = np.full(self.size, np.inf)
        dist[goal] = 0.0
        heap = [(0.0, goal)]
        while heap:
            d, node = heapq.heappop(heap)
            if d > dist[node]:
                continue
            for prev, w in self.pred[node]:
                if d + w < dist[prev]:
                    dist[prev] = d + w
                    heapq.heappush(heap, (d + w, prev))
        return dist

    def route(self, start: int, to_goal: np.ndarray, max_nodes: int) -> list[int]:
        """Up to ``max_nodes`` landmarks after ``start`` on its shortest route (``to_goal`` from
        :meth:`distances_to`); empty when start is the goal or cannot reach it."""
        path, node = [], start
        while len(path) < max_nodes and np.isfinite(to_goal[node]) and to_goal[node] > 0:
            node = min(self.succ[node], key=lambda nb: nb[1] + to_goal[nb[0]])[0]
            path.append(node)
        return path


def _nearest(
    z: torch.Tensor, marks: torch.Tensor, among: torch.Tensor | None = None, chunk: int = 4096
) -> torch.Tensor:
    """Index (N,) of the nearest row of marks (M, D) to each row of z (N, D), squared L2 by exact
    differences, z in chunks (never an (N, M) matrix); only rows where ``among`` (M,) is True."""
    out = []
    for x in z.split(chunk):
        d = (x[:, None] - marks[None]).pow(2).sum(-1)  # (chunk, M)
        if among is not None:
            d = d.masked_fill(~among, float("inf"))
        out.append(d.argmin(1))
    return torch.cat(out)


def farthest_points(z: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (<= m,) of rows of z (N, D) spread out greedily: each next one is the row
    farthest from those chosen so far, starting from row 0 (deterministic); stops early when
    every row coincides with a chosen one."""
    chosen = [0]
    closest = (z - z[0]).pow(2).sum(1)  # (N,) squared distance to the nearest chosen row
    while len(chosen) < min(m, z.shape[0]):
        far = int(closest.argmax())
        if float(closest[far]) == 0.0:
            break
        chosen.append(far)
        closest = torch.minimum(closest, (z - z[far]).pow(2).sum(1))
    return torch.tensor(chosen, dtype=torch.long, device=z.device)


def build_graph(z: torch.Tensor, episode_index: np.ndarray, size: int) -> LandmarkGraph:
    """Landmark graph of latents z (N, D_1) of frames stored episode by episode, in time order
    (``episode_index`` (N,)): ``size`` farthest-point landmarks; an edge a -> b for every pair of
    consecutive frames of one episode whose nearest landmarks are a != b."""
    if size < 2:
        raise ValueError(f"landmarks={size}: a graph needs at least 2 landmarks (e.g. 300)")
    if z.shape[0] != len(episode_index):
        raise ValueError(f"{z.shape[0]} latents but {len(episode_index)} episode indices")
    z = z.detach().float()
    marks = z[farthest_points(z, size)]  # (M, D)
    assign = _nearest(z, marks).cpu().numpy()  # (N,) each frame's landmark
    ep = np.asarray(episode_index)
    step = (ep[1:] == ep[:-1]) & (assign[1:] != assign[:-1])  # consecutive frames, new landmark
    pairs = np.stack([assign[:-1][step], assign[1:][step]], 1)
    edges = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    return LandmarkGraph(marks.cpu().numpy(), edges.astype(np.int64))


@torch.no_grad()
def encode_frames(
    model: WorldModel, frames: FrameArrays, batch: int = 512, index: np.ndarray | None = None
) -> torch.Tensor:
    """Level-1 latents (N, D_1) on the model's device of every frame, or of the frames at
    ``index`` (N,) in that order; with their state when the encoder fuses it."""
    index = np.arange(frames.num_frames) if index is None else np.asarray(index)
    out = []
    for i in range(0, len(index), batch):
        j = index[i : i + batch]
        x = torch.as_tensor(np.array(frames.pixels[j]), device=model.device)  # a copy
        state = None
        if model.spec.state_dim:
            state = torch.as_tensor(frames.state[j], device=model.device, dtype=torch.float32)
        out.append(model.encode(x.permute(0, 3, 1, 2), state))
    return torch.cat(out)


def landmark_graphs(
    model: WorldModel, frames: FrameArrays, sizes: set[int], cache: bool = True
) -> dict[int, LandmarkGraph]:
    """One graph per requested size from the frames' level-1 latents (encoded once).

    With ``cache`` and a frame cache on disk (``frames.path``), each graph is kept beside it as
    ``landmarks-<frames>-<weights>-<size>.npz`` and reused while both the dataset and the model's
    weights are unchanged (encoding 140k frames takes ~40 s on 2 CPU cores); a folder that cannot
    be written only costs the rebuild next time (a warning says so)."""
    folder = _cache_prefix(model, frames) if cache else None
    paths = {m: None if folder is None else Path(f"{folder}-{m}.npz") for m in sizes}
    graphs = {m: _load_graph(p) for m, p in paths.items() if p is not None and p.is_file()}
    missing = sorted(set(sizes) - set(graphs))
    if missing:
        z = encode_frames(model, frames)
        for m in missing:
            graphs[m] = build_graph(z, frames.episode_index, m)
            if paths[m] is not None:
                _save_graph(paths[m], graphs[m])
    return {m: graphs[m] for m in sorted(sizes)}


def weights_key(model: WorldModel) -> str:
    """Hash of the model's parameters and buffers (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _cache_prefix(model: WorldModel, frames: FrameArrays) -> Path | None:
    """``<frame cache dir>/landmarks-<frames key>-<weights key>`` (+ ``-<size>.npz``); None
    without a frame cache file (frames held in memory only)."""
    if frames.path is None:
        return None
    frames_key = frames.path.stem.removeprefix("frames-")  # the dataset's cache key
    return frames.path.parent / f"landmarks-{frames_key}-{weights_key(model)}"


def _load_graph(path: Path) -> LandmarkGraph:
    with np.load(path, allow_pickle=False) as f:  # a cache file is data, never code
        return LandmarkGraph(f["latents"].astype(np.float32), f["edges"].astype(np.int64))


def _save_graph(path: Path, graph: LandmarkGraph) -> None:
    """Written atomically (a crash never leaves a half-written cache file); a folder that cannot be
    written only warns."""
    buf = io.BytesIO()
    np.savez(buf, latents=graph.latents, edges=graph.edges)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        warnings.warn(f"landmark graph not cached at {path} ({e}); it is rebuilt next time",
                      stacklevel=3)
