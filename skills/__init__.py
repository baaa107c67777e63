"""Behaviours: exploration / data-collection policies (scripted skills and cost terms later)."""

from skills.exploration import (
    POLICY_REGISTRY,
    CorrelatedNoisePolicy,
    Policy,
    UniformPolicy,
    make_policy,
)

__all__ = [
    "POLICY_REGISTRY",
    "CorrelatedNoisePolicy",
    "Policy",
    "UniformPolicy",
    "make_policy",
]
