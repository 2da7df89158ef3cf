"""Segment credit (look span vs the rest), the Vision-SR1 check and the feature-anchor loss.

Hand-computed advantages: GRPO of one group [1, 1, 0, 0] is (r − 0.5) / std with the unbiased
std sqrt(4 · 0.25 / 3) = sqrt(1/3), so ±0.5 · sqrt(3) = ±0.866025.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import vlmrl.train.grpo as grpo_mod
import vlmrl.vision.anchor as anchor_mod
import vlmrl.vision.credit as credit_mod
import vlmrl.vision.spans as spans_mod
import vlmrl.vision.sr1 as sr1_mod
from vlmrl.algos import compute_advantages
from vlmrl.config import load_config
from vlmrl.data import Sample, build_messages, generate
from vlmrl.data.stream import PromptStream
from vlmrl.rewards import build_reward
from vlmrl.rollout.batch import batch_from_completions, encode_prompts
from vlmrl.rollout.rollouts import stack_parts
from vlmrl.train.grpo import GRPOTrainer
from vlmrl.vision.anchor import FeatureAnchor, vision_tower
from vlmrl.vision.credit import check_credit, token_advantages
from vlmrl.vision.spans import look_span_mask, single_token_id, span_by_offsets, token_char_spans
from vlmrl.vision.sr1 import sr1_scores

A = 0.5 * math.sqrt(3)  # GRPO advantage of a 2-vs-2 group, see the module docstring


@pytest.mark.parametrize("module", [spans_mod, credit_mod, sr1_mod, anchor_mod])
def test_docstring_examples(module) -> None:
    assert doctest.testmod(module).failed == 0


@pytest.fixture(scope="module")
def tiny_tok(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def split_tok():
    """A byte-level BPE *without* tag tokens: ``<look>`` is several tokens, as in Qwen's vocabulary."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["2 red circles and a blue square, look at the answer"] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def masks(tok, texts: list[str], with_texts: bool = True) -> tuple[torch.Tensor, list[list[int]]]:
    ids = [encode(tok, t + "<|im_end|>") for t in texts]
    width = max(map(len, ids))
    padded = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    lengths = torch.tensor([len(i) for i in ids])
    return look_span_mask(padded, lengths, tok, texts if with_texts else None), ids


def masked_text(tok, ids: list[int], mask: torch.Tensor) -> str:
    return tok.decode([t for t, m in zip(ids, mask.tolist(), strict=False) if m], skip_special_tokens=False)


# ---------------------------------------------------------------- span masks


def test_single_token_tags_use_the_id_path(tiny_tok) -> None:
    assert (
        single_token_id(tiny_tok, "<look>") is not None and single_token_id(tiny_tok, "</look>") is not None
    )
    text = "<look>2 red circles, 1 blue square</look><think>t</think><answer>2</answer>"
    mask, ids = masks(tiny_tok, [text])
    assert masked_text(tiny_tok, ids[0], mask[0]) == "<look>2 red circles, 1 blue square</look>"
    n_look = int(mask[0].sum())
    assert mask[0, :n_look].eq(1).all() and mask[0, n_look:].eq(0).all()
    # the offset path finds the same tokens on the same ids
    dec = lambda t: tiny_tok.decode(t, skip_special_tokens=False)  # noqa: E731
    assert span_by_offsets(*token_char_spans(ids[0], dec)) == (0, n_look)


def test_tags_sampled_as_pieces_fall_back_to_offsets(tiny_tok) -> None:
    # "<", "look", ">" as separate tokens: no tag id in the row, but the text holds the span
    ids = encode(tiny_tok, "ok ") + encode(tiny_tok, "<") + encode(tiny_tok, "look") + encode(tiny_tok, ">")
    ids += encode(tiny_tok, "1 red circle</look><answer>1</answer>")
    text = tiny_tok.decode(ids)
    assert "<look>1 red circle</look>" in text and single_token_id(tiny_tok, "<look>") not in ids
    mask = look_span_mask(torch.tensor([ids]), torch.tensor([len(ids)]), tiny_tok, [text])
    assert masked_text(tiny_tok, ids, mask[0]) == "<look>1 red circle</look>"


def test_split_tags_use_character_offsets(split_tok) -> None:
    assert single_token_id(split_tok, "<look>") is None  # the test is not vacuous
    texts = [
        "ok <look>2 red circles</look><think>t</think><answer>2</answer>",
        "<think>no look here</think><answer>2</answer>",
        "<look>unclosed 2 red circles",
        "<look>é 2 red circles</look> done",  # é: two byte tokens, each decoding alone to U+FFFD
    ]
    for with_texts in (True, False):
        mask, ids = masks(split_tok, texts, with_texts)
        assert masked_text(split_tok, ids[0], mask[0]) == "<look>2 red circles</look>"
        assert mask[1].sum() == 0 and mask[2].sum() == 0
        assert masked_text(split_tok, ids[3], mask[3]) == "<look>é 2 red circles</look>"


def test_incremental_decode_keeps_multibyte_characters(split_tok) -> None:
    ids = encode(split_tok, "<look>é</look>")
    dec = lambda t: split_tok.decode(t, skip_special_tokens=False)  # noqa: E731
    text, spans = token_char_spans(ids, dec)
    assert text == dec(ids)
    e = text.index("é")
    shared = [s for s in spans if s == (e, e + 1)]
    assert len(shared) == 2  # both bytes of é point at the one character
    assert [s[0] for s in spans] == sorted(s[0] for s in spans)


# ---------------------------------------------------------------- token advantages

GOLD = "2 red circles, 1 blue square"
SCENE = Sample(
    id="s",
    images=[],
    problem="<image>How many red circles?",
    answer="2",
    answer_type="number",
    facts={"objects": [{"shape": "circle", "color": "red"}] * 2 + [{"shape": "square", "color": "blue"}]},
)


def completion(look: str | None, answer: str) -> str:
    return (f"<look>{look}</look>" if look is not None else "") + f"<think>t</think><answer>{answer}</answer>"


def scored_batch(tok, looks: list[str | None], answers: list[str]):
    texts = [completion(lk, a) for lk, a in zip(looks, answers, strict=True)]
    fn = build_reward({"accuracy": 1.0, "perception": 0.5})
    rbs = [fn(t, SCENE) for t in texts]
    ids = [encode(tok, t + "<|im_end|>") for t in texts]
    batch = batch_from_completions({}, ids, tok.pad_token_id, prompt_index=[0] * len(texts))
    batch.texts = texts
    return batch, torch.tensor([r.total for r in rbs]), stack_parts([r.parts for r in rbs])


def test_segment_advantages_by_hand(tiny_tok) -> None:
    # perception F1 = [1, 1, 0, 0]; accuracy (= outcome, total − 0.5·F1) = [1, 0, 1, 0]
    batch, rewards, parts = scored_batch(
        tiny_tok, [GOLD, GOLD, "7 green triangles", "nothing"], ["2", "9", "2", "9"]
    )
    assert parts["perception"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert rewards.tolist() == [1.5, 0.5, 1.0, 0.0]
    adv, metrics = token_advantages(
        "segment", "grpo", rewards, parts, {"accuracy": 1.0, "perception": 0.5}, batch, tiny_tok, batch.texts
    )
    look = look_span_mask(batch.completion_ids, batch.completion_lengths, tiny_tok, batch.texts)
    rest = batch.completion_mask - look
    want_p, want_o = [A, A, -A, -A], [A, -A, A, -A]
    for i in range(4):
        assert look[i].sum() > 0 and rest[i].sum() > 0
        torch.testing.assert_close(
            adv[i][look[i] > 0], torch.full_like(adv[i][look[i] > 0], want_p[i]), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            adv[i][rest[i] > 0], torch.full_like(adv[i][rest[i] > 0], want_o[i]), atol=1e-5, rtol=0
        )
    assert adv[batch.completion_mask == 0].abs().sum() == 0  # padding gets nothing
    assert 0 < metrics["credit/look_token_frac"] < 1 and metrics["credit/with_look_frac"] == 1.0


def test_equal_perception_gives_look_tokens_zero(tiny_tok) -> None:
    batch, rewards, parts = scored_batch(tiny_tok, [GOLD] * 4, ["2", "9", "2", "9"])
    adv, _ = token_advantages(
        "segment", "grpo", rewards, parts, {"accuracy": 1.0, "perception": 0.5}, batch, tiny_tok, batch.texts
    )
    look = look_span_mask(batch.completion_ids, batch.completion_lengths, tiny_tok, batch.texts)
    assert look.sum() > 0 and adv[look > 0].abs().max() == 0
    assert adv[(batch.completion_mask - look) > 0].abs().min() == pytest.approx(A, abs=1e-5)


def test_a_response_without_look_span_carries_the_perception_blame(tiny_tok) -> None:
    # p = [1, 0], both answers right so o = [1, 1]: adv(o) = 0; adv(p) = ±0.5 / sqrt(0.5) = ±0.707107
    batch, rewards, parts = scored_batch(tiny_tok, [GOLD, None], ["2", "2"])
    assert parts["perception"].tolist() == [1.0, 0.0] and parts["accuracy"].tolist() == [1.0, 1.0]
    adv, metrics = token_advantages(
        "segment", "grpo", rewards, parts, {"accuracy": 1.0, "perception": 0.5}, batch, tiny_tok, batch.texts
    )
    look = look_span_mask(batch.completion_ids, batch.completion_lengths, tiny_tok, batch.texts)
    b = 1 / math.sqrt(2)
    assert adv[0][look[0] > 0].tolist() == pytest.approx([b] * int(look[0].sum()), abs=1e-5)
    assert adv[0][(batch.completion_mask[0] - look[0]) > 0].abs().max() < 1e-5  # adv(o) = 0
    valid = batch.completion_mask[1] > 0
    assert adv[1][valid].tolist() == pytest.approx([-b] * int(valid.sum()), abs=1e-5)  # not looking: blamed
    assert adv[1][~valid].abs().sum() == 0
    assert metrics["credit/with_look_frac"] == 0.5


def test_scalar_credit_is_todays_broadcast(tiny_tok) -> None:
    batch, rewards, parts = scored_batch(tiny_tok, [GOLD, GOLD, "nothing", "nothing"], ["2", "9", "2", "9"])
    adv, metrics = token_advantages("scalar", "grpo", rewards, parts, {}, batch, tiny_tok)
    want = compute_advantages("grpo", rewards, batch.prompt_index)[:, None] * batch.completion_mask
    assert torch.equal(adv, want) and metrics == {}


def test_check_credit_names_the_problem() -> None:
    check_credit("segment", {"accuracy": 1.0, "perception": 0.5})
    with pytest.raises(ValueError, match="perception"):
        check_credit("segment", {"accuracy": 1.0})
    with pytest.raises(ValueError, match="allowed"):
        check_credit("token", {})
    with pytest.raises(ValueError, match=r"algo\.credit"):
        load_config(overrides=["algo.credit=token"])


# ---------------------------------------------------------------- the trainer, with scripted rollouts


class ScriptedEngine:
    """Samples fixed completions (``script`` = G texts, the same for every prompt); greedy calls go
    to ``greedy`` (the real engine by default), so the SR1 pass runs the real model."""

    def __init__(self, real, script: list[str], greedy=None):
        self.real, self.script, self.greedy = real, script, greedy
        self.tok = real.policy.tokenizer

    def generate(self, enc, n: int, greedy: bool = False):
        if greedy:
            return (self.greedy or self.real).generate(enc, n, greedy=True)
        assert n == len(self.script)
        b = enc["input_ids"].shape[0]
        texts = [t for _ in range(b) for t in self.script]
        ids = [encode(self.tok, t + "<|im_end|>") for t in texts]
        batch = batch_from_completions(
            enc, ids, self.tok.pad_token_id, [i for i in range(b) for _ in range(n)]
        )
        batch.texts = texts
        return batch

    def mark_stale(self) -> None:
        """The RolloutEngine protocol's weight-change hook: fixed scripts have no weights to sync."""

    def pop_metrics(self) -> dict[str, float]:
        """The protocol's engine metrics: a script has none."""
        return {}


def script(looks: list[str]) -> list[str]:
    """Count task, answers 1..4 (exactly one is right for counts 1-4, so the outcome always varies)."""
    return [f"<look>{lk}</look><answer>{a}</answer>" for a, lk in enumerate(looks, 1)]


def trainer_for(tiny_dir, run_dir, *extra: str) -> GRPOTrainer:
    cfg = load_config(
        overrides=[
            f"model.path={tiny_dir}",
            f"log.run_dir={run_dir}",
            "data.task=count",
            "data.template=look",
            "train.batch_prompts=1",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "eval.every=0",
            "data.eval_size=2",
            "log.progress=false",
            "log.tensorboard=false",
            "log.groups_per_step=0",
            "train.lr=1e-3",
            *extra,
        ]
    )
    return GRPOTrainer(cfg)


def capture_updates(monkeypatch) -> list[tuple]:
    seen = []
    real = grpo_mod.policy_update

    def spy(model, optimizer, batch, adv, *args, **kw):
        seen.append((batch, adv))
        return real(model, optimizer, batch, adv, *args, **kw)

    monkeypatch.setattr(grpo_mod, "policy_update", spy)
    return seen


def test_segment_credit_grpo_step(tiny_dir, tmp_path, monkeypatch) -> None:
    trainer = trainer_for(
        tiny_dir, tmp_path, "algo.credit=segment", "reward.weights={accuracy: 1.0, perception: 0.5}"
    )
    assert trainer.anchor is None  # vision.anchor_coef = 0: nothing built
    seen = capture_updates(monkeypatch)
    model = trainer.policy.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    # step 1: perception differs inside each group ("1 red circle" F1 > 0 on a count scene, "nothing" 0)
    trainer.engine = ScriptedEngine(
        trainer.engine, script(["1 red circle", "nothing", "1 red circle", "nothing"])
    )
    metrics = trainer.train_step()
    assert "vision/anchor_loss" not in metrics
    assert {"reward/perception", "reward/perception/precision", "reward/perception/false_mentions"} <= set(
        metrics
    )
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []
    batch, adv = seen[-1]
    look = look_span_mask(
        batch.completion_ids, batch.completion_lengths, trainer.policy.tokenizer, batch.texts
    )
    fn = trainer.reward_fn
    perception = torch.tensor(
        [fn(t, s).parts["perception"] for t, s in zip(batch.texts, _samples(trainer, batch), strict=True)]
    )
    adv_p = compute_advantages("grpo", perception, batch.prompt_index)
    assert adv_p.abs().min() > 0.1
    first_look = look.argmax(1)
    torch.testing.assert_close(adv[torch.arange(batch.size), first_look], adv_p)
    assert metrics["credit/look_token_frac"] > 0

    # step 2: every completion describes the scene the same way -> look tokens get exactly 0
    trainer.engine.script = script(["1 red circle"] * 4)
    trainer.train_step()
    batch, adv = seen[-1]
    look = look_span_mask(
        batch.completion_ids, batch.completion_lengths, trainer.policy.tokenizer, batch.texts
    )
    assert look.sum() > 0 and adv[look > 0].abs().max() == 0
    assert adv[(batch.completion_mask - look) > 0].abs().max() > 0.1  # the answers still differ


def _samples(trainer: GRPOTrainer, batch) -> list[Sample]:
    """The prompt of each rollout of the step just taken (the stream is a function of its position)."""
    k = trainer.cfg.train.batch_prompts
    prompts = PromptStream(trainer.cfg.data, trainer.stream.position - k).next(k)
    return [prompts[int(i)] for i in batch.prompt_index]


# ---------------------------------------------------------------- Vision-SR1 check


class FixedAnswers:
    """A greedy engine that answers every text-only prompt with ``<answer>1</answer>``."""

    def __init__(self, tok):
        self.tok, self.prompts = tok, []

    def generate(self, enc, n: int, greedy: bool = False):
        assert greedy and n == 1 and "pixel_values" not in enc  # text only
        self.prompts += self.tok.batch_decode(enc["input_ids"], skip_special_tokens=True)
        b = enc["input_ids"].shape[0]
        ids = [encode(self.tok, "<answer>1</answer><|im_end|>")] * b
        batch = batch_from_completions(enc, ids, self.tok.pad_token_id)
        batch.texts = ["<answer>1</answer>"] * b
        return batch


def test_sr1_scores_by_hand(tiny_dir, tiny_tok) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    s1 = Sample("a", [], "<image>How many red circles?", "1", "count", "number", {"objects": []})
    s2 = Sample("b", [], "<image>How many red circles?", "3", "count", "number", {"objects": []})
    texts = [
        "<look>1 red circle</look><answer>1</answer>",
        "<answer>1</answer>",
        "<look>3 red circles</look>",
    ]
    engine = FixedAnswers(tiny_tok)
    scores, has_look = sr1_scores(engine, processor, "look", [s1, s2], texts, [0, 0, 1])
    # row 0: has a look, text-only answer 1 == gold 1 -> 1; row 1: no look -> 0; row 2: 1 != 3 -> 0
    assert scores.tolist() == [1.0, 0.0, 0.0] and has_look.tolist() == [True, False, True]
    assert len(engine.prompts) == 2  # only completions with a look span are re-asked
    assert "Image description: 1 red circle" in engine.prompts[0]
    assert "Image description: 3 red circles" in engine.prompts[1]


def test_sr1_check_in_a_grpo_step(tiny_dir, tmp_path) -> None:
    trainer = trainer_for(
        tiny_dir, tmp_path, "algo.sr1_check=true", "reward.weights={accuracy: 1.0, sr1: 0.5}"
    )
    real = trainer.engine
    trainer.engine = ScriptedEngine(real, script(["1 red circle", "nothing", "2 red circles", "nothing"]))
    metrics = trainer.train_step()  # the text-only pass runs the real model (greedy)
    assert metrics["rollout/sr1_with_look_frac"] == 1.0
    # every completion has a look span, so the text-only accuracy is the mean sr1 score itself
    assert metrics["rollout/sr1_text_only_acc"] == pytest.approx(metrics["reward/sr1"])
    assert metrics["reward/total"] == pytest.approx(metrics["reward/accuracy"] + 0.5 * metrics["reward/sr1"])
    # with fixed text-only answers "1": sr1 = 1 exactly for prompts whose count is 1
    start = trainer.stream.position
    trainer.engine = ScriptedEngine(
        real, script(["1 red circle"] * 4), greedy=FixedAnswers(trainer.policy.tokenizer)
    )
    metrics = trainer.train_step()
    prompts = PromptStream(trainer.cfg.data, start).next(trainer.cfg.train.batch_prompts)
    want = sum(p.answer == "1" for p in prompts) / len(prompts)
    assert metrics["rollout/sr1_text_only_acc"] == pytest.approx(want)
    assert metrics["reward/sr1"] == pytest.approx(want)  # every completion has a look span here
    assert metrics["reward/total"] == pytest.approx(metrics["reward/accuracy"] + 0.5 * want)


def test_sr1_weight_without_the_check_is_an_error(tiny_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="sr1_check"):
        trainer_for(tiny_dir, tmp_path, "reward.weights={accuracy: 1.0, sr1: 0.5}")


# ---------------------------------------------------------------- feature anchor


def test_feature_anchor_loss(tiny_policy) -> None:
    model = tiny_policy.model
    s = generate("count", 2)
    enc = encode_prompts(
        tiny_policy.processor, [build_messages(x, "answer") for x in s], [x.images for x in s]
    )
    anchor = FeatureAnchor(model, coef=1.0)
    assert all(not p.requires_grad for p in anchor.ref.parameters())
    assert anchor.loss(model, enc).item() == pytest.approx(0.0, abs=1e-6)
    assert anchor.loss(model, {"input_ids": enc["input_ids"]}) is None  # no images, nothing to anchor
    ref_before = {n: p.clone() for n, p in anchor.ref.named_parameters()}
    with torch.no_grad():
        for p in vision_tower(model).blocks[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = anchor.loss(model, enc)
    assert loss.item() > 1e-4
    loss.backward()
    assert vision_tower(model).blocks[0].mlp.down_proj.weight.grad.abs().sum() > 0
    assert all(torch.equal(p, ref_before[n]) for n, p in anchor.ref.named_parameters())


def test_anchor_in_grpo_steps(tiny_dir, tmp_path) -> None:
    trainer = trainer_for(tiny_dir, tmp_path, "vision.anchor_coef=1.0", "reward.weights={accuracy: 1.0}")
    assert trainer.anchor is not None
    trainer.engine = ScriptedEngine(trainer.engine, script(["nothing"] * 4))
    first = trainer.train_step()["vision/anchor_loss"]
    second = trainer.train_step()["vision/anchor_loss"]
    assert first == pytest.approx(0.0, abs=1e-6)  # before the first update the tower is the anchor
    assert second > 1e-6  # the full tower moved in step 1
