"""``vlmrl doctor``: preflight checks of a model (+ dataset, + config) before any training step.

Each check returns a :class:`Check` (pass / fail / skip, what was measured, and the fix); the
CLI prints them as one table. The checks are those that break multimodal RL silently or late:

- ``image tokens``: for images of several sizes (and the dataset's own), the ``<|image_pad|>``
  tokens the processor writes equal the features the vision tower will produce
  (``prod(image_grid_thw) / merge²``), every output the model needs is there, and the model's
  prefill runs (else: "Image features and image tokens do not match" at the first training step);
- ``log-prob gap``: completions sampled by the rollout engine are re-scored by the training
  forward (``vlmrl.rollout``); the ratio must be 1 within 1e-3, reported separately over text
  prompts and over tokens after images (where M-RoPE positions and ``mm_token_type_ids`` matter);
- ``tool images``: the chat template renders an image inside a ``tool`` message (multi-turn
  tools that return crops), and the processed conversation's tokens match its features;
- ``boxes``: grounding answers (``answer_type: box``) are pixel boxes inside their image, and a
  model answering in the pixels of the image *as the processor resized it* (Qwen2.5-VL) would
  still score IoU ≥ 0.9 against them;
- ``memory``: the per-GPU estimate of :mod:`vlmrl.eval.memory_estimate`, with the advice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vlmrl.data.sample import Sample, Video
from vlmrl.eval.memory_estimate import GIB, MemorySpec, estimate_memory
from vlmrl.rewards.box import box_iou, parse_box
from vlmrl.rollout.batch import encode_prompts
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.shared_prompt import rollout_logprobs

#: Image sizes (width, height) tried besides the dataset's own: square, wide, tall, odd, large.
SIZES = ((112, 112), (224, 56), (56, 224), (97, 131), (448, 448))
TOLERANCE = 1e-3
IOU_MIN = 0.9
#: Model families whose grounding answers are absolute pixels of the (resized) input image.
ABSOLUTE_BOX_FAMILIES = ("qwen2_5_vl",)

TrainerLogprobs = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Check:
    """One row of the table: ``ok`` None is skipped (nothing to check)."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.ok]


def _image_token_id(policy) -> int:
    cfg = policy.model.config
    tid = getattr(cfg, "image_token_id", None)
    if tid is None:
        tid = policy.tokenizer.convert_tokens_to_ids(
            getattr(policy.processor, "image_token", "<|image_pad|>")
        )
    return int(tid)


def _merge(policy) -> int:
    return int(getattr(policy.processor.image_processor, "merge_size", 2))


def _user(text: str, n_images: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def _count_mismatch(policy, enc: dict, n_images: int) -> str | None:
    """Why these processor outputs would not run (None: they would)."""
    missing = [k for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw") if k not in enc]
    if missing:
        return f"the processor returned no {', '.join(missing)}"
    grid = enc["image_grid_thw"]
    if grid.shape[0] != n_images:
        return f"{grid.shape[0]} image grids for {n_images} images"
    tokens = int((enc["input_ids"] == _image_token_id(policy)).sum())
    features = int(grid.prod(-1).sum()) // _merge(policy) ** 2
    if tokens != features:
        return f"{tokens} image tokens but {features} features"
    return None


@torch.no_grad()
def _prefill_error(policy, enc: dict) -> str | None:
    model = policy.model
    inputs = {k: v.to(model.device) for k, v in enc.items() if k != "images_per_prompt"}
    try:
        model(**inputs, use_cache=False, logits_to_keep=1)
    except (ValueError, RuntimeError, IndexError, TypeError) as e:
        return f"the model's prefill fails: {str(e).splitlines()[0][:160]}"
    return None


def check_image_tokens(policy, samples: Sequence[Sample] = (), sizes=SIZES) -> Check:
    """Tokens vs features (and a real prefill) for one image of each size and the dataset's sizes."""
    own = sorted({im.size for s in samples for im in s.images})[:8]
    problems, seen = [], []
    for w, h in [*sizes, *own]:
        img = Image.new("RGB", (w, h), (200, 60, 60))
        enc = encode_prompts(policy.processor, [_user("What is shown?", 1)], [[img]])
        why = _count_mismatch(policy, enc, 1) or _prefill_error(policy, enc)
        if why:
            problems.append(f"{w}×{h}: {why}")
        else:
            seen.append(int(enc["image_grid_thw"].prod(-1).sum()) // _merge(policy) ** 2)
    tried = f"{len(sizes) + len(own)} sizes ({len(own)} from the data)"
    video = _video_mismatch(policy)
    if video:
        problems.append(video)
    if problems:
        return Check(
            "image tokens",
            False,
            f"{tried}; " + "; ".join(problems[:3]),
            "use the model's own processor (AutoProcessor.from_pretrained(MODEL)) and pass every output "
            "to the model; never truncate a prompt below its image tokens (raise the max prompt length)",
        )
    return Check(
        "image tokens",
        True,
        f"{tried} and a 4-frame video: tokens = features ({min(seen)}–{max(seen)} per image)",
    )


def _video_mismatch(policy) -> str | None:
    """A 4-frame 112-px video: ``<|video_pad|>`` tokens vs ``prod(video_grid_thw) / merge²``, and a
    prefill (None: fine, or the processor takes no videos)."""
    if getattr(policy.processor, "video_processor", None) is None:
        return None
    frames = [Image.new("RGB", (112, 112), (40 * i, 90, 200)) for i in range(4)]
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]]
    enc = encode_prompts(policy.processor, msgs, [[]], [[Video(frames, fps=2.0)]])
    grid = enc.get("video_grid_thw")
    if grid is None or "pixel_values_videos" not in enc:
        return "video: the processor returned no pixel_values_videos / video_grid_thw"
    pad = policy.tokenizer.convert_tokens_to_ids(getattr(policy.processor, "video_token", "<|video_pad|>"))
    tokens, features = int((enc["input_ids"] == pad).sum()), int(grid.prod(-1).sum()) // _merge(policy) ** 2
    if tokens != features:
        return f"video: {tokens} video tokens but {features} features"
    return _prefill_error(policy, {k: v for k, v in enc.items() if k != "videos_per_prompt"})


@torch.no_grad()
def check_logprob_gap(
    policy,
    samples: Sequence[Sample] = (),
    n: int = 2,
    max_new_tokens: int = 8,
    seed: int = 0,
    trainer_logprobs: TrainerLogprobs = rollout_logprobs,
) -> Check:
    """Sample with the HF engine, re-score with ``trainer_logprobs`` (the trainer's forward), compare.

    Prompts: two text-only ones of different lengths (left padding) and two with images of two
    sizes (the dataset's when it has images). The gap is ``max |log π_sampler − log π_train|``.
    """
    images = [im for s in samples for im in s.images][:2]
    images += [Image.new("RGB", size, (40, 90, 200)) for size in SIZES[1:3]][: 2 - len(images)]
    prompts = [
        _user("Say a word.", 0),
        _user("Describe the colours you would expect here, briefly.", 0),
        _user("What is in the image?", 1),
        _user("Count the shapes in this picture.", 1),
    ]
    enc = encode_prompts(policy.processor, prompts, [[], [], [images[0]], [images[1]]])
    gen = torch.Generator(torch.device(policy.model.device)).manual_seed(seed)
    batch = HFEngine(policy, max_new_tokens=max_new_tokens, temperature=1.0, generator=gen).generate(enc, n)
    rows = list(range(batch.size))
    policy.model.eval()
    train_lp, _ = trainer_logprobs(policy.model, batch, rows, 1.0)
    valid = batch.completion_lengths.unsqueeze(1) > torch.arange(batch.completion_ids.shape[1])  # [N, C]
    gap = (train_lp.float().cpu() - batch.sampler_logprobs.float()).abs() * valid  # [N, C]
    after_image = (enc["images_per_prompt"][batch.prompt_index] > 0).unsqueeze(1)  # [N, 1]
    text_gap = float((gap * ~after_image).max())
    image_gap = float((gap * after_image).max())
    detail = (
        f"max |Δ log π| text {text_gap:.1e}, after images {image_gap:.1e} "
        f"({int(valid.sum())} tokens; ratio within {max(text_gap, image_gap):.0e} of 1)"
    )
    if max(text_gap, image_gap) <= TOLERANCE:
        return Check("log-prob gap", True, detail)
    if text_gap <= TOLERANCE:
        fix = (
            "only tokens after images differ: a processor output (mm_token_type_ids, image_grid_thw) does "
            "not reach one of the two forwards, so their M-RoPE positions differ; carry every output"
        )
    else:
        fix = (
            "text tokens differ too: sampling and training disagree on temperature, top-k (set top_k=0), "
            "dtype (log-probs in float32) or attention kernel; make both use the same"
        )
    return Check("log-prob gap", False, detail, fix)


def check_tool_images(policy) -> Check:
    """Render user(image) → assistant(tool call) → tool(image): both images must reach the tokens."""
    conv = [
        *_user("Find the red square.", 1),
        {
            "role": "assistant",
            "content": [{"type": "text", "text": '<tool_call>{"name": "zoom"}</tool_call>'}],
        },
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "the zoomed region"}]},
    ]
    imgs = [Image.new("RGB", (112, 112), (200, 60, 60)), Image.new("RGB", (56, 56), (60, 200, 60))]
    try:
        text = policy.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # a template may raise on the tool role; that is this check's finding
        return Check(
            "tool images",
            False,
            f"the chat template fails on a tool message: {e}",
            "use a template that accepts role 'tool' (the model's own), or send tool results as user turns",
        )
    token = getattr(policy.processor, "image_token", "<|image_pad|>")
    rendered = text.count(token)
    if rendered != len(imgs):
        return Check(
            "tool images",
            False,
            f"the chat template renders {rendered} of {len(imgs)} images "
            "(it drops the image inside the tool message)",
            "use a chat template that renders image parts in every role (Qwen2.5-VL's own does), or "
            "have the environment return images in user turns, as vlmrl's envs do",
        )
    enc = dict(policy.processor(text=[text], images=imgs, return_tensors="pt"))
    why = _count_mismatch(policy, enc, len(imgs))
    if why:
        return Check("tool images", False, f"tool conversation: {why}", "use the model's own processor")
    return Check("tool images", True, f"{rendered} images rendered, tokens = features")


def _resized(policy, img: Image.Image) -> tuple[int, int]:
    """(width, height) the processor resizes ``img`` to."""
    grid = policy.processor.image_processor(images=[img], return_tensors="pt")["image_grid_thw"][0]
    patch = int(policy.processor.image_processor.patch_size)
    return int(grid[2]) * patch, int(grid[1]) * patch


def check_boxes(policy, samples: Sequence[Sample]) -> Check:
    """Dataset boxes must be pixels inside their image; report the resize and what it costs."""
    rows = [(i, s) for i, s in enumerate(samples) if s.answer_type == "box" and s.images]
    if not rows:
        return Check("boxes", None, "no grounding samples (answer_type box) in the data")
    outside, worst = [], (1.0, "")
    family = getattr(policy.model.config, "model_type", "")
    for i, s in rows:
        box, (w, h) = parse_box(s.answer), s.images[0].size
        if box is None:
            outside.append(f"row {i}: {s.answer!r} is not a box")
            continue
        if max(box) <= 1.0:
            outside.append(f"row {i}: {list(box)} looks normalised (0–1) on a {w}×{h} image")
        elif box[2] > w or box[3] > h or min(box) < 0:
            space = "0–1000" if max(box) <= 1000 else "another image's pixels"
            outside.append(f"row {i}: {list(box)} leaves its {w}×{h} image (looks {space})")
        else:
            rw, rh = _resized(policy, s.images[0])
            # a model answering in the resized image's pixels, read as the original's
            seen = (box[0] * rw / w, box[1] * rh / h, box[2] * rw / w, box[3] * rh / h)
            iou = box_iou(seen, box)
            if iou < worst[0]:
                worst = (iou, f"row {i}: {w}×{h} → {rw}×{rh}, IoU {iou:.2f}")
    if outside:
        return Check(
            "boxes",
            False,
            f"{len(outside)} of {len(rows)} boxes not in pixels: " + "; ".join(outside[:2]),
            "write answers as [x1, y1, x2, y2] in pixels of the original image (x·W for 0–1, "
            "x·W/1000 for 0–1000); the iou reward reads them so and scales the model's answer",
        )
    if worst[0] < IOU_MIN and family in ABSOLUTE_BOX_FAMILIES:
        return Check(
            "boxes",
            False,
            f"{family} answers in pixels of the resized image; {worst[1]} for a perfect answer",
            "set model.min_pixels / max_pixels so the processor keeps the size, or rescale the "
            "ground truth to the resized image, or ask for 0–1000 boxes and use the iou_1000 reward",
        )
    note = f"; answered in the resized image's pixels, {worst[1]}" if worst[1] else ""
    return Check("boxes", True, f"{len(rows)} boxes in pixels inside their images{note}")


def check_memory(policy, spec: MemorySpec, prompt_tokens: int, measured_gpu: bool) -> Check:
    """The per-GPU estimate as a check: fails when it exceeds 90 % of the GPU."""
    est = estimate_memory(policy.model, spec, prompt_tokens)
    where = "this GPU" if measured_gpu else f"an assumed {spec.gpu_gib:g} GiB GPU (--gpu-gib)"
    detail = f"{est.summary()} on {where}"
    if est.fits:
        return Check("memory", True, detail, f"headroom {(0.9 * est.gpu_bytes - est.total) / GIB:.1f} GiB")
    return Check("memory", False, detail, "; ".join(est.advice[:3]))


def prompt_tokens_of(policy, samples: Sequence[Sample]) -> int:
    """Tokens of the longest of a few encoded prompts (the dataset's, else one 448-px image prompt)."""
    if samples:
        lens = [
            encode_prompts(policy.processor, [_user(s.problem, len(s.images))], [s.images])[
                "input_ids"
            ].shape[1]
            for s in samples[:8]
        ]
        return max(lens)
    img = Image.new("RGB", SIZES[-1])
    return int(encode_prompts(policy.processor, [_user("What is shown?", 1)], [[img]])["input_ids"].shape[1])


def run_doctor(
    policy, samples: Sequence[Sample] = (), memory: MemorySpec | None = None, measured_gpu: bool = False
) -> list[Check]:
    """Every check of :data:`vlmrl.eval.checklist.CHECKS`, in order (memory: the default spec if none)."""
    checks = [check_image_tokens(policy, samples)]
    if checks[0].ok:
        checks.append(check_logprob_gap(policy, samples))
    else:
        checks.append(Check("log-prob gap", None, "skipped: image tokens must pass first"))
    checks += [check_tool_images(policy), check_boxes(policy, samples)]
    checks.append(
        check_memory(policy, memory or MemorySpec(), prompt_tokens_of(policy, samples), measured_gpu)
    )
    return checks


def checks_table(checks: Sequence[Check]):
    """A ``rich`` table: check, status, what was measured, the fix."""
    from rich.table import Table

    table = Table(title="vlmrl doctor", show_lines=True)
    for col in ("check", "status", "measured", "fix"):
        table.add_column(col, overflow="fold")
    colour = {"pass": "green", "FAIL": "bold red", "skip": "yellow"}
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail, c.fix)
    return table
