"""Video and multi-image prompts: frame sampling, the tasks' ground truth, processor token counts,
the ratio-1 guarantee on video prompts, the shuffled-frame blind condition, malformed video input."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import QUICK_RUN
from vlmrl.config.load import load_config
from vlmrl.config.reward_spec import RewardConfig
from vlmrl.data import build_messages, generate, load_dataset
from vlmrl.data.sample import Video
from vlmrl.data.tasks.simple import position_of
from vlmrl.data.video import fit_frame, make_video, sample_frame_indices
from vlmrl.errors import UserError
from vlmrl.eval.blind import blind_gap, default_conditions, with_condition
from vlmrl.eval.temporal import reward_temporal_contrast
from vlmrl.rollout.batch import concat_batches, encode_prompts, select_prompts
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.rollouts import Rollouts
from vlmrl.rollout.sampler import fast_sampling_supported
from vlmrl.rollout.shared_prompt import rollout_logprobs
from vlmrl.train.grpo import GRPOTrainer

BLUE = np.array([40, 90, 225])
RED = np.array([220, 40, 40])


# ---- frame sampling, by hand ------------------------------------------------------------------
def test_frame_indices_by_hand() -> None:
    # 30 frames at 10 fps = 3 s; at 2 fps keep 6, evenly spaced: round(k·29/5) = 0, 5.8, 11.6, 17.4, 23.2, 29
    assert sample_frame_indices(30, 10.0, 2.0, 16) == [0, 6, 12, 17, 23, 29]
    # 10 s at 30 fps, 2 fps wants 20, capped at 5, rounded down to 4: round(k·299/3) = 0, 99.7, 199.3, 299
    assert sample_frame_indices(300, 30.0, 2.0, 5) == [0, 100, 199, 299]
    # 3 frames at 30 fps (0.1 s) want floor(0.2) = 0 frames: at least one temporal patch, first and last
    assert sample_frame_indices(3, 30.0, 2.0, 16) == [0, 2]
    # 7 frames at 1 fps and 1 fps: 7, rounded down to 6: round(k·6/5) = 0, 1.2, 2.4, 3.6, 4.8, 6
    assert sample_frame_indices(7, 1.0, 1.0, 16) == [0, 1, 2, 4, 5, 6]


def test_frame_size_and_rate_by_hand() -> None:
    # 448×224 = 100,352 px > 12,544: s = √(12,544 / 100,352) = √0.125 = 0.35355 -> ⌊158.4⌋ × ⌊79.2⌋
    assert fit_frame(Image.new("RGB", (448, 224)), 112 * 112).size == (158, 79)
    assert fit_frame(Image.new("RGB", (100, 100)), 20_000).size == (100, 100)
    # 30 frames at 10 fps (3 s) sampled at 2 fps: 6 frames over 3 s -> the video's rate is 2.0
    frames = [Image.new("RGB", (32, 32), (i, 0, 0)) for i in range(30)]
    video = make_video(frames, 10.0, "row 0", fps=2.0, max_frames=16)
    assert video.fps == 2.0 and [f.getpixel((0, 0))[0] for f in video.frames] == [0, 6, 12, 17, 23, 29]


# ---- the tasks' ground truth, read back from the pixels ---------------------------------------
def _quadrant(frame: Image.Image) -> str:
    """Where the blue circle is, from the pixels alone ("none" without one)."""
    ys, xs = np.nonzero((np.asarray(frame)[..., :3] == BLUE).all(-1))
    if not len(xs):
        return "none"
    return position_of([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())], frame.size)


def _blobs(image: Image.Image, rgb: np.ndarray) -> int:
    """Connected regions (4-neighbour flood fill) of exactly ``rgb``."""
    mask = (np.asarray(image)[..., :3] == rgb).all(-1)
    seen, count = np.zeros_like(mask), 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] and not seen[cy, cx]:
                seen[cy, cx] = True
                stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return count


@pytest.mark.parametrize("frames", [4, 8])
def test_motion_answer_is_where_the_circle_ends(frames: int) -> None:
    for s in generate("motion", 12, seed=3, split="test", frames=frames):
        (video,) = s.videos
        seen = [_quadrant(f) for f in video.frames]
        assert len(video.frames) == frames and s.images == [] and s.problem.startswith("<video>")
        assert seen == s.facts["path"]
        assert seen[-1] == s.answer != seen[0]  # order decides: the first frame shows another quadrant
        assert seen[: frames // 2] == [seen[0]] * (frames // 2)  # one jump, halfway


def test_compare_answer_from_the_pixels() -> None:
    for s in generate("compare", 12, seed=5):
        counts = [_blobs(im, RED) for im in s.images]
        assert counts == s.facts["counts"] and counts[0] != counts[1]
        assert s.answer == ("first" if counts[0] > counts[1] else "second")
        assert [c["type"] for c in build_messages(s)[0]["content"]] == ["image", "image", "text"]


# ---- the processor: video tokens = video features ---------------------------------------------
def _media_prompts() -> list:
    """Mixed prompt lengths: a 4-frame and an 8-frame video, two images, one image."""
    return [
        generate("motion", 1, seed=0)[0],
        generate("compare", 1, seed=1)[0],
        generate("motion", 1, seed=2, frames=8)[0],
        generate("count", 1, seed=3)[0],
    ]


def _encode(policy, samples):
    return encode_prompts(
        policy.processor,
        [build_messages(s) for s in samples],
        [s.images for s in samples],
        [s.videos for s in samples],
    )


def test_video_token_counts_match_features(tiny_policy) -> None:
    samples = _media_prompts()
    enc = _encode(tiny_policy, samples)
    tok = tiny_policy.tokenizer
    merge = tiny_policy.processor.video_processor.merge_size**2
    video_pad, image_pad = (
        tok.convert_tokens_to_ids("<|video_pad|>"),
        tok.convert_tokens_to_ids("<|image_pad|>"),
    )
    grid_v, grid_i = enc["video_grid_thw"], enc["image_grid_thw"]
    # 112-px frames: 8×8 patches; 4 frames -> t = 2, 8 frames -> t = 4 (frames in pairs)
    assert grid_v.tolist() == [[2, 8, 8], [4, 8, 8]]
    assert enc["videos_per_prompt"].tolist() == [1, 0, 1, 0] and enc["images_per_prompt"].tolist() == [
        0,
        2,
        0,
        1,
    ]
    per_row = (enc["input_ids"] == video_pad).sum(1).tolist()
    assert per_row == [128 // merge, 0, 256 // merge, 0]  # t·h·w / merge² per video
    assert int((enc["input_ids"] == image_pad).sum()) == int(grid_i.prod(-1).sum()) // merge
    assert enc["pixel_values_videos"].shape[0] == int(grid_v.prod(-1).sum())
    assert torch.allclose(enc["second_per_grid_ts"], torch.tensor([2 / 8.0, 2 / 8.0]))  # temporal patch / fps
    with torch.no_grad():  # the model itself checks tokens against features, and would raise
        inputs = {k: v for k, v in enc.items() if not k.endswith("_per_prompt")}
        assert tiny_policy.model(**inputs).logits.shape[0] == 4


# ---- the ratio is exactly 1 before the first update, on video prompts --------------------------
def test_ratio_is_one_before_the_first_update_on_video_prompts(tiny_policy) -> None:
    samples = _media_prompts()
    enc = _encode(tiny_policy, samples)
    model = tiny_policy.model.eval()
    assert fast_sampling_supported(model, enc)  # the shared-prefill sampler takes video prompts
    engine = HFEngine(
        tiny_policy, max_new_tokens=8, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    batch = engine.generate(enc, 3)
    rows = torch.arange(batch.size)
    mask = batch.completion_mask.bool()
    with torch.no_grad():
        for shared in (True, False):  # the shared-prompt training forward and the plain one
            logp, _ = rollout_logprobs(model, batch, rows, 1.0, shared=shared)
            ratio = torch.exp(logp - batch.sampler_logprobs)[mask]
            assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3), (shared, ratio)
        # a group's video travels with it: select and concatenate keep each row's log-probs
        sub = select_prompts(batch, [2, 0])
        both = concat_batches([sub, select_prompts(batch, [1, 3])], tiny_policy.tokenizer.pad_token_id)
        logp_both, _ = rollout_logprobs(model, both, torch.arange(both.size), 1.0, shared=False)
        ratio = torch.exp(logp_both - both.sampler_logprobs)[both.completion_mask.bool()]
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)


def test_wrong_video_positions_would_break_the_match(tiny_policy) -> None:
    """The guard above is not vacuous: with another temporal step the log-probs move."""
    samples = [generate("motion", 1, seed=0)[0]]
    enc = _encode(tiny_policy, samples)
    batch = HFEngine(tiny_policy, max_new_tokens=6, generator=torch.Generator().manual_seed(0)).generate(
        enc, 2
    )
    batch.prompt_inputs = {**batch.prompt_inputs, "second_per_grid_ts": enc["second_per_grid_ts"] * 40}
    with torch.no_grad():
        logp, _ = rollout_logprobs(tiny_policy.model.eval(), batch, torch.arange(batch.size), shared=False)
    assert ((logp - batch.sampler_logprobs).abs() * batch.completion_mask).max() > 1e-3


# ---- the shuffled-frame blind condition --------------------------------------------------------
def test_shuffled_frames_keeps_content_and_breaks_order() -> None:
    samples = generate("motion", 6, seed=0, frames=8) + generate("compare", 2, seed=0)
    out = with_condition(samples, "shuffled_frames", seed=1)
    for s, o in zip(samples, out, strict=True):
        assert o.images == s.images and o.answer == s.answer  # images and prompts untouched
        for v, w in zip(s.videos, o.videos, strict=True):
            ids = [id(f) for f in v.frames]
            assert sorted(ids) == sorted(id(f) for f in w.frames)  # the same frames ...
            assert all(
                a != b for a, b in zip(ids, (id(f) for f in w.frames), strict=True)
            )  # ... none in place
    assert "shuffled_frames" in default_conditions(samples)
    assert "shuffled_frames" not in default_conditions(generate("count", 3))


def test_blind_gap_with_shuffled_frames_for_a_model_that_reads_the_last_frame() -> None:
    samples = generate("motion", 20, seed=0, frames=4) + generate("compare", 4, seed=0)

    def run(batch: list) -> dict:  # a "model" that answers from the last frame / the red pixel counts
        acc = []
        for s in batch:
            if s.videos:
                acc.append(float(_quadrant(s.videos[0].frames[-1]) == s.answer))
            else:
                a, b = ((np.asarray(im) == RED).all(-1).sum() for im in s.images)
                acc.append(float(("first" if a > b else "second") == s.answer))
        return {
            "accuracy": float(np.mean(acc)),
            "reward": float(np.mean(acc)),
            "outputs": [{"accuracy": x} for x in acc],
        }

    res = blind_gap(None, samples, "answer", None, conditions=("real", "shuffled_frames", "blank"), run=run)
    motion = {c: r["by_task"]["motion"] for c, r in res["conditions"].items()}
    assert motion["real"] == 1.0 and motion["shuffled_frames"] < 1.0
    # compare has no video: shuffled_frames leaves it as it is, so its gap counts only blank
    assert res["conditions"]["shuffled_frames"]["by_task"]["compare"] == 1.0
    assert res["blind_gap_by_task"]["compare"] == 1.0 - res["conditions"]["blank"]["by_task"]["compare"] > 0


# ---- hostile and malformed video input: one line, naming the row and field ---------------------
@pytest.fixture()
def frames_dir(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    Image.new("RGB", (48, 32), "blue").save(tmp_path / "wide.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return tmp_path


def _load(folder, videos, problem="<video>Where?"):
    path = folder / "data.jsonl"
    path.write_text(json.dumps({"problem": problem, "answer": "x", "videos": videos}) + "\n")
    return load_dataset(path, image_key=None, video_key="videos")


def test_a_video_of_frames_loads(frames_dir) -> None:
    (s,) = _load(frames_dir, [["a.png"] * 4])
    assert len(s.videos[0].frames) == 4 and s.videos[0].fps == 2.0 and "videos" not in s.columns
    (s,) = _load(frames_dir, [{"frames": ["a.png"] * 8, "fps": 8}])  # 1 s at 8 fps, kept at 2 fps
    assert len(s.videos[0].frames) == 2


@pytest.mark.parametrize(
    ("videos", "problem", "says"),
    [
        ([[]], "<video>Q", "no frames"),
        ([["a.png", "wide.png"]], "<video>Q", "differ in size"),
        ([["bad.png", "a.png"]], "<video>Q", "cannot decode image"),
        ([["../a.png"]], "<video>Q", "outside the dataset folder"),
        ("a.png", "<video>Q", "expected a list of videos"),
        ([42], "<video>Q", "a list of frames or a video file path"),
        ([{"frames": ["a.png", "a.png"], "fps": "fast"}], "<video>Q", "'fps' must be a number"),
        ([{"frames": ["a.png", "a.png"], "fps": -1}], "<video>Q", "positive"),
        ([["a.png", "a.png"]], "Q without a placeholder", "placeholder"),
        (["clip.mp4"], "<video>Q", "video"),
        (["missing.mp4"], "<video>Q", "not found"),
    ],
)
def test_malformed_videos_raise_one_line(frames_dir, videos, problem, says) -> None:
    with pytest.raises(UserError) as e:
        _load(frames_dir, videos, problem)
    msg = str(e.value)
    assert says in msg and "\n" not in msg and "row 0" in msg and "'videos'" in msg


def test_video_knobs_are_checked_at_load() -> None:
    with pytest.raises(UserError, match=r"data\.video_fps"):
        load_config(None, ["data.video_fps=0"])
    with pytest.raises(UserError, match=r"data\.video_max_frames"):
        load_config(None, ["data.video_max_frames=1"])


def test_video_class_round_trips_through_messages() -> None:
    s = generate("motion", 1)[0]
    msgs = build_messages(s, embed_images=True)
    entry = msgs[0]["content"][0]
    assert entry["type"] == "video" and entry["video"] == s.videos[0].frames
    assert isinstance(s.videos[0], Video)


# ---- the temporal-contrast reward (T-GRPO) -----------------------------------------------------
class _FixedEngine:
    """Answers every shuffled-frame prompt with ``answer(sample)``, ``n`` times."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    def generate(self, enc, n: int):
        b = enc["input_ids"].shape[0]
        return SimpleNamespace(
            texts=[f"<answer>{self.answers[g]}</answer>" for g in range(b) for _ in range(n)],
            prompt_index=torch.arange(b).repeat_interleave(n),
        )


@pytest.mark.parametrize(("shuffled_right", "paid"), [(False, True), (True, False)])
def test_temporal_contrast_pays_right_answers_only_when_order_helps(
    tiny_policy, shuffled_right, paid
) -> None:
    samples = generate("motion", 2, seed=0) + generate("count", 1, seed=0)
    g = 4  # group size; in group 0 two of four answers are right (p = 0.5), group 1 none, group 2 all
    acc = torch.tensor([1.0, 1.0, 0.0, 0.0] + [0.0] * 4 + [1.0] * 4)
    batch = SimpleNamespace(prompt_index=torch.arange(3).repeat_interleave(g), size=12)
    ro = Rollouts(samples, batch, acc.clone(), {"accuracy": acc})
    wrong = [("top-right" if s.answer == "top-left" else "top-left") for s in samples[:2]]
    engine = _FixedEngine([s.answer for s in samples[:2]] if shuffled_right else wrong)
    cfg = RewardConfig(temporal_contrast=0.3, temporal_mu=0.8)
    out = reward_temporal_contrast(ro, engine, tiny_policy.processor, "answer", cfg)
    # p̃ = 0 (all wrong shuffled): 0.5 ≥ 0.8·0 -> right answers of group 0 get +0.3; group 1 has none
    # right; group 2 has no video. p̃ = 1: 0.5 < 0.8 -> nobody is paid.
    bonus = 0.3 if paid else 0.0
    assert torch.allclose(out.rewards, acc + torch.tensor([bonus, bonus] + [0.0] * 10))
    assert out.metrics["reward/temporal_shuffled"] == (1.0 if shuffled_right else 0.0)
    assert out.metrics["reward/temporal_ordered"] == 0.25  # (0.5 + 0.0) / 2 video groups


def test_temporal_contrast_is_off_by_default(tiny_policy) -> None:
    samples = generate("motion", 1, seed=0)
    ro = Rollouts(
        samples, SimpleNamespace(prompt_index=torch.zeros(2, dtype=torch.long), size=2), torch.ones(2)
    )
    assert reward_temporal_contrast(ro, None, tiny_policy.processor, "answer", RewardConfig()) is ro
    assert torch.equal(ro.rewards, torch.ones(2)) and not ro.metrics


def test_one_grpo_step_on_video_prompts_with_the_temporal_reward(tiny_dir, tmp_path, plugin) -> None:
    # the letters reward varies on the untrained model's text, so advantages are non-zero
    overrides = [*QUICK_RUN, f"model.path={tiny_dir}", f"log.run_dir={tmp_path}", "data.task=motion"]
    overrides += [f"reward.modules=[{plugin}]", "reward.weights={test_letters: 1.0, accuracy: 0.0}"]
    cfg = load_config(overrides=[*overrides, "reward.temporal_contrast=0.3", "train.save_every=0"])
    trainer = GRPOTrainer(cfg)
    before = {k: p.detach().clone() for k, p in trainer.policy.model.named_parameters()}
    metrics = trainer.train_step()
    assert {"reward/temporal_ordered", "reward/temporal_shuffled", "reward/temporal_bonus_frac"} <= set(
        metrics
    )
    changed = [k for k, p in trainer.policy.model.named_parameters() if not torch.equal(p, before[k])]
    assert any("visual" in k for k in changed)  # the video reached the tower and got gradients


def test_doctor_counts_video_tokens_too(tiny_policy) -> None:
    from vlmrl.eval.doctor import check_image_tokens

    assert check_image_tokens(tiny_policy, sizes=((112, 112),)).ok is True

    class DropVideoGrid:  # a processor that forgot video_grid_thw
        def __getattr__(self, name):
            return getattr(tiny_policy.processor, name)

        def __call__(self, *args, **kwargs):
            enc = tiny_policy.processor(*args, **kwargs)
            enc.pop("video_grid_thw", None)
            return enc

    broken = dataclasses.replace(tiny_policy, processor=DropVideoGrid())
    check = check_image_tokens(broken, sizes=((112, 112),))
    assert check.ok is False and "video: the processor returned no" in check.detail
