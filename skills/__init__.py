"""Behaviours that act in the robots' envs: exploration policies for reward-free data, maze
waypoint followers and scripted experts (data sources and baselines), all ``act(obs) -> action``."""

from skills.exploration import CorrelatedNoisePolicy, Policy, UniformPolicy
from skills.registry import POLICY_REGISTRY, make_policy, needs_env, ship_policy

__all__ = [
    "POLICY_REGISTRY",
    "CorrelatedNoisePolicy",
    "Policy",
    "UniformPolicy",
    "make_policy",
    "needs_env",
    "ship_policy",
]
