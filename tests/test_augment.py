"""Image augmentation of training windows (trainer.augment), and the image warps of the keypoint
equivariance term: where content goes is where warp_points says."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hmpc.augment import (
    ImageAugment,
    augment_batch,
    augment_windows,
    sample_warps,
    warp_images,
    warp_points,
)

H = 64


def centre_of_blob(x0: float, y0: float, theta: torch.Tensor) -> list[float]:
    """Intensity-weighted centre, in normalised (x, y), of a warped Gaussian blob at (x0, y0)."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    nx, ny = (2 * xs + 1) / H - 1, (2 * ys + 1) / H - 1  # pixel centres, affine_grid's convention
    blob = torch.exp(-((nx - x0) ** 2 + (ny - y0) ** 2) / (2 * 0.05**2)) * 255
    w = warp_images(blob.expand(1, 3, H, H), theta)[0, 0]
    return [float((w * nx).sum() / w.sum()), float((w * ny).sum() / w.sum())]


@pytest.mark.parametrize("deg,shift", [(90.0, 0.0), (30.0, 0.0), (-135.0, 0.1), (0.0, -0.2)])
def test_warped_content_lands_where_warp_points_says(deg, shift):
    a = math.radians(deg)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), shift], [math.sin(a), math.cos(a), -shift]]])
    expected = warp_points(torch.tensor([[[0.3, -0.4]]]), theta)[0, 0].tolist()
    assert centre_of_blob(0.3, -0.4, theta) == pytest.approx(expected, abs=2e-3)


def test_sample_warps_are_seeded_rotations_within_range():
    a = sample_warps(64, np.random.default_rng(5), max_deg=30.0, max_shift=0.1)
    b = sample_warps(64, np.random.default_rng(5), max_deg=30.0, max_shift=0.1)
    assert a.shape == (64, 2, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    rot = a[:, :, :2]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(2).expand(64, 2, 2), atol=1e-6)
    assert (torch.atan2(rot[:, 1, 0], rot[:, 0, 0]).abs() <= math.radians(30.0) + 1e-6).all()
    assert (a[:, :, 2].abs() <= 0.1).all() and a[:, :, 2].abs().max() > 0.05
    assert torch.equal(sample_warps(3, np.random.default_rng(0), 0.0)[:, :, :2], torch.eye(2).expand(3, 2, 2))
    with pytest.raises(ValueError, match="max_deg=-1"):
        sample_warps(2, np.random.default_rng(0), -1.0)


# ---- trainer.augment: jitter of training windows ----


def windows(b: int = 6, length: int = 3, h: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (B, L, 3, H, W): each window one random frame repeated L times."""
    g = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (b, 1, 3, h, h), generator=g, dtype=torch.uint8)
    return frame.expand(b, length, 3, h, h).contiguous()


def test_augmentation_off_leaves_batch_and_rng_untouched():
    batch = {"pixels": windows()}
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert augment_batch(batch, ImageAugment(), rng) is batch
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("aug", [ImageAugment(shift=3, per_frame=False), ImageAugment(blur=1.5, per_frame=False),
                                 ImageAugment(brightness=0.2, contrast=0.3, per_frame=False),
                                 ImageAugment(shift=2, blur=1.0, brightness=0.1, contrast=0.2, per_frame=False)])
def test_one_draw_per_window_shared_by_its_frames_and_seeded(aug):
    px = windows()
    out = augment_windows(px, aug, np.random.default_rng(1))
    assert out.dtype == torch.uint8 and out.shape == px.shape
    assert torch.equal(out, augment_windows(px, aug, np.random.default_rng(1)))  # same seed, same jitter
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(px.shape[1]))  # frames alike
    assert not torch.equal(out, px)
    # windows draw their own jitter: the same window in every slot comes out differently
    same = px[:1].expand_as(px).contiguous()
    jittered = augment_windows(same, aug, np.random.default_rng(2))
    assert len({jittered[i].numpy().tobytes() for i in range(len(same))}) > 1


def test_shift_moves_content_by_whole_pixels_within_the_range():
    h, s = 16, 3
    px = torch.full((40, 1, 3, h, h), 10, dtype=torch.uint8)
    px[:, :, :, 8, 5] = 200  # one bright pixel, away from the edges
    out = augment_windows(px, ImageAugment(shift=s), np.random.default_rng(0))
    moves = set()
    for i in range(len(px)):
        ys, xs = torch.nonzero(out[i, 0, 0] == 200, as_tuple=True)
        assert len(ys) == 1 and int((out[i, 0, 0] == 10).sum()) == h * h - 1  # moved, not smeared
        moves.add((int(ys[0]) - 8, int(xs[0]) - 5))
    assert all(abs(dy) <= s and abs(dx) <= s for dy, dx in moves) and len(moves) > 10


def test_per_frame_draws_move_each_frame_on_its_own_and_the_window_draws_move_all_alike():
    h, s, length = 16, 3, 4
    px = torch.full((10, length, 3, h, h + 4), 10, dtype=torch.uint8)  # H != W
    px[..., 8, 5] = 200  # the same bright pixel in every frame
    def moves(out):  # (B, L) offsets of the bright pixel
        return [[tuple((torch.nonzero(out[i, t, 0] == 200)[0] - torch.tensor([8, 5])).tolist())
                 for t in range(length)] for i in range(len(out))]
    per_frame = moves(augment_windows(px, ImageAugment(shift=s), np.random.default_rng(0)))  # default
    assert sum(len(set(w)) > 1 for w in per_frame) >= 8  # frames of a window moved apart
    assert all(abs(dy) <= s and abs(dx) <= s for w in per_frame for dy, dx in w)
    per_window = moves(augment_windows(px, ImageAugment(shift=s, per_frame=False), np.random.default_rng(0)))
    assert all(len(set(w)) == 1 for w in per_window)
    # blur, contrast and brightness too: identical frames of a window come out differently
    aug = ImageAugment(blur=1.0, brightness=0.2, contrast=0.3)
    out = augment_windows(windows(), aug, np.random.default_rng(3))
    assert all(not torch.equal(out[i, 0], out[i, 1]) for i in range(len(out)))
    # per frame = every frame a window of its own, with the same draws from the same RNG
    px = windows(b=3, length=4)
    alone = augment_windows(px.reshape(12, 1, 3, 16, 16), replace(aug, per_frame=False), np.random.default_rng(3))
    assert torch.equal(augment_windows(px, aug, np.random.default_rng(3)), alone.reshape(px.shape))
    assert aug.window_jitter() == "" and ImageAugment(per_frame=False).window_jitter() == ""
    assert ImageAugment(shift=4, contrast=0.2, per_frame=False).window_jitter() == "shift=4 contrast=0.2"


def test_blur_spreads_a_point_and_keeps_its_mass():
    h = 21
    px = torch.zeros((8, 1, 3, h, h), dtype=torch.uint8)
    px[:, :, :, 10, 10] = 255
    out = augment_windows(px, ImageAugment(blur=2.0), np.random.default_rng(0)).float()
    mass = out[:, 0, 0].sum((1, 2))
    peak = out[:, 0, 0, 10, 10]
    assert torch.all((mass - 255).abs() < 0.5 * 25)  # rounding of at most 25 spread pixels
    assert peak.min() < 255 and peak.max() <= 255 and len(set(peak.tolist())) > 1  # std drawn per window


def test_brightness_and_contrast_stay_in_their_ranges():
    px = torch.full((50, 2, 3, 8, 8), 128, dtype=torch.uint8)
    px[:, :, :, :4] = 64  # half dark: mean 96, levels 64 and 128
    out = augment_windows(px, ImageAugment(brightness=0.1, contrast=0.5), np.random.default_rng(0)).float()
    dark, light = out[:, 0, 0, 0, 0], out[:, 0, 0, 7, 7]
    gain = (light - dark) / 64
    assert gain.min() >= 0.5 - 0.05 and gain.max() <= 1.5 + 0.05 and gain.std() > 0.1
    middle = (light + dark) / 2 - 96  # the mean level moves by the brightness alone
    assert middle.abs().max() <= 25.5 + 1 and middle.std() > 3


@pytest.mark.parametrize("kwargs", [{"shift": -1}, {"blur": -0.5}, {"brightness": 2.0}, {"contrast": 1.0}])
def test_bad_settings_name_the_key(kwargs):
    with pytest.raises(ValueError, match="trainer.augment"):
        ImageAugment(**kwargs)


def test_settings_too_large_for_the_frames_say_the_limit():
    with pytest.raises(ValueError, match="too large for 16x16 frames"):
        augment_windows(windows(), ImageAugment(shift=8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="blur < 5.0"):
        augment_windows(windows(), ImageAugment(blur=6.0), np.random.default_rng(0))


def test_blur_equals_opencv_gaussian_blur_with_reflected_edges():
    import cv2

    from hmpc.augment import _blur_matrix

    img = np.random.default_rng(0).uniform(0, 255, (20, 24)).astype(np.float32)
    for sigma in (0.7, 1.6):
        r = int(np.ceil(3 * sigma))
        want = cv2.GaussianBlur(img, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT_101)
        s = np.array([sigma])
        got = _blur_matrix(20, s)[0] @ torch.from_numpy(img) @ _blur_matrix(24, s)[0].T
        assert np.abs(got.numpy() - want).max() < 1e-3
