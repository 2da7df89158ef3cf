"""The tiny model: built from a config, saved, reloaded through the one loading path, generates."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlmrl.data import build_messages, generate
from vlmrl.models import load_policy
from vlmrl.models.tokenizer import VISION_SPECIAL_TOKENS
from vlmrl.rollout.batch import encode_prompts


def test_make_tiny_saves_a_from_pretrained_directory(tiny_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (tiny_dir / name).exists() or (
            name == "processor_config.json" and any(tiny_dir.glob("*processor*"))
        )
    policy = load_policy(tiny_dir)
    assert type(policy.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    n_params = sum(p.numel() for p in policy.model.parameters())
    assert 1e6 < n_params < 10e6
    # the learnability-critical choice survives the round trip
    assert policy.model.config.text_config.rope_parameters["rope_theta"] == 10.0


def test_chat_template_and_processor_agree_on_image_tokens(tiny_policy):
    samples = generate("count", 2, seed=0)
    samples[1].images.append(Image.new("RGB", (224, 112), "white"))
    samples[1].problem += " and <image>"
    enc = encode_prompts(
        tiny_policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )
    image_id = tiny_policy.model.config.image_token_id
    merge = tiny_policy.processor.image_processor.merge_size**2
    expected = [int(g.prod()) // merge for g in enc["image_grid_thw"]]
    assert (enc["input_ids"] == image_id).sum().item() == sum(expected)
    assert (enc["input_ids"][0] == image_id).sum().item() == expected[0]
    assert "mm_token_type_ids" in enc


def test_generate_from_an_image_prompt(tiny_policy):
    s = generate("color", 1, seed=0)[0]
    enc = encode_prompts(tiny_policy.processor, [build_messages(s, "answer")], [s.images])
    inputs = {k: v for k, v in enc.items() if k != "images_per_prompt"}
    out = tiny_policy.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tiny_policy.tokenizer.decode(out[0]), str)


def test_vision_tokens_are_special_and_banned(tiny_policy):
    banned = tiny_policy.banned_token_ids
    assert len(banned) == len(VISION_SPECIAL_TOKENS)
    assert tiny_policy.model.config.image_token_id in banned


def test_tokenizer_handles_hostile_text(tiny_policy):
    tok = tiny_policy.tokenizer
    text = "<answer>½ 😀 \x00 ../../etc/passwd</answer>" * 10
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.tokenize("<answer>12</answer>") == ["<answer>", "1", "2", "</answer>"]


def test_load_policy_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match=r"model\.dtype"):
        load_policy(tmp_path, dtype="float8")


def test_dtype_option(tiny_dir):
    policy = load_policy(tiny_dir, dtype="bfloat16")
    assert next(policy.model.parameters()).dtype == torch.bfloat16
