"""ASCII maze layouts: named mazes, parsing with actionable errors, and cell-graph distances.

A layout is a grid of characters, one string per row, row 0 at the top:

- ``'#'`` is a wall cell,
- ``'.'`` (or ``' '``) is a free cell.

Layouts need not be closed by walls: :class:`robots.point_maze.PointMazeEnv` adds invisible
boundary walls just outside the grid, so free cells on the border are fine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

WALL_CHAR = "#"
FREE_CHARS = (".", " ")
ALLOWED_CHARS = (WALL_CHAR, *FREE_CHARS)

# Layouts follow D4RL maze2d / OGBench pointmaze (their 'O'/'G' cells become '.').
NAMED_LAYOUTS: dict[str, tuple[str, ...]] = {
    # 5x5 free interior inside a wall border: no obstacles, the easiest sanity check.
    "open": (
        "#######",
        "#.....#",
        "#.....#",
        "#.....#",
        "#.....#",
        "#.....#",
        "#######",
    ),
    # D4RL maze2d-umaze: a U-shaped corridor around one wall spur.
    "umaze": (
        "#####",
        "#...#",
        "###.#",
        "#...#",
        "#####",
    ),
    # D4RL maze2d-medium (8x8).
    "medium": (
        "########",
        "#..##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#..#",
        "########",
    ),
    # D4RL maze2d-large (9x12).
    "large": (
        "############",
        "#....#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#...#",
        "############",
    ),
    # OGBench pointmaze-giant (12x16).
    "giant": (
        "################",
        "#.......#......#",
        "#.###.#.#.##.#.#",
        "#.###.#....#.#.#",
        "#...#.##.###.#.#",
        "#.#...#........#",
        "#...#...#.###.##",
        "#.#.###.#...#.##",
        "#.......#.#....#",
        "##.##.#...####.#",
        "##.#..#.#......#",
        "################",
    ),
}


class LayoutError(ValueError):
    """A maze layout that cannot be parsed; the message says what is wrong and how to fix it."""


def _layout_rows(layout: str | Sequence[str]) -> list[str]:
    """Turn a named layout, a multi-line string or a sequence of rows into a list of rows."""
    if isinstance(layout, str):
        if "\n" not in layout and WALL_CHAR not in layout and "." not in layout:
            # A single word without maze characters can only be meant as a name.
            name = layout.strip()
            if name not in NAMED_LAYOUTS:
                raise LayoutError(
                    f"unknown named layout {layout!r}; known layouts: "
                    f"{', '.join(sorted(NAMED_LAYOUTS))}; or pass the maze as rows of "
                    f"'#' (wall) and '.' (free)"
                )
            return list(NAMED_LAYOUTS[name])
        # Multi-line strings: drop blank leading/trailing lines (triple-quoted literals).
        lines = layout.split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return lines
    rows = list(layout)
    for i, row in enumerate(rows):
        if not isinstance(row, str):
            raise LayoutError(
                f"layout row {i} is {row!r} of type {type(row).__name__}; every row must be a str"
            )
    return rows


def parse_layout(layout: str | Sequence[str]) -> np.ndarray:
    """Parse a maze layout into a wall mask.

    Args:
        layout: a key of :data:`NAMED_LAYOUTS`, a multi-line string, or a sequence of row
            strings. Characters: ``'#'`` wall, ``'.'`` or ``' '`` free.

    Returns:
        bool array (rows, cols), True where the cell is a wall.

    Raises:
        LayoutError: unknown name, empty layout, ragged rows, a bad character, or no free cell.
    """
    rows = _layout_rows(layout)
    if not rows or all(len(r) == 0 for r in rows):
        raise LayoutError(
            "layout is empty; pass a named layout "
            f"({', '.join(sorted(NAMED_LAYOUTS))}) or rows of '#' and '.'"
        )
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise LayoutError(
                f"layout rows have different lengths: row 0 has {width} characters but row {i} "
                f"({row!r}) has {len(row)}; pad every row to the same length"
            )
        for j, ch in enumerate(row):
            if ch not in ALLOWED_CHARS:
                raise LayoutError(
                    f"bad layout character {ch!r} at row {i}, column {j}; allowed characters: "
                    f"'#' (wall), '.' or ' ' (free)"
                )
    walls = np.array([[ch == WALL_CHAR for ch in row] for row in rows], dtype=bool)
    if walls.all():
        raise LayoutError("layout has no free cell ('.'); add at least one")
    return walls


def free_cells(walls: np.ndarray) -> np.ndarray:
    """Indices of free cells.

    Args:
        walls: bool (rows, cols), True = wall.

    Returns:
        int64 (N, 2) of (row, col), in row-major order.
    """
    return np.argwhere(~np.asarray(walls, dtype=bool)).astype(np.int64)


def cell_path_distances(walls: np.ndarray, start_cell: Sequence[int]) -> np.ndarray:
    """Breadth-first shortest-path distances (4-connected, in cells) from one free cell.

    Args:
        walls: bool (rows, cols), True = wall.
        start_cell: (row, col) of a free cell.

    Returns:
        int64 (rows, cols): distance in cells, -1 for walls and unreachable cells.
    """
    walls = np.asarray(walls, dtype=bool)
    n_rows, n_cols = walls.shape
    r0, c0 = int(start_cell[0]), int(start_cell[1])
    if not (0 <= r0 < n_rows and 0 <= c0 < n_cols) or walls[r0, c0]:
        raise ValueError(
            f"start_cell {(r0, c0)} is not a free cell of the {n_rows}x{n_cols} layout; "
            f"pick one of free_cells(walls)"
        )
    dist = np.full(walls.shape, -1, dtype=np.int64)
    dist[r0, c0] = 0
    queue = deque([(r0, c0)])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < n_rows and 0 <= nc < n_cols and not walls[nr, nc] and dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def all_pairs_cell_distances(walls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BFS distances between every pair of free cells (mazes are small: N <= a few hundred).

    Returns:
        (cells, dist): cells int64 (N, 2) as in :func:`free_cells`; dist int64 (N, N),
        dist[i, j] = path length from cells[i] to cells[j], -1 if unreachable.
    """
    cells = free_cells(walls)
    dist = np.empty((len(cells), len(cells)), dtype=np.int64)
    for i, (r, c) in enumerate(cells):
        dist[i] = cell_path_distances(walls, (r, c))[cells[:, 0], cells[:, 1]]
    return cells, dist


def wall_runs(walls: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal horizontal runs of wall cells, as (row, first col, last col + 1).

    Used to build one box per run instead of one per cell (fewer shapes, no internal edges).
    """
    walls = np.asarray(walls, dtype=bool)
    runs = []
    for r, row in enumerate(walls):
        # Run starts/ends are where the padded row flips between free and wall.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        runs += [(r, int(c0), int(c1)) for c0, c1 in zip(edges[::2], edges[1::2], strict=True)]
    return runs


def random_maze(rows: int, cols: int, seed: int, loop_fraction: float = 0.15) -> np.ndarray:
    """A seeded random maze: a depth-first-search (recursive backtracker) spanning tree on the
    odd cells, with ``loop_fraction`` of the remaining inner walls between two free cells knocked
    out so there is more than one route (pure trees make every start/goal pair a single corridor).

    Args:
        rows, cols: odd sizes >= 5, wall border included (the free interior is rows-2 x cols-2).
        seed: the layout's identity; the same seed always gives the same maze.

    Returns:
        bool (rows, cols), True = wall, every free cell reachable from every other.
    """
    if rows < 5 or cols < 5 or rows % 2 == 0 or cols % 2 == 0:
        raise LayoutError(f"random maze size {rows}x{cols} must be odd and >= 5 in both dimensions")
    if not 0.0 <= loop_fraction <= 1.0:
        raise LayoutError(f"loop_fraction={loop_fraction} must be in [0, 1]")
    rng = np.random.default_rng(int(seed))
    walls = np.ones((rows, cols), dtype=bool)
    start = (1 + 2 * int(rng.integers((rows - 1) // 2)), 1 + 2 * int(rng.integers((cols - 1) // 2)))
    walls[start] = False
    stack = [start]
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in ((2, 0), (-2, 0), (0, 2), (0, -2))
            if 0 < r + dr < rows - 1 and 0 < c + dc < cols - 1 and walls[r + dr, c + dc]
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        walls[(r + nr) // 2, (c + nc) // 2] = False
        walls[nr, nc] = False
        stack.append((nr, nc))
    # Inner walls separating two free cells in a straight line: candidates for loops.
    inner = [
        (r, c)
        for r in range(1, rows - 1)
        for c in range(1, cols - 1)
        if walls[r, c]
        and ((not walls[r - 1, c] and not walls[r + 1, c] and walls[r, c - 1] and walls[r, c + 1])
             or (not walls[r, c - 1] and not walls[r, c + 1] and walls[r - 1, c] and walls[r + 1, c]))
    ]  # fmt: skip
    for k in rng.permutation(len(inner))[: int(round(loop_fraction * len(inner)))]:
        walls[inner[k]] = False
    return walls


def two_rooms(rows: int, cols: int, door_row: int, door_width: int = 1) -> np.ndarray:
    """Two rooms side by side, split by a vertical wall at the middle column with a door.

    Args:
        rows, cols: size with the wall border included; cols odd so the split is centred.
        door_row: first interior row (1 .. rows - 1 - door_width) of the door.
        door_width: door height in cells.

    Returns:
        bool (rows, cols), True = wall.
    """
    if rows < 4 or cols < 5 or cols % 2 == 0:
        raise LayoutError(f"two-rooms size {rows}x{cols} needs rows >= 4 and odd cols >= 5")
    if not 1 <= door_width <= rows - 2 or not 1 <= door_row <= rows - 1 - door_width:
        raise LayoutError(
            f"door_row={door_row}, door_width={door_width} do not fit the {rows - 2} interior "
            f"rows; need 1 <= door_row <= {rows - 1 - door_width}"
        )
    walls = np.zeros((rows, cols), dtype=bool)
    walls[[0, -1], :] = True
    walls[:, [0, -1]] = True
    walls[:, cols // 2] = True
    walls[door_row : door_row + door_width, cols // 2] = False
    return walls
