"""Generation verifiers (vlmrl.gen.rewards) and the reward-hacking watch (vlmrl.gen.watch).

Images are drawn here with PIL: circles at 4x resolution, box-downsampled to 32 px, so their
edges are anti-aliased blends with the white background, as a rendered or generated image has.
"""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw

import vlmrl.gen.rewards as rewards_mod
import vlmrl.gen.watch as watch_mod
from vlmrl.data.tasks.base import PALETTE
from vlmrl.gen.rewards import (
    KEYS,
    colour_mask,
    colour_reward,
    count_reward,
    hsv,
    objects,
    position_reward,
    score,
    score_batch,
)
from vlmrl.gen.watch import ReferenceSet, image_stats

SIZE, R, SCALE = 32, 3.0, 4


@dataclass(frozen=True)
class P:
    """A stand-in for vlmrl.gen.prompts.GenPrompt (the rewards read only these three fields)."""

    colour: str
    count: int
    side: str


PROMPTS = [P(c, k, s) for c in ("red", "green", "blue") for k in (1, 2, 3) for s in ("left", "right")]


def draw(circles: list[tuple[float, float, str]], size: int = SIZE, r: float = R) -> np.ndarray:
    """White uint8 [size, size, 3] image with filled anti-aliased circles at (cx, cy) in pixel units."""
    big = Image.new("RGB", (size * SCALE, size * SCALE), (255, 255, 255))
    pen = ImageDraw.Draw(big)
    for cx, cy, colour in circles:
        box = [(cx - r) * SCALE, (cy - r) * SCALE, (cx + r) * SCALE - 1, (cy + r) * SCALE - 1]
        pen.ellipse(box, fill=PALETTE[colour])
    return np.asarray(big.resize((size, size), Image.Resampling.BOX))


def render(prompt: P, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Local stand-in for prompts.render: ``count`` circles wholly in the asked half, gaps >= 2 px."""
    lo, hi = (R + 1, size / 2 - R - 1) if prompt.side == "left" else (size / 2 + R + 1, size - R - 1)
    centres: list[tuple[float, float]] = []
    while len(centres) < prompt.count:
        if len(centres) and rng.random() < 0.05:  # a dead end (no room left): start again
            centres = []
        x, y = rng.uniform(lo, hi), rng.uniform(R + 1, size - R - 1)
        if all(np.hypot(x - a, y - b) >= 2 * R + 3 for a, b in centres):
            centres.append((x, y))
    return draw([(x, y, prompt.colour) for x, y in centres], size)


def test_doctests():
    assert doctest.testmod(rewards_mod).failed == 0
    assert doctest.testmod(watch_mod).failed == 0


# --------------------------------------------------------------------------- verifiers
def test_rendered_images_score_one_for_every_prompt():
    rng = np.random.default_rng(0)
    for prompt in PROMPTS:
        for _ in range(3):
            img = render(prompt, rng)
            assert score(img, prompt) == {k: 1.0 for k in KEYS}, prompt


def test_edge_pixels_keep_their_colour():
    # Anti-aliased edges exist (pixels that are neither white nor the palette colour) and still count.
    img = draw([(8.3, 16.6, "blue")])
    flat = img.reshape(-1, 3)
    blends = {tuple(p) for p in flat} - {(255, 255, 255), PALETTE["blue"]}
    assert blends, "the test image should have anti-aliased edge pixels"
    area = int(colour_mask(img, "blue").sum())
    assert 24 <= area <= 36  # pi * 3^2 ~ 28 px, plus the edge pixels past the ink threshold
    assert colour_reward(img, P("blue", 1, "left")) == 1.0


def test_off_by_one_count_gets_partial_credit():
    two = draw([(5, 8, "red"), (5, 20, "red")])
    three = draw([(5, 6, "red"), (5, 16, "red"), (5, 26, "red")])
    # |n - k| / k: 2 for 3 -> 1 - 1/3; 3 for 2 -> 1 - 1/2; 2 for 1 -> 1 - 1 = 0.
    assert count_reward(two, P("red", 3, "left")) == pytest.approx(2 / 3)
    assert count_reward(three, P("red", 2, "left")) == pytest.approx(0.5)
    assert count_reward(two, P("red", 1, "left")) == 0.0
    s = score(two, P("red", 3, "left"))
    assert s["total"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert s["strict"] == 0.0


def test_wrong_colour_scores_zero():
    img = draw([(6, 10, "red"), (7, 22, "red")])
    for colour in ("green", "blue"):
        s = score(img, P(colour, 2, "left"))
        assert s == {"count": 0.0, "colour": 0.0, "position": 0.0, "total": 0.0, "strict": 0.0}


def test_mixed_colours_share_the_ink():
    img = draw([(6, 8, "red"), (6, 22, "green")])
    red, green = colour_mask(img, "red").sum(), colour_mask(img, "green").sum()
    s = score(img, P("red", 1, "left"))
    assert s["count"] == 1.0 and s["position"] == 1.0  # the green circle is not a red object
    assert s["colour"] == pytest.approx(red / (red + green))
    assert 0.35 < s["colour"] < 0.65 and s["strict"] == 0.0


def test_right_count_wrong_side():
    img = draw([(24, 8, "green"), (25, 22, "green")])
    s = score(img, P("green", 2, "left"))
    assert (s["count"], s["colour"], s["position"]) == (1.0, 1.0, 0.0)
    assert s["total"] == pytest.approx(2 / 3) and s["strict"] == 0.0
    assert position_reward(img, P("green", 2, "right")) == 1.0
    # One on each side: half the objects are where asked.
    split = draw([(6, 8, "green"), (25, 22, "green")])
    assert position_reward(split, P("green", 2, "left")) == 0.5


def test_touching_circles_are_one_object_and_gapped_ones_two():
    touching = draw([(8, 10, "blue"), (8, 16, "blue")])  # centres 2r apart: the discs meet
    overlapping = draw([(8, 10, "blue"), (11, 12, "blue")])
    gapped = draw([(8, 8, "blue"), (8, 17, "blue")])  # 9 px apart: a 3 px white gap
    assert len(objects(touching, "blue")) == 1
    assert len(objects(overlapping, "blue")) == 1
    assert len(objects(gapped, "blue")) == 2
    assert count_reward(touching, P("blue", 2, "left")) == 0.5


def test_specks_are_not_objects():
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    img[10, 5] = img[11, 5] = PALETTE["red"]  # a 2 px speck < MIN_AREA
    assert objects(img, "red") == []
    img[12, 5] = PALETTE["red"]  # now 3 px
    assert objects(img, "red") == [(3, (11.0, 5.0))]


def test_empty_image_scores_zero():
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    for prompt in PROMPTS:
        s = score(img, prompt)
        assert s == {"count": 0.0, "colour": 0.0, "position": 0.0, "total": 0.0, "strict": 0.0}


def test_grey_and_black_ink_have_no_colour():
    grey = draw([(6, 10, "red")])
    pen_img = Image.fromarray(grey.copy())
    ImageDraw.Draw(pen_img).ellipse([3, 20, 9, 26], fill=(120, 120, 120))
    with_grey = np.asarray(pen_img)
    s = score(with_grey, P("red", 1, "left"))
    assert s["count"] == 1.0 and s["position"] == 1.0 and s["colour"] < 0.7  # grey is ink, not red
    for value in (0, 60, 128):
        flat = np.full((SIZE, SIZE, 3), value, np.uint8)
        for colour in ("red", "green", "blue"):
            assert not colour_mask(flat, colour).any()
            assert score(flat, P(colour, 1, "right"))["total"] == 0.0
    # Whitish haze (a blurry sample's background) is neither ink nor colour.
    haze = np.full((SIZE, SIZE, 3), (245, 225, 225), np.uint8)
    assert score(haze, P("red", 1, "left"))["total"] == 0.0


def test_all_one_colour_image():
    # The known hack: one object of pure colour, centroid on the midline.
    full = np.broadcast_to(np.array(PALETTE["red"], np.uint8), (SIZE, SIZE, 3)).copy()
    s = score(full, P("red", 1, "left"))
    assert (s["count"], s["colour"], s["position"]) == (1.0, 1.0, 0.0)
    assert score(full, P("red", 3, "right"))["count"] == pytest.approx(1 / 3)
    stats = image_stats(full[None])
    assert stats["watch/ink"] == 1.0 and stats["watch/saturation"] == pytest.approx(180 / 220)


def test_noise_images_do_not_crash_and_score_low():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(len(PROMPTS), SIZE, SIZE, 3), dtype=np.uint8)
    total, parts = score_batch(imgs, PROMPTS)
    assert np.all((total >= 0) & (total <= 1))
    assert total.mean() < 0.4 and parts["strict"].sum() == 0
    assert parts["count"].max() < 0.5  # noise breaks into many blobs


def test_odd_images_never_raise():
    rng = np.random.default_rng(2)
    odd = [
        np.zeros((1, 1, 3), np.uint8),
        np.full((5, 40, 3), 255, np.uint8),
        rng.integers(0, 256, size=(7, 3, 3), dtype=np.uint8),
        np.indices((SIZE, SIZE, 3)).sum(0).astype(np.uint8) * 37,  # stripes through every hue
        np.asfortranarray(rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)),
    ]
    for img in odd:
        for prompt in PROMPTS[::5]:
            s = score(img, prompt)
            assert set(s) == set(KEYS) and all(0.0 <= v <= 1.0 for v in s.values())


def test_bad_inputs_raise_clear_errors():
    ok = np.full((SIZE, SIZE, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        score(ok.astype(np.float32) / 255, P("red", 1, "left"))
    with pytest.raises(ValueError, match=r"\[H, W, 3\].*\[32, 32\]"):
        score(ok[..., 0], P("red", 1, "left"))
    with pytest.raises(ValueError, match=r"\[H, W, 3\].*\[32, 32, 4\]"):
        score(np.zeros((SIZE, SIZE, 4), np.uint8), P("red", 1, "left"))
    with pytest.raises(ValueError, match="numpy"):
        score(ok.tolist(), P("red", 1, "left"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'yellow'.*allowed"):
        score(ok, P("yellow", 1, "left"))
    with pytest.raises(ValueError, match="count 0"):
        score(ok, P("red", 0, "left"))
    with pytest.raises(ValueError, match=r"'up'.*allowed"):
        score(ok, P("red", 1, "up"))
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        score_batch(np.stack([ok, ok]), PROMPTS[:1])
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        score_batch(ok, PROMPTS[:1])


def test_score_batch_shapes_keys_and_values():
    rng = np.random.default_rng(3)
    prompts = PROMPTS[:6]
    imgs = np.stack([render(p, rng) for p in prompts[:3]] + [render(p, rng) for p in prompts[3:][::-1]])
    total, parts = score_batch(imgs, prompts)
    assert total.shape == (6,) and total.dtype == np.float64
    assert set(parts) == set(KEYS) and all(v.shape == (6,) for v in parts.values())
    np.testing.assert_array_equal(total, parts["total"])
    for i, (img, p) in enumerate(zip(imgs, prompts, strict=True)):
        assert {k: float(parts[k][i]) for k in KEYS} == score(img, p)
    assert np.all(total[:3] == 1.0)


def test_hsv_saturation_of_grey_is_zero():
    grey = np.full((4, 4, 3), 128, np.uint8)
    _, s, v = hsv(grey)
    assert np.all(s == 0.0) and np.allclose(v, 128 / 255)
    assert image_stats(grey[None])["watch/saturation"] == 0.0


# --------------------------------------------------------------------------- the watch
@pytest.fixture(scope="module")
def ref() -> ReferenceSet:
    return ReferenceSet.build(render, PROMPTS, n=96, seed=0)


def test_reference_set_is_deterministic(ref: ReferenceSet):
    again = ReferenceSet.build(render, PROMPTS, n=96, seed=0)
    np.testing.assert_array_equal(again.feats, ref.feats)
    assert again.base == ref.base and ref.feats.shape == (96, 192)
    assert ReferenceSet.build(render, PROMPTS, n=96, seed=1).base != ref.base


def test_watch_rendered_near_noise_far(ref: ReferenceSet):
    rng = np.random.default_rng(7)
    rendered = np.stack([render(p, rng) for p in PROMPTS])
    noise = rng.integers(0, 256, size=(len(PROMPTS), SIZE, SIZE, 3), dtype=np.uint8)
    near, far = image_stats(rendered, ref), image_stats(noise, ref)
    assert near["watch/ref_distance_base"] == far["watch/ref_distance_base"] == ref.base
    assert near["watch/ref_distance"] < 2 * ref.base
    assert far["watch/ref_distance"] > 4 * near["watch/ref_distance"]
    assert far["watch/pixel_var"] > 3 * near["watch/pixel_var"]
    assert near["watch/ink"] < 0.2 < far["watch/ink"]
    assert near["watch/saturation"] < far["watch/saturation"]


def test_watch_keys_and_collapse(ref: ReferenceSet):
    img = render(PROMPTS[0], np.random.default_rng(4))
    stats = image_stats(np.stack([img] * 4))
    assert set(stats) == {"watch/saturation", "watch/pixel_var", "watch/batch_var", "watch/ink"}
    assert stats["watch/batch_var"] == 0.0  # four copies of one image: mode collapse
    with_ref = image_stats(np.stack([img] * 4), ref)
    assert {"watch/ref_distance", "watch/ref_distance_base"} <= set(with_ref)


def test_watch_bad_inputs(ref: ReferenceSet):
    with pytest.raises(ValueError, match="uint8"):
        image_stats(np.zeros((2, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        image_stats(np.zeros((SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match="multiples of 8"):
        image_stats(np.zeros((1, 30, 30, 3), np.uint8), ref)
    with pytest.raises(ValueError, match="features"):
        ReferenceSet(feats=np.zeros((2, 10)), base=0.0).distance(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match="differ"):
        uneven = lambda p, rng: np.zeros((8 * int(rng.integers(1, 3)), 8, 3), np.uint8)  # noqa: E731
        ReferenceSet.build(uneven, PROMPTS, n=8)
    with pytest.raises(ValueError, match="n >= 1"):
        ReferenceSet.build(render, [], n=8)
