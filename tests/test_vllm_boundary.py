"""The vLLM engine at its boundary with vLLM, on the CPU: a fake ``vllm`` module records what the
engine hands to ``LLM`` / ``SamplingParams`` and which engine methods it calls, so each of the
engine's GPU-path bugs has a test here (placement, cache resets after a sync, request seeds, the
old-log-prob rule at top_p < 1, no ``apply_model`` fallback). The real engine runs in
tests/test_vllm_engine.py where CUDA and vllm exist."""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch

from vlmrl.data import build_messages, generate
from vlmrl.rollout.batch import encode_prompts
from vlmrl.rollout.hf_engine import HFEngine
from vlmrl.rollout.vllm_engine import MULTIPROC_ENV, EngineUnavailable, VLLMEngine
from vlmrl.rollout.vllm_placement import placement_from_env, request_seeds

LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class FakeSamplingParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeLLM:
    """Records calls in order; answers ``generate`` with ``FakeLLM.reply(requests, params)``."""

    reply = None
    last: FakeLLM | None = None

    def __init__(self, **kwargs):
        import os

        self.kwargs = kwargs
        self.multiproc_env_at_init = os.environ.get(MULTIPROC_ENV)
        self.calls: list[tuple] = []
        self.params: list[list] = []
        self.requests: list[list] = []
        model = SimpleNamespace(
            load_weights=lambda weights: self.calls.append(("load_weights", len(weights)))
        )
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=model))
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=runner)),
            reset_encoder_cache=lambda: self.calls.append(("reset_encoder_cache",)),
        )
        FakeLLM.last = self

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags):
        self.calls.append(("wake_up", tuple(tags)))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def apply_model(self, fn):  # vLLM has it; the engine must not use it (fails in multiprocess mode)
        self.calls.append(("apply_model",))

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append(("generate", len(requests)))
        self.requests.append(requests)
        self.params.append(params)
        return FakeLLM.reply(requests, params)


@pytest.fixture()
def fake_vllm(monkeypatch):
    """A ``vllm`` module with ``LLM`` and ``SamplingParams``, a visible 'GPU', one process."""
    mod = ModuleType("vllm")
    mod.LLM, mod.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(MULTIPROC_ENV, "0")  # restored after the test (the engine sets it)
    for k in LAUNCH_ENV:
        monkeypatch.delenv(k, raising=False)
    return mod


def _enc(policy, k=2, seed=3):
    samples = generate("count", k, seed=seed)
    return encode_prompts(
        policy.processor, [build_messages(s, "answer") for s in samples], [s.images for s in samples]
    )


def _replier(policy, encs, completions=None, logprob=-0.5):
    """``reply`` for FakeLLM: prompt ids of ``encs`` (all prompts of the call, in order) and per prompt
    the given completions (default: ``[["3", <|im_end|>]] * n``)."""
    tok = policy.tokenizer
    default = [tok.convert_tokens_to_ids("3"), tok.convert_tokens_to_ids("<|im_end|>")]
    prompts = [
        e["input_ids"][b][e["attention_mask"][b].bool()].tolist() for e in encs for b in range(len(e.texts))
    ]

    def reply(requests, params):
        assert len(requests) == len(prompts) == len(params)
        outs = []
        for b, p in enumerate(params):
            comps = completions[b] if completions is not None else [default] * p.n
            lps = logprob[b] if isinstance(logprob, list) else [[logprob] * len(c) for c in comps]
            outs.append(
                SimpleNamespace(
                    prompt_token_ids=prompts[b],
                    outputs=[
                        SimpleNamespace(
                            token_ids=c,
                            logprobs=[{t: SimpleNamespace(logprob=v)} for t, v in zip(c, lp, strict=True)],
                        )
                        for c, lp in zip(comps, lps, strict=True)
                    ],
                )
            )
        return outs

    return reply


# ---------------------------------------------------------------- placement
def test_one_process_uses_the_in_process_executor(fake_vllm, tiny_policy, tiny_dir):
    VLLMEngine(tiny_policy, str(tiny_dir), dtype="float32", seed=7)
    kw = FakeLLM.last.kwargs
    assert "distributed_executor_backend" not in kw and kw["tensor_parallel_size"] == 1
    assert FakeLLM.last.multiproc_env_at_init == "0"  # set before LLM(): the weights are reachable
    assert kw["dtype"] == "float32" and kw["seed"] == 7 and kw["logprobs_mode"] == "processed_logprobs"


def test_torchrun_puts_one_engine_per_rank_on_its_local_gpu(fake_vllm, tiny_policy, tiny_dir, monkeypatch):
    for k, v in zip(LAUNCH_ENV, ("4", "3", "1"), strict=True):
        monkeypatch.setenv(k, v)
    engine = VLLMEngine(tiny_policy, str(tiny_dir), seed=7)
    kw = FakeLLM.last.kwargs
    # vLLM's external launcher takes RANK / LOCAL_RANK from the environment: cuda:1 here, not cuda:0
    assert kw["distributed_executor_backend"] == "external_launcher" and kw["tensor_parallel_size"] == 1
    assert engine.placement.local_rank == 1 and engine.placement.group == 3 and kw["seed"] == 7 + 3


def test_unsupported_placements_are_refused_in_one_line():
    with pytest.raises(EngineUnavailable, match="needs torchrun") as e:
        placement_from_env(2, {})
    assert "\n" not in str(e.value)
    with pytest.raises(EngineUnavailable, match=r"must divide the number of processes \(3\)"):
        placement_from_env(2, {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"})
    p = placement_from_env(2, {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3"})
    assert p.group == 1 and p.group_ranks == [2, 3]
    assert p.llm_kwargs() == {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 2}


def test_tensor_parallel_group_samples_together(fake_vllm, tiny_policy, tiny_dir, monkeypatch):
    for k, v in zip(LAUNCH_ENV, ("2", "1", "1"), strict=True):
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(VLLMEngine, "_make_tp_group", lambda self: "group")
    other, mine = _enc(tiny_policy, k=3, seed=11), _enc(tiny_policy, k=2, seed=3)
    monkeypatch.setattr(VLLMEngine, "_gather", lambda self, obj: [(other.texts, other.images), obj])
    FakeLLM.reply = _replier(tiny_policy, [other, mine])
    engine = VLLMEngine(tiny_policy, str(tiny_dir), tensor_parallel_size=2, seed=5, recompute_logprobs=False)
    batch = engine.generate(mine, 2)  # the prompt-id check inside fails if the slice were wrong
    assert FakeLLM.last.kwargs["tensor_parallel_size"] == 2
    assert FakeLLM.last.calls.count(("generate", 5)) == 1 and batch.prompt_index.tolist() == [0, 0, 1, 1]
    # both ranks of group 0 compute the same seeds for the same 5 requests
    assert [p.seed for p in FakeLLM.last.params[0]] == request_seeds(5, 1, 0, 5, 2)


def test_tensor_parallel_size_is_checked_at_load(tmp_path):
    from vlmrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"rollout\.vllm_tensor_parallel_size"):
        load_config(None, ["rollout.vllm_tensor_parallel_size=0"])


# ---------------------------------------------------------------- sync
def test_every_weight_push_resets_prefix_and_encoder_caches(fake_vllm, tiny_policy, tiny_dir):
    enc = _enc(tiny_policy)
    FakeLLM.reply = _replier(tiny_policy, [enc])
    engine = VLLMEngine(tiny_policy, str(tiny_dir), recompute_logprobs=False)
    engine.generate(enc, 2)
    engine.mark_stale()  # an optimizer step
    engine.generate(enc, 2)
    calls = [c[0] for c in FakeLLM.last.calls]
    assert calls.count("load_weights") == 2 and "apply_model" not in calls
    one_step = [
        "wake_up",
        "load_weights",
        "reset_prefix_cache",
        "reset_encoder_cache",
        "wake_up",
        "generate",
        "sleep",
    ]
    assert calls == ["sleep", *one_step, *one_step]
    assert FakeLLM.last.calls[1] == ("wake_up", ("weights",)) and FakeLLM.last.calls[5] == (
        "wake_up",
        ("kv_cache",),
    )


def test_encoder_cache_reset_on_llm_or_engine_else_refused(fake_vllm, tiny_policy, tiny_dir):
    engine = VLLMEngine(tiny_policy, str(tiny_dir), sleep=False)
    FakeLLM.last.reset_encoder_cache = lambda: FakeLLM.last.calls.append(("llm.reset_encoder_cache",))
    engine.sync_weights()
    assert FakeLLM.last.calls[-1] == ("llm.reset_encoder_cache",)
    del FakeLLM.last.reset_encoder_cache
    del FakeLLM.last.llm_engine.reset_encoder_cache
    with pytest.raises(EngineUnavailable, match="reset_encoder_cache"):
        engine.sync_weights()


def test_no_apply_model_fallback(fake_vllm, tiny_policy, tiny_dir, monkeypatch):
    engine = VLLMEngine(tiny_policy, str(tiny_dir), sleep=False)
    FakeLLM.last.llm_engine.model_executor = SimpleNamespace()  # multiprocess mode: no driver_worker here
    with pytest.raises(EngineUnavailable, match=MULTIPROC_ENV):
        engine.sync_weights()
    assert ("apply_model",) not in FakeLLM.last.calls
    monkeypatch.setenv(MULTIPROC_ENV, "1")
    with pytest.raises(EngineUnavailable, match=f"{MULTIPROC_ENV}=1 is set"):
        VLLMEngine(tiny_policy, str(tiny_dir))


# ---------------------------------------------------------------- seeds
def _children(params) -> list[int]:
    """The seeds vLLM gives the samples: child j of a request seeded s gets s + j."""
    return [p.seed + j for p in params for j in range(p.n)]


def test_each_sample_has_its_own_seed_reproducible_from_the_run_seed(fake_vllm, tiny_policy, tiny_dir):
    enc = _enc(tiny_policy)
    FakeLLM.reply = _replier(tiny_policy, [enc])
    engine = VLLMEngine(tiny_policy, str(tiny_dir), seed=3, recompute_logprobs=False)
    engine.generate(enc, 4)
    engine.generate(enc, 4)
    first, second = (_children(p) for p in FakeLLM.last.params)
    assert len(set(first)) == 8 and not set(first) & set(second)
    assert all(0 <= s < 2**63 for s in first + second)
    again = VLLMEngine(tiny_policy, str(tiny_dir), seed=3, recompute_logprobs=False)
    again.generate(enc, 4)
    assert _children(FakeLLM.last.params[0]) == first
    other = VLLMEngine(tiny_policy, str(tiny_dir), seed=4, recompute_logprobs=False)
    other.generate(enc, 4)
    assert not set(_children(FakeLLM.last.params[0])) & set(first)
    other.generate(enc, 1, greedy=True)
    assert all(p.seed is None and p.temperature == 0.0 for p in FakeLLM.last.params[-1])


# ---------------------------------------------------------------- old log-probs
def test_old_logprobs_equal_between_engines_at_top_p_below_one(fake_vllm, tiny_policy, tiny_dir):
    """The documented rule: old log-probs are the policy's full softmax at T (no nucleus mask).

    The HF engine samples at top_p 0.7; vLLM is made to return the same tokens with its processed
    log-probs, i.e. renormalised over the nucleus: log p − log(mass) with mass < 1, so higher by
    a constant here. After the engine applies the rule they equal the HF engine's; vLLM's own
    survive only as the gap metric."""
    enc = _enc(tiny_policy)
    hf = HFEngine(tiny_policy, max_new_tokens=4, temperature=0.9, top_p=0.7)
    torch.manual_seed(0)
    ref = hf.generate(enc, 3)
    bias = 0.35  # −log(nucleus mass)
    comps, lps = [], []
    for b in range(2):
        rows = (ref.prompt_index == b).nonzero().flatten().tolist()
        comps.append([ref.completion_ids[r, : ref.completion_lengths[r]].tolist() for r in rows])
        lps.append([(ref.sampler_logprobs[r, : ref.completion_lengths[r]] + bias).tolist() for r in rows])
    FakeLLM.reply = _replier(tiny_policy, [enc], comps, lps)
    mask = ref.completion_mask.bool()
    for recompute in (False, True):
        engine = VLLMEngine(
            tiny_policy,
            str(tiny_dir),
            max_new_tokens=4,
            temperature=0.9,
            top_p=0.7,
            recompute_logprobs=recompute,
        )
        got = engine.generate(enc, 3)
        assert torch.equal(got.completion_ids, ref.completion_ids)
        gap = (got.sampler_logprobs - ref.sampler_logprobs)[mask].abs().max().item()
        if recompute:
            assert gap < 1e-3  # sampler vs training forward: the measured parity (docs/facts.md)
            metrics = engine.pop_metrics()
            assert abs(metrics["rollout/vllm_logprob_gap"] - bias) < 1e-3 and engine.pop_metrics() == {}
        else:  # vLLM's processed log-probs, the biased ones: what the update used to get
            assert abs(gap - bias) < 1e-5 and engine.pop_metrics() == {}
    assert FakeLLM.last.params[0][0].top_p == 0.7 and FakeLLM.last.params[0][0].top_k == -1


def test_build_engine_recomputes_exactly_when_old_logprobs_are_read(fake_vllm, tiny_dir):
    from vlmrl.config import load_config
    from vlmrl.models import load_policy
    from vlmrl.rollout.vllm_engine import build_engine

    policy = load_policy(tiny_dir)
    base = [f"model.path={tiny_dir}", "rollout.engine=vllm", "rollout.top_p=0.99"]
    on_policy = build_engine(policy, load_config(None, base))
    assert not on_policy.recompute_logprobs  # the update takes logp.detach(): nothing reads them
    for extra in (["train.minibatches=4"], ["train.epochs=2"], ["algo.kl_coef=0.01"]):
        assert build_engine(policy, load_config(None, base + extra)).recompute_logprobs, extra
