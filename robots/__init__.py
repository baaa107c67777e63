"""PyBullet robots and scenes as goal-conditioned gymnasium envs, plus the env registry."""

from robots.layouts import NAMED_LAYOUTS, LayoutError, parse_layout
from robots.point_maze import PointMazeEnv
from robots.registry import ENV_REGISTRY, make_env, register_gymnasium_envs

__all__ = [
    "ENV_REGISTRY",
    "NAMED_LAYOUTS",
    "LayoutError",
    "PointMazeEnv",
    "make_env",
    "parse_layout",
    "register_gymnasium_envs",
]
