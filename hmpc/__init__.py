"""hmpc: hierarchical model-predictive control with a learned multi-level latent world model.

Data flow: ``hmpc.data`` (LeRobot datasets, windows) -> ``hmpc.world_model`` / ``hmpc.train``
-> ``hmpc.optimizers`` / ``hmpc.mpc`` / ``hmpc.hierarchy`` -> ``hmpc.evaluate``; the PyBullet
robots live in the sibling package ``robots`` and behaviours in ``skills``.
"""

__version__ = "0.1.0"
