"""Is the model looking? The same prompts under image conditions, and the blind gap.

Conditions (each a copy of the samples with only the images and videos replaced):

- ``real``: the sample's own images;
- ``blank``: white images (and video frames) of the same size;
- ``noise``: uniform RGB noise of the same size (seeded);
- ``shuffled``: each sample gets another sample's images and videos — a seeded derangement
  (Sattolo's algorithm: a random single cycle, so nobody keeps their own image); with one
  sample there is no other image, so it falls back to ``blank``;
- ``shuffled_frames``: each video keeps its own frames in a seeded order with no frame in its
  place (a derangement of the frame indices): what is shown stays, *when* it is shown does not.
  It applies only to samples with videos (a model that ignores temporal order scores the same
  as on ``real``), and is in the default conditions only when some sample has a video.

``blind_gap = acc(real) − max over blind conditions of acc(condition)``, overall and per task:
the accuracy the image is responsible for. Taking the *best* blind condition makes it a lower
bound that guessing cannot inflate: a model that answers from the question's priors scores the
same on every condition and gets a gap of ~0, whatever its accuracy. For a task without videos
``shuffled_frames`` changes nothing, so its per-task gap leaves that condition out.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from vlmrl.config.reward_spec import BLIND_CONDITIONS
from vlmrl.data import Sample
from vlmrl.data.sample import Video
from vlmrl.eval.accuracy import evaluate

#: Conditions that only change videos: left out where no sample has one.
VIDEO_CONDITIONS = ("shuffled_frames",)
CONDITIONS = ("real", *BLIND_CONDITIONS, *VIDEO_CONDITIONS)


def default_conditions(samples: Sequence[Sample]) -> tuple[str, ...]:
    """Every condition that changes something for ``samples`` (the video ones need a video)."""
    has_video = any(s.videos for s in samples)
    return tuple(c for c in CONDITIONS if has_video or c not in VIDEO_CONDITIONS)


def blank_image(image: Image.Image) -> Image.Image:
    """A white RGB image of ``image``'s size."""
    return Image.new("RGB", image.size, (255, 255, 255))


def noise_image(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Uniform RGB noise (each channel of each pixel i.i.d. in 0..255) of ``image``'s size."""
    w, h = image.size
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def derangement(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation with no fixed point (Sattolo: one random n-cycle); ``[0]`` for n = 1.

    >>> d = derangement(5, seed=3)
    >>> sorted(d) == list(range(5)) and all(d[i] != i for i in range(5))
    True
    """
    perm = list(range(n))
    rng = random.Random(f"vlmrl-derangement:{seed}")
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i (never i itself): this is what makes it a single cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def with_condition(samples: Sequence[Sample], condition: str, seed: int = 0) -> list[Sample]:
    """Shallow copies of ``samples`` whose images follow ``condition`` (see the module docstring).

    Prompts, answers and facts are untouched, so any accuracy difference is the images' doing.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"blind gap: unknown image condition {condition!r}; allowed: {list(CONDITIONS)}")
    out = [copy.copy(s) for s in samples]
    if condition == "real":
        return out
    if condition == "shuffled" and len(samples) < 2:
        condition = "blank"
    if condition == "blank":
        for s in out:
            s.images = [blank_image(im) for im in s.images]
            s.videos = [Video([blank_image(f) for f in v.frames], v.fps) for v in s.videos]
    elif condition == "noise":
        rng = np.random.default_rng(seed)
        for s in out:
            s.images = [noise_image(im, rng) for im in s.images]
            s.videos = [Video([noise_image(f, rng) for f in v.frames], v.fps) for v in s.videos]
    elif condition == "shuffled_frames":  # each video's frames in a seeded order, none in place
        for i, s in enumerate(out):
            s.videos = [
                Video([v.frames[j] for j in derangement(len(v.frames), seed * 1_000_003 + i)], v.fps)
                for v in s.videos
            ]
    else:  # shuffled: sample i shows the images (and videos) of sample perm[i]
        perm = derangement(len(samples), seed)
        for s, j in zip(out, perm, strict=True):
            donor, donor_v = samples[j].images, samples[j].videos
            # keep the sample's image and video counts (its prompt has one placeholder per item)
            s.images = [donor[k % len(donor)] if donor else blank_image(im) for k, im in enumerate(s.images)]
            s.videos = [
                donor_v[k % len(donor_v)] if donor_v else Video([blank_image(f) for f in v.frames], v.fps)
                for k, v in enumerate(s.videos)
            ]
    return out


def _by_task(samples: Sequence[Sample], outputs: list[dict[str, Any]]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for s, o in zip(samples, outputs, strict=True):
        acc[s.task].append(o["accuracy"])
    return {t: float(np.mean(v)) for t, v in acc.items()}


def blind_gap(
    policy,
    samples: Sequence[Sample],
    template: str,
    reward_fn,
    max_new_tokens: int = 16,
    batch_size: int = 50,
    conditions: Sequence[str] | None = None,
    seed: int = 0,
    real: dict[str, Any] | None = None,
    run: Callable[[list[Sample]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy of the same prompts under each image condition, and the blind gap.

    Returns ``{"conditions": {cond: {"accuracy", "reward", "by_task": {task: acc}}},
    "blind_gap": float, "blind_gap_by_task": {task: float}}``. ``conditions`` must hold ``real``
    and at least one blind condition (default: :func:`default_conditions`). Decoding is
    :func:`vlmrl.eval.accuracy.evaluate`'s;
    ``real``, an ``evaluate(..., return_outputs=True)`` result on these samples, is reused instead
    of decoding the real images again (a training eval has just computed it). ``run``, if given,
    replaces that decoding: ``run(samples)`` returns the same keys (``accuracy``, ``reward``,
    ``outputs`` with a per-sample ``accuracy``) — multi-turn episodes use it, where the tools
    then crop the blank / noise / other image.
    """
    conditions = list(dict.fromkeys(conditions if conditions is not None else default_conditions(samples)))
    bad = [c for c in conditions if c not in CONDITIONS]
    blind = [c for c in conditions if c != "real"]
    if bad or "real" not in conditions or not blind:
        raise ValueError(
            f"blind gap: conditions {conditions} must include 'real' and at least one of "
            f"{list(CONDITIONS[1:])} (allowed: {list(CONDITIONS)})"
        )
    per: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        if cond == "real" and real is not None and "outputs" in real:
            res = real
        elif run is not None:
            res = run(with_condition(samples, cond, seed))
        else:
            res = evaluate(
                policy,
                with_condition(samples, cond, seed),
                template,
                reward_fn,
                max_new_tokens,
                batch_size,
                return_outputs=True,
            )
        per[cond] = {
            "accuracy": res["accuracy"],
            "reward": res["reward"],
            "by_task": _by_task(samples, res["outputs"]),
        }
    tasks = per["real"]["by_task"]
    video_tasks = {s.task for s in samples if s.videos}

    def blind_for(task: str) -> list[str]:
        own = [c for c in blind if task in video_tasks or c not in VIDEO_CONDITIONS]
        return own or blind

    return {
        "conditions": per,
        "blind_gap": per["real"]["accuracy"] - max(per[c]["accuracy"] for c in blind),
        "blind_gap_by_task": {
            t: per["real"]["by_task"][t] - max(per[c]["by_task"][t] for c in blind_for(t)) for t in tasks
        },
    }


def flatten_blind(result: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """Logger keys: ``eval/blind/<cond>``, ``eval/blind_gap`` (+ ``/<task>`` when several tasks)."""
    out = {f"{prefix}/blind/{c}": r["accuracy"] for c, r in result["conditions"].items() if c != "real"}
    out[f"{prefix}/blind_gap"] = result["blind_gap"]
    if len(result["blind_gap_by_task"]) > 1:
        out |= {f"{prefix}/blind_gap/{t}": g for t, g in result["blind_gap_by_task"].items()}
    return out


def format_blind_table(result: dict[str, Any]) -> str:
    """One row per task (and ``all``): accuracy under each condition, then the blind gap."""
    conds = list(result["conditions"])
    width = {c: max(10, len(c) + 2) for c in conds}  # ``shuffled_frames`` is wider than a number
    lines = [f"{'task':<14}" + "".join(f"{c:>{width[c]}}" for c in conds) + f"{'blind gap':>11}"]
    tasks = list(result["blind_gap_by_task"])
    for t in tasks:
        cells = "".join(f"{result['conditions'][c]['by_task'][t]:>{width[c]}.3f}" for c in conds)
        lines.append(f"{t:<14}{cells}{result['blind_gap_by_task'][t]:>+11.3f}")
    if len(tasks) != 1:
        cells = "".join(f"{result['conditions'][c]['accuracy']:>{width[c]}.3f}" for c in conds)
        lines.append(f"{'all':<14}{cells}{result['blind_gap']:>+11.3f}")
    return "\n".join(lines)
