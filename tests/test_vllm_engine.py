"""The vLLM engine: everything that does not need a GPU is tested here on the CPU (output
conversion, prompt-token checks, LoRA-merged weight export, clear errors); the real engine is
tested against the training forward only where CUDA and vllm exist."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from vlmrl.data import build_messages, generate
from vlmrl.models.lora import merged_state_dict
from vlmrl.rollout.batch import completion_logprobs, encode_prompts, training_inputs
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.vllm_engine import EngineUnavailable, to_rollout_batch

HAS_VLLM_GPU = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def _enc(policy, k=2):
    samples = generate("count", k, seed=3)
    return samples, encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )


def _fake_outputs(enc, completions, logprob=-0.5):
    """What vllm.LLM.generate returns, reduced to the fields the engine reads."""
    outs = []
    for b, comps in enumerate(completions):
        prompt = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
        outs.append(
            SimpleNamespace(
                prompt_token_ids=prompt,
                outputs=[
                    SimpleNamespace(
                        token_ids=c,
                        logprobs=[{t: SimpleNamespace(logprob=logprob)} for t in c],
                        finish_reason="stop",
                    )
                    for c in comps
                ],
            )
        )
    return outs


def test_prompt_inputs_carry_texts_and_images(tiny_policy):
    samples, enc = _enc(tiny_policy)
    assert len(enc.texts) == 2 and "<|vision_start|>" in enc.texts[0]
    assert enc.images[1][0] is samples[1].images[0]


def test_vllm_outputs_become_the_same_batch_as_hf(tiny_policy):
    _, enc = _enc(tiny_policy)
    tok = tiny_policy.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    three = tok.convert_tokens_to_ids("3")
    comps = [[[three, end], [three, three, three]], [[end], [three, end]]]
    engine = HFEngine(tiny_policy, max_new_tokens=3)
    batch = to_rollout_batch(engine, enc, _fake_outputs(enc, comps), n=2)
    assert batch.prompt_index.tolist() == [0, 0, 1, 1]
    assert batch.completion_lengths.tolist() == [2, 3, 1, 2]  # stop token counted
    assert batch.finish_reasons == ["stop", "length", "stop", "stop"]
    assert batch.completion_mask.sum().item() == 8
    # log-probs only on produced tokens; padding is zero
    assert batch.sampler_logprobs[2, 1:].abs().sum().item() == 0
    assert batch.sampler_logprobs[0, :2].tolist() == [-0.5, -0.5]
    # and the training forward accepts it
    inputs, c = training_inputs(batch, [0, 1, 2, 3])
    assert c == 3 and inputs["input_ids"].shape[0] == 4


def test_banned_vision_token_from_vllm_is_masked(tiny_policy):
    _, enc = _enc(tiny_policy, k=1)
    pad = tiny_policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch = to_rollout_batch(HFEngine(tiny_policy), enc, _fake_outputs(enc, [[[pad, pad]]]), n=1)
    assert batch.finish_reasons == ["invalid_vision_token"]
    assert batch.completion_mask.sum().item() == 0


def test_prompt_token_mismatch_is_a_clear_error(tiny_policy):
    _, enc = _enc(tiny_policy, k=1)
    outs = _fake_outputs(enc, [[[1]]])
    outs[0].prompt_token_ids = [*outs[0].prompt_token_ids[:-1], 0]
    with pytest.raises(RuntimeError, match="tokenized the prompt differently"):
        to_rollout_batch(HFEngine(tiny_policy), enc, outs, n=1)
    with pytest.raises(RuntimeError, match="expected 2"):
        to_rollout_batch(HFEngine(tiny_policy), enc, _fake_outputs(enc, [[[1]]]), n=2)


def test_merged_export_equals_the_lora_model(tiny_dir, tiny_policy):
    """What vLLM receives (LoRA folded in) computes what the training model computes."""
    from vlmrl.models import load_policy
    from vlmrl.models.lora import add_vision_lora

    model = tiny_policy.model.eval()
    add_vision_lora(model)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)  # peft starts B at 0: make the adapters matter
    named = merged_state_dict(model)
    assert not any("lora_" in k or "base_layer" in k for k in named)
    fresh = load_policy(tiny_dir).model.eval()
    assert set(named) == set(fresh.state_dict())
    fresh.load_state_dict(named)
    _, enc = _enc(tiny_policy, k=1)
    inputs = {k: v for k, v in enc.items() if k != "images_per_prompt"}
    with torch.no_grad():
        a, b = model(**inputs).logits, fresh(**inputs).logits
        base = load_policy(tiny_dir).model.eval()(**inputs).logits
    assert (a - b).abs().max().item() < 1e-4
    assert (a - base).abs().max().item() > 1e-3  # the adapters did change the output


def test_vllm_engine_without_cuda_says_what_to_do(tiny_dir, tmp_path):
    if HAS_VLLM_GPU:
        pytest.skip("this machine can run vLLM; the error path is for machines that cannot")
    from vlmrl.cli.main import main

    (tmp_path / "c.yaml").write_text(
        f"model: {{path: {tiny_dir}}}\nrollout: {{engine: vllm}}\nlog: {{run_dir: {tmp_path / 'run'}}}\n"
    )
    from vlmrl.config import load_config
    from vlmrl.rollout.vllm_engine import build_engine

    with pytest.raises(EngineUnavailable, match=r"rollout.engine=vllm .*rollout.engine=hf"):
        build_engine(None, load_config(tmp_path / "c.yaml"))
    assert main(["train", str(tmp_path / "c.yaml"), "train.steps=1"]) == 2


def test_engine_choice_is_validated(tmp_path):
    from vlmrl.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text("rollout: {engine: sglang}\n")
    with pytest.raises(ConfigError, match=r"rollout.engine.*hf.*vllm"):
        load_config(tmp_path / "c.yaml")


def _vllm_vs_forward(policy, engine, enc, n):
    """Max |vLLM's own log-probs (``recompute_logprobs=False``) − the training forward's|."""
    batch = engine.generate(enc, n)
    inputs, _ = training_inputs(batch, list(range(batch.size)))
    inputs = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad():
        logp, _ = completion_logprobs(policy.model.eval(), inputs, batch.completion_ids.cuda(), 1.0)
    gap = ((logp.float().cpu() - batch.sampler_logprobs).abs() * batch.completion_mask).max().item()
    return gap


@pytest.mark.skipif(not HAS_VLLM_GPU, reason="needs CUDA and the [vllm] extra")
@pytest.mark.parametrize(("dtype", "tol"), [("float32", 5e-2), ("bfloat16", 1.5e-1)])
def test_vllm_logprobs_match_the_training_forward(tiny_dir, dtype, tol):  # pragma: no cover - GPU only
    """Like with like: the engine runs in the policy's dtype. vLLM's processed log-probs also drop
    the banned vision tokens' mass (log p − log(1 − p_banned)), hence a tolerance, not ~1e-5."""
    from vlmrl.models import load_policy
    from vlmrl.rollout.vllm_engine import VLLMEngine

    policy = load_policy(tiny_dir, device="cuda", dtype=dtype)
    engine = VLLMEngine(
        policy, str(tiny_dir), max_new_tokens=8, temperature=1.0, gpu_memory_utilization=0.2, dtype=dtype,
        recompute_logprobs=False,
    )  # fmt: skip
    _, enc = _enc(policy, k=3)
    gap = _vllm_vs_forward(policy, engine, enc, 4)
    assert gap < tol
    # the encoder cache is reset with the weights: the same images after a vision-tower change give
    # the new tower's embeddings (a stale cache would keep the old ones and the gap would open)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "visual" in name and name.endswith("weight") and p.dim() == 2:
                p.mul_(-1.0)
    engine.mark_stale()
    gap_after = _vllm_vs_forward(policy, engine, enc, 4)
    assert gap_after < tol
    # a weight change reaches vLLM: with lm_head zeroed the distribution is uniform, so every token
    # has log-prob −log V (−log(V − banned) if the banned tokens are removed before the log-softmax)
    with torch.no_grad():
        policy.model.lm_head.weight.mul_(0.0)
    engine.mark_stale()
    after = engine.generate(enc, 2)
    vocab = policy.model.lm_head.weight.shape[0]
    got = after.sampler_logprobs[after.completion_mask.bool()]
    lo = -torch.log(torch.tensor(float(vocab))) - 1e-2
    hi = -torch.log(torch.tensor(float(vocab - len(policy.banned_token_ids)))) + 1e-2
    assert got.std().item() < 1e-3 and lo <= got.min() and got.max() <= hi
