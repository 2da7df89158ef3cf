"""``vlmrl doctor``: the healthy tiny models pass every check; each deliberately broken setup fails
its own check, with the fix printed."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from PIL import Image

from vlmrl.data.sample import Sample
from vlmrl.data.tasks import generate, get_task
from vlmrl.eval.checklist import CHECKS
from vlmrl.eval.doctor import (
    check_boxes,
    check_image_tokens,
    check_logprob_gap,
    check_memory,
    check_tool_images,
    run_doctor,
)
from vlmrl.eval.memory_estimate import GIB, MemorySpec, estimate_memory
from vlmrl.models import load_policy
from vlmrl.models.tokenizer import CHAT_TEMPLATE
from vlmrl.rollout.batch import completion_logprobs, training_inputs


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    from vlmrl.models import TinyConfig
    from vlmrl.models.tiny_qwen3 import make_tiny_qwen3

    return make_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "model", TinyConfig(seed=0))


@pytest.fixture(scope="module")
def policy(tiny_dir):
    return load_policy(tiny_dir)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_healthy_tiny_models_pass_every_check(request, arch):
    pol = load_policy(request.getfixturevalue("tiny_dir" if arch == "qwen2_5_vl" else "qwen3_dir"))
    checks = run_doctor(pol, generate(get_task("ground"), 4, seed=0))
    assert [c.name for c in checks] == list(CHECKS)
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks if not c.ok]
    gap = checks[1].detail
    assert "text" in gap and "after images" in gap  # the gap is reported split


class _DropOutput:
    """A processor that loses one of its outputs (a custom processor that forgot a key)."""

    def __init__(self, processor, key: str) -> None:
        self._processor, self._key = processor, key

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        enc = self._processor(*args, **kwargs)
        enc.pop(self._key, None)
        return enc


def test_missing_processor_output_fails_image_tokens(policy):
    broken = dataclasses.replace(policy, processor=_DropOutput(policy.processor, "image_grid_thw"))
    check = check_image_tokens(broken)
    assert check.ok is False
    assert "the processor returned no image_grid_thw" in check.detail
    assert "AutoProcessor.from_pretrained" in check.fix
    # and the whole doctor skips the gap check rather than crash on it
    checks = run_doctor(broken)
    assert checks[0].ok is False and checks[1].ok is None


def test_template_that_drops_tool_images_fails(policy):
    proc = copy.deepcopy(policy.processor)
    proc.chat_template = CHAT_TEMPLATE.replace(
        "{% if part['type'] == 'image' or 'image' in part %}",
        "{% if (part['type'] == 'image' or 'image' in part) and message['role'] != 'tool' %}",
    )
    broken = dataclasses.replace(policy, processor=proc)
    check = check_tool_images(broken)
    assert check.ok is False
    assert "renders 1 of 2 images" in check.detail
    assert "every role" in check.fix
    assert check_tool_images(policy).ok is True  # the same processor with its own template passes


def _box_sample(answer: str, size: tuple[int, int] = (112, 112)) -> Sample:
    return Sample("b", [Image.new("RGB", size)], "Box the square.", answer, task="ground", answer_type="box")


def test_boxes_in_the_wrong_space_fail(policy):
    # 0–1000 boxes on a 112-px image leave the image; normalised ones are flagged as such
    check = check_boxes(policy, [_box_sample("[100, 200, 600, 900]"), _box_sample("[10, 10, 50, 50]")])
    assert check.ok is False
    assert "1 of 2 boxes not in pixels" in check.detail and "looks 0–1000" in check.detail
    assert "x·W/1000" in check.fix
    check = check_boxes(policy, [_box_sample("[0.1, 0.1, 0.5, 0.5]")])
    assert check.ok is False and "normalised" in check.detail
    assert check_boxes(policy, [_box_sample("[10, 10, 50, 50]")]).ok is True
    assert check_boxes(policy, generate(get_task("count"), 2, seed=0)).ok is None  # no grounding data


def test_boxes_that_the_resize_moves_fail_for_absolute_coordinates(policy):
    # The tiny processor resizes every image to ~112² px: a 448×448 image shrinks 4×, so a
    # Qwen2.5-VL answering in the pixels it sees gives [0, 0, 30, 30] for [0, 0, 120, 120]:
    # IoU = 30² / 120² = 0.0625 < 0.9.
    check = check_boxes(policy, [_box_sample("[0, 0, 120, 120]", (448, 448))])
    assert check.ok is False
    assert "448×448 → 112×112, IoU 0.06" in check.detail
    assert "max_pixels" in check.fix


def test_logprob_gap_fails_when_the_trainer_drops_a_processor_output(policy):
    # The training forward without mm_token_type_ids (docs/facts.md): the M-RoPE positions after an
    # image differ from the sampler's, text-only prompts are unaffected.
    def drop_token_types(model, batch, rows, temperature):
        kept = {k: v for k, v in batch.prompt_inputs.items() if k != "mm_token_type_ids"}
        inputs, _ = training_inputs(dataclasses.replace(batch, prompt_inputs=kept), rows)
        return completion_logprobs(model, inputs, batch.completion_ids[rows], temperature)

    assert "mm_token_type_ids" in policy.processor(text=["a"], return_tensors="pt")
    check = check_logprob_gap(policy, trainer_logprobs=drop_token_types)
    assert check.ok is False
    text_gap = float(check.detail.split("text ")[1].split(",")[0])
    image_gap = float(check.detail.split("after images ")[1].split(" ")[0])
    assert text_gap <= 1e-3 < image_gap
    assert "only tokens after images differ" in check.fix


def test_memory_estimate_by_hand(policy):
    # 1 GiB GPU and a spec that cannot fit: the advice is printed; on 80 GiB it fits.
    spec = MemorySpec(micro_batch=4096, max_new_tokens=512, gpu_gib=1.0)
    est = estimate_memory(policy.model, spec, prompt_tokens=100)
    params = sum(p.numel() for p in policy.model.parameters())
    assert est.parts["weights"] == pytest.approx(params * 4)  # float32
    assert est.parts["optimizer"] == pytest.approx(2 * est.parts["gradients"])  # two AdamW moments
    assert est.parts["reference"] == 0.0  # kl_coef 0
    check = check_memory(policy, spec, 100, measured_gpu=False)
    assert check.ok is False and "gradient_checkpointing=true" in check.fix
    ckpt = estimate_memory(policy.model, dataclasses.replace(spec, gradient_checkpointing=True), 100)
    assert ckpt.parts["activations"] < est.parts["activations"]
    lora = estimate_memory(policy.model, dataclasses.replace(spec, lora_r=4, kl_coef=0.1), 100)
    assert lora.parts["gradients"] < est.parts["gradients"] and lora.parts["reference"] == 0.0
    full_kl = estimate_memory(policy.model, dataclasses.replace(spec, kl_coef=0.1), 100)
    assert full_kl.parts["reference"] == est.parts["weights"]
    vllm = estimate_memory(policy.model, dataclasses.replace(spec, engine="vllm", vllm_share=0.5), 100)
    assert vllm.parts["vllm"] == 0.5 * GIB and vllm.parts["kv_cache"] == 0.0
    assert check_memory(policy, MemorySpec(), 100, measured_gpu=False).ok is True


def test_cli_doctor(tiny_dir, tmp_path, capsys):
    from vlmrl.cli.main import main
    from vlmrl.data import export_parquet

    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    help_text = capsys.readouterr().out
    assert all(f"{name}:" in help_text for name in CHECKS)

    # a grounding dataset whose boxes were written on the 0–1000 grid: exit 1, the fix printed
    samples = generate(get_task("ground"), 3, seed=0)
    for s in samples:
        x1, y1, x2, y2 = (int(v) for v in s.answer.strip("[]").split(","))
        s.answer = f"[{x1 * 1000 // 112}, {y1 * 1000 // 112}, {x2 * 1000 // 112}, {y2 * 1000 // 112}]"
    export_parquet(samples, tmp_path / "ground.parquet")
    assert main(["doctor", str(tiny_dir), "--data", str(tmp_path / "ground.parquet")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "x·W/1000" in out
    assert main(["doctor", str(tiny_dir), "--data", "ground", "--gpu-gib", "24"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("pass") == len(CHECKS)
