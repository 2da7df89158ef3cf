"""A diffusers SD3 pipeline as the gen policy (``vlmrl.gen.hub``), on a tiny pipeline built here.

The pipeline is a real ``StableDiffusion3Pipeline`` (SD3 transformer, VAE, two CLIP text encoders
with a character-level tokenizer written locally; no T5, as SD3 allows), saved with
``save_pretrained`` and loaded back the way a hub id is: nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch

from vlmrl.config.load import ConfigError
from vlmrl.gen.config import load_gen_config
from vlmrl.gen.hub import WEIGHTS_FILE, PipelinePolicy, PipelineSpec, load_pipeline
from vlmrl.gen.load import load_gen_policy
from vlmrl.gen.model import sample_ode
from vlmrl.gen.prompts import ALL_PROMPTS, prompt_ids
from vlmrl.gen.trainer import GenGRPOTrainer


def _tiny_sd3(out):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=32)
    eos = vocab["<|endoftext|>"]
    text_cfg = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, projection_dim=16,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos,
    )  # fmt: skip
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
            pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 8, 8), latent_channels=4, norm_num_groups=4, layers_per_block=1,
            sample_size=32, scaling_factor=1.0, shift_factor=0.0,
        ),
        text_encoder=CLIPTextModelWithProjection(text_cfg), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(text_cfg), tokenizer_2=tok,
        text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.save_pretrained(out / "pipe")
    return out / "pipe"


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return _tiny_sd3(tmp_path_factory.mktemp("sd3"))


def test_pipeline_policy_velocity_decode_and_prompt_table(pipe_dir):
    pol = load_gen_policy(pipe_dir, size=32)
    assert isinstance(pol, PipelinePolicy)
    assert pol.latent_shape == (4, 8, 8)  # 32 px through a VAE of scale factor 4
    for i, p in enumerate(ALL_PROMPTS):
        assert int(pol.prompt_table[p.ids]) == i
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = pol.velocity(x, torch.full((2,), 0.5), prompt_ids([ALL_PROMPTS[0]] * 2))
        other = pol.velocity(x, torch.full((2,), 0.5), prompt_ids([ALL_PROMPTS[0], ALL_PROMPTS[7]]))
    assert same.shape == (2, 4, 8, 8)
    assert torch.allclose(same[0], other[0]) and not torch.allclose(same[1], other[1])
    imgs = sample_ode(pol, prompt_ids(ALL_PROMPTS[:3]), steps=2)
    assert imgs.shape == (3, 3, 32, 32) and imgs.abs().max() <= 1.0


def test_guidance_is_the_cfg_mix_of_prompt_and_empty_prompt(pipe_dir):
    guided = load_gen_policy(pipe_dir, size=32, guidance_scale=3.0)
    plain = load_gen_policy(pipe_dir, size=32)
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.8]), prompt_ids(ALL_PROMPTS[4:6])
    with torch.no_grad():
        v = guided.velocity(x, t, cond)
        v_pos = plain.velocity(x, t, cond)
        v_neg = guided.transformer(
            hidden_states=x,
            encoder_hidden_states=guided.neg_embeds.expand(2, -1, -1),
            pooled_projections=guided.neg_pooled.expand(2, -1),
            timestep=t * 1000,
            return_dict=False,
        )[0]
    torch.testing.assert_close(v, v_neg + 3.0 * (v_pos - v_neg), atol=1e-5, rtol=1e-5)


def _cfg(pipe_dir, run, steps, **extra):
    over = {
        "model.path": pipe_dir, "model.size": 32, "model.lora_r": 4, "model.device": "cpu",
        "log.run_dir": run, "log.progress": False, "train.steps": steps, "train.prompts_per_step": 2,
        "algo.group_size": 2, "sample.steps": 3, "sample.eval_steps": 2, "eval.samples_per_prompt": 2,
        "eval.every": 0, "train.save_every": 1, "train.warmup_steps": 0, "train.lr": 1e-2,
    } | extra  # fmt: skip
    return load_gen_config(overrides=[f"{k}={v}" for k, v in over.items()])


def test_lora_flow_grpo_on_a_pipeline_trains_saves_and_resumes_exactly(pipe_dir, tmp_path):
    base = {k: v.clone() for k, v in load_pipeline(str(pipe_dir)).transformer.state_dict().items()}
    straight = GenGRPOTrainer(_cfg(pipe_dir, tmp_path / "a", 2))
    rows = straight.train()
    assert rows[1]["actor/ratio_max_first_pass"] == pytest.approx(1.0, abs=1e-6)
    assert rows[1]["actor/kl_ref"] == pytest.approx(0.0, abs=1e-9)
    # the logged held-out reward is the evaluation of the final weights (its noise is fixed per run)
    assert rows[2]["eval/reward"] == pytest.approx(straight.evaluate(save_grid_png=False)["eval/reward"])
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "a" / "checkpoints" / "step_2" / "model" / WEIGHTS_FILE))
    assert saved and all("lora_" in k for k in saved)  # only the adapters are trained and saved
    trained = straight.policy.transformer.state_dict()
    moved = [k for k in saved if not torch.equal(trained[k], torch.zeros_like(trained[k]))]
    assert moved
    frozen = {k.replace(".base_layer", ""): v for k, v in trained.items() if "lora_" not in k}
    assert frozen.keys() == base.keys()
    assert all(torch.equal(frozen[k], base[k]) for k in base)  # the transformer itself never moves

    from vlmrl.cli.main import main

    saved_dir = tmp_path / "a" / "checkpoints" / "step_2" / "model"  # gen_pipeline.json: source + knobs
    assert main(["gen", "sample", str(saved_dir), "--out", str(tmp_path / "g.png"), "--steps", "1"]) == 0
    assert (tmp_path / "g.png").is_file()
    reloaded = load_gen_policy(saved_dir)
    for k, v in straight.policy.trainable_state().items():
        assert torch.equal(reloaded.trainable_state()[k], v)

    GenGRPOTrainer(_cfg(pipe_dir, tmp_path / "b", 1)).train()
    resumed = GenGRPOTrainer(_cfg(pipe_dir, tmp_path / "b", 2), resume=True)
    assert resumed.step == 1
    resumed.train()
    for k, v in straight.policy.trainable_state().items():
        torch.testing.assert_close(resumed.policy.trainable_state()[k], v, atol=0, rtol=0)


def test_bf16_pipeline_keeps_lora_adapters_in_fp32(pipe_dir):
    pol = load_gen_policy(pipe_dir, size=32, dtype="bfloat16", lora_r=2)
    trainable = [p for p in pol.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert pol.prompt_embeds.dtype == torch.bfloat16
    v = pol.velocity(torch.randn(2, 4, 8, 8), torch.tensor([0.9, 0.4]), prompt_ids(ALL_PROMPTS[:2]))
    assert v.dtype == torch.float32 and bool(torch.isfinite(v).all())
    v.square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)


def test_pipeline_errors_name_the_setting(pipe_dir, small_model, tmp_path):
    from diffusers import DDPMScheduler

    pipe = load_pipeline(str(pipe_dir))
    pipe.scheduler = DDPMScheduler()
    with pytest.raises(ValueError, match="not flow matching"):
        PipelinePolicy(pipe, PipelineSpec(source=str(pipe_dir), size=32))
    with pytest.raises(ValueError, match="multiple of the VAE"):
        load_gen_policy(pipe_dir, size=30)
    with pytest.raises(ConfigError, match=r"model\.lora_r"):
        GenGRPOTrainer(load_gen_config(overrides=[f"model.path={small_model}", "model.lora_r=4",
                                                  f"log.run_dir={tmp_path / 'r'}"]))  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.device"):
        GenGRPOTrainer(load_gen_config(overrides=[f"model.path={small_model}", "model.device=tpu9",
                                                  f"log.run_dir={tmp_path / 'r'}"]))  # fmt: skip
