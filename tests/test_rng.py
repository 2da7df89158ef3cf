"""No hidden RNG: sampling draws from the trainer's own generator, never from torch's global one.

- the HF engine's two paths (the shared-prefill sampler and ``model.generate``) advance the
  engine's generator and leave the global RNG state exactly as it was, so a test (or anything
  else in the process) drawing from the global RNG cannot change what the trainer samples;
- a whole GRPO step (sampling, PAPO masks, minibatch permutations) does not touch the global RNG;
- the seed decides the samples: two trainers with different ``train.seed`` sample differently,
  with the same seed identically, whatever the global RNG did in between;
- the generator's state is in every checkpoint, and a trainer resumed from it samples exactly
  what the uninterrupted one samples next (the SIGKILL test in test_train.py checks whole runs).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import QUICK_RUN
from vlmrl.config import load_config
from vlmrl.data import build_messages, generate
from vlmrl.rollout.batch import encode_prompts
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.sampler import fast_sampling_supported
from vlmrl.train.grpo import GRPOTrainer


def _enc(policy, k: int = 2):
    samples = generate("count", k, seed=0)
    return encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )


@pytest.mark.parametrize("shared_prefill", [True, False], ids=["sampler", "generate"])
def test_sampling_draws_from_the_engine_generator_not_the_global_rng(tiny_policy, shared_prefill):
    enc = _enc(tiny_policy)
    assert fast_sampling_supported(tiny_policy.model, enc)  # so False really takes model.generate
    gen = torch.Generator().manual_seed(5)
    engine = HFEngine(tiny_policy, max_new_tokens=6, shared_prefill=shared_prefill, generator=gen)
    torch.manual_seed(123)
    global_before, gen_before = torch.get_rng_state(), gen.get_state()
    first = engine.generate(enc, 4)
    assert torch.equal(torch.get_rng_state(), global_before)  # the global RNG was neither read nor moved
    assert not torch.equal(gen.get_state(), gen_before)  # the draws came from here
    torch.manual_seed(999)  # whatever the global RNG does meanwhile ...
    gen.set_state(gen_before)
    again = engine.generate(enc, 4)
    assert torch.equal(first.completion_ids, again.completion_ids)  # ... the generator decides
    assert first.completion_ids.unique().numel() > 4  # sampled text, not one repeated token


def test_generator_must_live_on_the_model_device(tiny_policy):
    if not torch.cuda.is_available():
        pytest.skip("needs a second device type to mismatch")
    with pytest.raises(ValueError, match="model's device"):
        HFEngine(tiny_policy, generator=torch.Generator("cuda"))


def _cfg(tiny_dir, run_dir, plugin, *extra):
    return load_config(
        overrides=[
            f"model.path={tiny_dir}", f"log.run_dir={run_dir}", f"reward.modules=[{plugin}]",
            "reward.weights={test_letters: 1.0}", *QUICK_RUN, "data.eval_size=2", "eval.drift=false", *extra,
        ]
    )  # fmt: skip


def test_a_grpo_step_leaves_the_global_rng_alone(tiny_dir, tmp_path, plugin):
    """Sampling, PAPO's masks and the minibatch permutation all draw from explicit generators."""
    cfg = _cfg(tiny_dir, tmp_path, plugin, "train.steps=1", "algo.papo_coef=0.5", "train.minibatches=2")
    trainer = GRPOTrainer(cfg)
    before, gen_before = torch.get_rng_state(), trainer.sample_rng.get_state()
    metrics = trainer.train_step()
    assert metrics["actor/optimizer_steps"] == 2 and "actor/papo_kl" in metrics  # both really ran
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(trainer.sample_rng.get_state(), gen_before)


def _first_round(cfg) -> torch.Tensor:
    trainer = GRPOTrainer(cfg)
    torch.manual_seed(0)  # the same global state for every trainer: only train.seed differs
    return trainer._rollout_round(2).batch.completion_ids


def test_the_seed_decides_what_is_sampled(tiny_dir, tmp_path, plugin):
    a = _first_round(_cfg(tiny_dir, tmp_path / "a", plugin, "train.seed=1"))
    b = _first_round(_cfg(tiny_dir, tmp_path / "b", plugin, "train.seed=2"))
    torch.manual_seed(77)  # a different global state: no effect on what seed 1 samples
    a_again = _first_round(_cfg(tiny_dir, tmp_path / "c", plugin, "train.seed=1"))
    assert not torch.equal(a, b)
    assert torch.equal(a, a_again)


def test_checkpoint_holds_the_generator_and_resume_samples_what_comes_next(tiny_dir, tmp_path, plugin):
    cfg = _cfg(tiny_dir, tmp_path, plugin, "train.steps=1", "train.save_every=1")
    trainer = GRPOTrainer(cfg)
    trainer.train()
    saved = load_file(tmp_path / "checkpoints" / "step_1" / "rng.safetensors")
    assert torch.equal(saved["rank0.sampler_cpu"], trainer.sample_rng.get_state())
    cfg.train.steps = 2
    resumed = GRPOTrainer(cfg, resume=True)
    assert torch.equal(resumed.sample_rng.get_state(), trainer.sample_rng.get_state())
    torch.manual_seed(31)  # the global RNG differs between the two: it must not matter
    nxt = trainer._rollout_round(2).batch
    torch.manual_seed(32)
    got = resumed._rollout_round(2).batch
    assert torch.equal(got.completion_ids, nxt.completion_ids)
    assert torch.equal(got.sampler_logprobs, nxt.sampler_logprobs)
