"""The default rollout engine: HF ``generate``, batched and left-padded, CPU-friendly.

Vision special tokens are banned at sampling time (``bad_words_ids``) *and* checked afterwards:
a completion that still contains one is loss-masked and counted, never fed to the training
forward as-is (docs/facts.md: it crashes with "Image features and image tokens do not match").

Randomness: every draw comes from the engine's ``generator`` (the trainer's, saved in its
checkpoints), never from torch's global RNG. The fast path passes it to ``torch.multinomial``.
``model.generate`` takes no generator (transformers draws with the global one), so around that
call the global generator of the model's device is forked, loaded with ``generator``'s state,
and after the call its advanced state is copied back into ``generator`` and the global one
restored (:func:`draws_from`). The draws are then exactly the generator's, the fast path and
``generate`` draw the same tokens from the same state (tested), and no logits processor has to
re-implement transformers' sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from transformers import GenerationConfig

from vlmrl.algos import token_logprobs
from vlmrl.rollout.batch import RolloutBatch
from vlmrl.rollout.media import COUNT_KEYS
from vlmrl.rollout.sampler import fast_sampling_supported, lockstep, sample


@contextmanager
def draws_from(generator: torch.Generator) -> Iterator[None]:
    """Inside the block, the global RNG of ``generator``'s device draws ``generator``'s stream;
    afterwards ``generator`` holds the advanced state and the global RNG is as it was before."""
    dev = generator.device
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"sampling generator on {dev}: only a cpu or cuda one can stand in for generate's")
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):  # restores CPU (+ that GPU) on exit
        if cuda:
            torch.cuda.set_rng_state(generator.get_state(), cuda[0])
        else:
            torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.cuda.get_rng_state(cuda[0]) if cuda else torch.get_rng_state())


class RolloutEngine(Protocol):
    """What the trainer needs from any engine (HF generate today, vLLM on GPUs)."""

    def generate(
        self, prompt_inputs: dict[str, torch.Tensor], n: int, greedy: bool = False
    ) -> RolloutBatch: ...

    def mark_stale(self) -> None:
        """The policy's weights changed (after an optimizer step)."""

    def pop_metrics(self) -> dict[str, float]:
        """The engine's own metrics since the last call (logged with the step's)."""


class HFEngine:
    """Sample ``n`` completions per prompt with ``model.generate``.

    Qwen2-VL-family models take the fast path of :mod:`vlmrl.rollout.sampler` (each prompt
    prefilled once, its KV cache shared by the ``n`` samples, a plain decode loop; same
    distribution and log-probs); ``shared_prefill=False`` or any other model uses ``generate``.
    Each prompt is encoded once and expanded by ``num_return_sequences``; the sampler's
    log-probs are ``log_softmax(raw_logits / temperature)`` of the chosen tokens, the same
    quantity the training forward computes (top-p only narrows which tokens can be drawn).

    ``generator``: where the draws come from, on the model's device (the trainer passes its own;
    by default a fresh one seeded 0, for evaluation's greedy engines and tests).
    """

    def __init__(
        self,
        policy,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        mask_truncated: bool = False,
        shared_prefill: bool = True,
        generator: torch.Generator | None = None,
    ):
        self.policy = policy
        device = torch.device(policy.model.device)
        self.generator = generator if generator is not None else torch.Generator(device).manual_seed(0)
        if self.generator.device.type != device.type:
            raise ValueError(
                f"sampling generator on {self.generator.device} but the model on {device}: "
                "create it on the model's device (the draws are made where the logits are)"
            )
        self.shared_prefill = shared_prefill
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.mask_truncated = mask_truncated
        tok = policy.tokenizer
        self.pad_id = tok.pad_token_id
        stops = {
            tok.convert_tokens_to_ids("<|im_end|>"),
            tok.eos_token_id,
            tok.convert_tokens_to_ids("<|endoftext|>"),
        }
        self.stop_ids = sorted(i for i in stops if isinstance(i, int) and i >= 0)
        self.banned = policy.banned_token_ids

    def mark_stale(self) -> None:
        """Called after each optimizer step; HF ``generate`` samples from the live policy, so nothing to do
        (the vLLM engine syncs its copy of the weights on the next call)."""

    def pop_metrics(self) -> dict[str, float]:
        """None here: the sampler's log-probs already are the policy's (see the vLLM engine's)."""
        return {}

    def _gen_config(self, n: int, greedy: bool) -> GenerationConfig:
        # A fresh config: hub models ship sampling defaults (top_k, repetition_penalty) that would
        # make the sampled distribution differ from the one the loss assumes.
        return GenerationConfig(
            do_sample=not greedy,
            temperature=self.temperature if not greedy else None,
            top_p=self.top_p if not greedy else None,
            top_k=0,  # None would be filled with transformers' global default of 50
            num_return_sequences=n,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            bad_words_ids=[[i] for i in self.banned] or None,
            output_logits=True,
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def generate(self, prompt_inputs: dict[str, torch.Tensor], n: int, greedy: bool = False) -> RolloutBatch:
        model = self.policy.model
        was_training = model.training
        model.eval()
        if self.shared_prefill and fast_sampling_supported(model, prompt_inputs):
            try:
                seqs, lp = sample(
                    model, prompt_inputs, n, self.max_new_tokens, self.temperature, self.top_p, greedy,
                    self.stop_ids, self.banned, self.pad_id, self.generator,
                )  # fmt: skip
            finally:
                model.train(was_training)
            return self._finish(prompt_inputs, seqs, lp, n)
        inputs = {k: v.to(model.device) for k, v in prompt_inputs.items() if k not in COUNT_KEYS}
        try:
            with draws_from(self.generator):
                out = model.generate(  # FSDP-sharded: all ranks decode until all are done
                    **inputs, generation_config=self._gen_config(n, greedy), synced_gpus=lockstep(model)
                )
        finally:
            model.train(was_training)
        p_len = inputs["input_ids"].shape[1]
        seqs = out.sequences[:, p_len:].cpu()  # [B*n, C]
        logits = torch.stack(out.logits, dim=1).float().cpu()  # [B*n, C, V]
        temp = 1.0 if greedy else self.temperature
        lp = token_logprobs(logits / temp, seqs)  # [B*n, C]
        return self._finish(prompt_inputs, seqs, lp, n)

    def _finish(self, prompt_inputs, seqs: torch.Tensor, lp: torch.Tensor, n: int) -> RolloutBatch:
        num, width = seqs.shape
        is_stop = torch.zeros_like(seqs, dtype=torch.bool)
        for s in self.stop_ids:
            is_stop |= seqs == s
        has_stop = is_stop.any(1)
        first_stop = torch.where(has_stop, is_stop.float().argmax(1), torch.full((num,), width))
        lengths = torch.where(has_stop, first_stop + 1, torch.full((num,), width))  # incl. the stop token
        valid = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # [N, C]
        seqs = torch.where(valid, seqs, torch.full_like(seqs, self.pad_id))
        mask = valid.float()
        reasons = ["stop" if h else "length" for h in has_stop.tolist()]
        if self.banned:
            bad = torch.isin(seqs, torch.tensor(self.banned)) & valid
            bad_rows = bad.any(1)
            if bad_rows.any():
                # Should not happen (banned at sampling); if an engine lets one through, neutralise it.
                seqs = torch.where(bad, torch.full_like(seqs, self.pad_id), seqs)
                mask[bad_rows] = 0.0
                for i in bad_rows.nonzero().flatten().tolist():
                    reasons[i] = "invalid_vision_token"
        if self.mask_truncated:
            mask[~has_stop] = 0.0
        texts = self.policy.tokenizer.batch_decode(
            [s[: int(n_)].tolist() for s, n_ in zip(seqs, lengths, strict=True)], skip_special_tokens=True
        )
        b = prompt_inputs["input_ids"].shape[0]
        return RolloutBatch(
            prompt_inputs=prompt_inputs,
            prompt_index=torch.arange(b).repeat_interleave(n),
            completion_ids=seqs,
            completion_mask=mask,
            sampler_logprobs=lp * valid,
            completion_lengths=lengths,
            finish_reasons=reasons,
            texts=texts,
        )
