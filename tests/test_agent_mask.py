"""model.agent_mask: the agent painted out of the images at its fused x, y, in training and control."""

import json

import numpy as np
import pytest
import torch

from hmpc.agent_mask import AgentMask
from hmpc.checkpoint import load_checkpoint, save_checkpoint
from hmpc.objective import LossWeights, add_warps, equivariance_term
from hmpc.world_model import WorldModelSpec, build_world_model

# world [-1, 1]^2 onto the whole image, y up in the world and down in the image
FLIP = [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]


def test_paints_exactly_the_pixels_whose_centres_lie_in_the_disc():
    mask = AgentMask(image_map=FLIP, radius=0.3, fill=(1, 2, 3), margin=0.0)
    pixels = torch.full((1, 3, 8, 8), 200, dtype=torch.uint8)
    # pixel centres of an 8-pixel image sit at +-0.125, +-0.375, ...; the agent at world (0.25, 0.25)
    # is image (0.25, -0.25): between rows 2 and 3 and columns 4 and 5, 0.125 * sqrt(2) = 0.18 from
    # the four nearest centres, 0.40 from the next ones (> 0.3)
    out = mask(pixels, torch.tensor([[0.25, 0.25]]))
    changed = (out != pixels).any(1)[0]
    assert sorted(map(tuple, changed.nonzero().tolist())) == [(2, 4), (2, 5), (3, 4), (3, 5)]
    assert out[0, :, 2, 4].tolist() == [1, 2, 3]
    # a margin of half a pixel (0.125 image units) reaches the 8 centres 0.40 away (12 in all), one
    # pixel (0.25) the 4 diagonal ones 0.53 away as well (16)
    for margin, painted in ((0.5, 12), (1.0, 16)):
        wide = AgentMask(image_map=FLIP, radius=0.3, fill=(1, 2, 3), margin=margin)
        assert int((wide(pixels, torch.tensor([[0.25, 0.25]])) != pixels).any(1).sum()) == painted
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        mask(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 3))


def test_push_t_pusher_is_gone_and_the_block_untouched():
    from robots import make_env
    from robots.push_t import BLOCK_RGB, PUSHER_RGB

    env = make_env("push_t")
    try:
        mask = AgentMask.from_value(env.unwrapped.agent_mask())
        frames, pushers = [], []
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            frames.append(obs["pixels"])
            pushers.append(obs["state"][:2])
    finally:
        env.close()
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    out = mask(pixels, torch.from_numpy(np.stack(pushers)))

    def count(images: torch.Tensor, rgb: tuple[int, int, int]) -> int:
        return int((images == torch.tensor(rgb, dtype=torch.uint8)[None, :, None, None]).all(1).sum())

    assert count(pixels, PUSHER_RGB) > 0 and count(out, PUSHER_RGB) == 0
    assert count(out, BLOCK_RGB) == count(pixels, BLOCK_RGB)  # the pusher starts clear of the T


def test_spec_checks_and_json_round_trip(tmp_path):
    good = {"image_map": FLIP, "radius": 0.1, "fill": [255, 255, 255]}
    with pytest.raises(ValueError, match="state_dim >= 2"):
        WorldModelSpec(image_size=16, latent_dim=8, widths=(4, 8), agent_mask=good)
    with pytest.raises(ValueError, match="agent_mask.fill"):
        WorldModelSpec(image_size=16, latent_dim=8, widths=(4, 8), state_dim=2, agent_mask={**good, "fill": [300, 0, 0]})
    with pytest.raises(ValueError, match="needs image_map and radius"):
        AgentMask.from_value({"radius": 0.1, "colour": [0, 0, 0]})
    with pytest.raises(ValueError, match="invertible"):
        AgentMask.from_value({**good, "image_map": [[1, 0, 0], [2, 0, 0]]})
    spec = WorldModelSpec(image_size=16, latent_dim=8, widths=(4, 8), state_dim=2, agent_mask=good)
    assert isinstance(spec.agent_mask, AgentMask) and hash(spec)
    assert WorldModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    model = build_world_model(spec, seed=0)
    save_checkpoint(tmp_path / "ckpt", model, {})
    assert load_checkpoint(tmp_path / "ckpt")[0].spec.agent_mask == spec.agent_mask


def _agent_pair(spec: WorldModelSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two batches of random frames, the second with a red agent disc drawn at ``state``."""
    g = torch.Generator().manual_seed(0)
    plain = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8)
    state = torch.tensor([[0.5, 0.0], [-0.4, 0.3], [0.0, -0.6]])
    drawn = AgentMask(image_map=FLIP, radius=0.15, fill=(255, 0, 0), margin=0.0)(plain, state)
    return plain, drawn, state


def test_the_encoder_never_sees_the_agent():
    mask = {"image_map": FLIP, "radius": 0.15, "fill": [255, 255, 255], "margin": 0.0}
    common = dict(image_size=16, latent_dim=8, widths=(4, 8), hidden=16, state_dim=2)
    plain, drawn, state = _agent_pair(WorldModelSpec(**common))
    masked = build_world_model(WorldModelSpec(**common, agent_mask=mask), seed=0)
    assert torch.equal(masked.encode(plain, state), masked.encode(drawn, state))
    unmasked = build_world_model(WorldModelSpec(**common), seed=0)
    assert not torch.equal(unmasked.encode(plain, state), unmasked.encode(drawn, state))
    with pytest.raises(ValueError, match="pass observation.state"):
        masked.encode(plain)


def test_the_equivariance_term_sees_the_masked_frames():
    mask = {"image_map": FLIP, "radius": 0.15, "fill": [255, 255, 255], "margin": 0.0}
    spec = WorldModelSpec(image_size=16, latent_dim=34, widths=(4, 8), hidden=16, state_dim=2,
                          keypoints=8, agent_mask=mask)
    model = build_world_model(spec, seed=0)
    plain, drawn, state = _agent_pair(spec)
    w = LossWeights(equivariance=1.0)

    def term(frames: torch.Tensor) -> float:
        batch = add_warps({"pixels": frames[:, None], "state": state[:, None]}, w, np.random.default_rng(0))
        return equivariance_term(model, batch).item()

    assert term(plain) == term(drawn)
