"""``vlmrl convert easyr1``: an EasyR1 config, key by key, into a vlmrl config.

:data:`TABLE` is the one source of the translation: the converter follows it and the docs page
``reference/easyr1.md`` is generated from it. Every leaf key of the input ends up either translated
or listed under "no equivalent" with the reason (in the output file's header and on the terminal):
nothing is dropped silently.

Keys whose meaning needs another key are handled after the table: ``worker.actor.global_batch_size``
(prompts per optimizer step, as verl's ``ppo_mini_batch_size``) becomes
``train.minibatches = data.rollout_batch_size / global_batch_size``; ``algorithm.disable_kl: true``
forces ``algo.kl_coef: 0``; ``worker.actor.optim.lr_warmup_ratio`` needs ``trainer.max_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmrl.config.load import ConfigError


@dataclass(frozen=True)
class Rule:
    """One EasyR1 key: where it goes in vlmrl (``None``: nowhere) and how its value changes."""

    target: str | None
    note: str = ""
    convert: Callable[[Any], Any] | None = None


_ADVANTAGES = {"grpo": "grpo", "rloo": "rloo", "reinforce_plus_plus": "reinforce_pp", "drgrpo": "drgrpo"}
_KL = {"low_var_kl": "k3", "kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "k3": "k3"}
_AGG = {"token": "token_mean", "seq": "seq_mean_token_mean"}


def _choice(table: dict[str, str], key: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value not in table:
            raise ConfigError(f"EasyR1 {key}: {value!r} has no vlmrl equivalent; known: {sorted(table)}")
        return table[value]

    return convert


def _every(value: Any) -> int:
    return 0 if value is None or value < 0 else int(value)


_PERF = "a performance/memory switch of EasyR1's workers; vlmrl has no such knob"
_FSDP = "vlmrl shards with FSDP2 under torchrun (see the scaling guide), not per-worker flags"

#: EasyR1 key (dotted) → rule. Prefix rules (ending in ``.``) cover whole sub-trees.
TABLE: dict[str, Rule] = {
    "data.train_files": Rule("data.path", "NAME@SPLIT works as in EasyR1"),
    "data.val_files": Rule("data.eval_path", "NAME@SPLIT works as in EasyR1"),
    "data.prompt_key": Rule("data.prompt_key"),
    "data.answer_key": Rule("data.answer_key"),
    "data.image_key": Rule("data.image_key"),
    "data.image_dir": Rule("data.image_dir"),
    "data.format_prompt": Rule("data.template", "a Jinja file that sees `content`, as EasyR1's"),
    "data.max_response_length": Rule("rollout.max_new_tokens", "also eval.max_new_tokens"),
    "data.rollout_batch_size": Rule("train.batch_prompts"),
    "data.val_batch_size": Rule(
        "eval.batch_size", "-1 (all at once) becomes 50", lambda v: 50 if v < 0 else v
    ),
    "data.seed": Rule("data.seed"),
    "data.min_pixels": Rule("model.min_pixels"),
    "data.max_pixels": Rule("model.max_pixels"),
    "data.max_prompt_length": Rule(None, "prompts are never truncated (a cut prompt loses image tokens)"),
    "data.filter_overlong_prompts": Rule(None, "prompts are never truncated, so nothing to filter"),
    "data.shuffle": Rule(None, "training data is always shuffled, per epoch, by data.seed"),
    "data.video_key": Rule(None, "datasets with video columns are not read yet"),
    "data.video_fps": Rule(None, "datasets with video columns are not read yet"),
    "data.mini_rollout_batch_size": Rule(None, "generation is not split into mini rollout batches"),
    "data.override_chat_template": Rule(None, "the processor's own chat template is used"),
    "algorithm.adv_estimator": Rule("algo.advantage", "", _choice(_ADVANTAGES, "algorithm.adv_estimator")),
    "algorithm.disable_kl": Rule(None, "true sets algo.kl_coef: 0 (no reference model is loaded)"),
    "algorithm.use_kl_loss": Rule(
        "algo.kl_placement", "true: loss; false: reward", lambda v: "loss" if v else "reward"
    ),
    "algorithm.kl_penalty": Rule(
        "algo.kl_estimator", "low_var_kl → k3, kl → k1, mse → k2", _choice(_KL, "algorithm.kl_penalty")
    ),
    "algorithm.kl_coef": Rule("algo.kl_coef"),
    "algorithm.online_filtering": Rule("algo.dynamic_sampling", "drops groups whose rewards are all equal"),
    "algorithm.filter_key": Rule(None, "dynamic sampling filters on the total reward"),
    "algorithm.filter_low": Rule(None, "dynamic sampling keeps groups with any spread"),
    "algorithm.filter_high": Rule(None, "dynamic sampling keeps groups with any spread"),
    "worker.actor.global_batch_size": Rule(None, "becomes train.minibatches = rollout_batch_size / this"),
    "worker.actor.micro_batch_size_per_device_for_update": Rule("train.micro_batch"),
    "worker.actor.micro_batch_size_per_device_for_experience": Rule(None, "log-probs use train.micro_batch"),
    "worker.actor.max_grad_norm": Rule("train.grad_clip"),
    "worker.actor.ppo_epochs": Rule("train.epochs"),
    "worker.actor.clip_ratio_low": Rule("algo.clip_low"),
    "worker.actor.clip_ratio_high": Rule("algo.clip_high"),
    "worker.actor.clip_ratio_dual": Rule(
        None, "set algo.loss: dual_clip and algo.dual_clip_c for a dual clip"
    ),
    "worker.actor.loss_avg_mode": Rule(
        "algo.loss_agg",
        "token → token_mean, seq → seq_mean_token_mean",
        _choice(_AGG, "worker.actor.loss_avg_mode"),
    ),
    "worker.actor.padding_free": Rule(None, _PERF),
    "worker.actor.dynamic_batching": Rule(None, _PERF),
    "worker.actor.ulysses_size": Rule(None, _PERF),
    "worker.actor.ulysses_sequence_parallel_size": Rule(None, _PERF),
    "worker.actor.model.model_path": Rule("model.path"),
    "worker.actor.model.enable_gradient_checkpointing": Rule("train.gradient_checkpointing"),
    "worker.actor.model.trust_remote_code": Rule(None, "models load through transformers' own classes"),
    "worker.actor.model.freeze_vision_tower": Rule(
        "vision.train", "true → frozen, false → full", lambda v: "frozen" if v else "full"
    ),
    "worker.actor.optim.lr": Rule("train.lr"),
    "worker.actor.optim.weight_decay": Rule("train.weight_decay"),
    "worker.actor.optim.strategy": Rule(None, "the optimizer is AdamW (fp32 states)"),
    "worker.actor.optim.lr_warmup_ratio": Rule(
        None, "becomes train.warmup_steps when trainer.max_steps is set"
    ),
    "worker.actor.optim.lr_warmup_steps": Rule("train.warmup_steps"),
    "worker.actor.fsdp.": Rule(None, _FSDP),
    "worker.actor.offload.": Rule(None, _FSDP),
    "worker.ref.": Rule(None, "the reference model follows the policy's settings"),
    "worker.rollout.n": Rule("rollout.n"),
    "worker.rollout.temperature": Rule("rollout.temperature"),
    "worker.rollout.top_p": Rule("rollout.top_p"),
    "worker.rollout.gpu_memory_utilization": Rule(
        "rollout.vllm_gpu_memory_utilization", "and rollout.engine: vllm, as EasyR1 always samples with vLLM"
    ),
    "worker.rollout.tensor_parallel_size": Rule(None, "vLLM tensor parallelism is not translated"),
    "worker.rollout.limit_images": Rule(None, "every image of a prompt is passed"),
    "worker.rollout.enforce_eager": Rule(None, _PERF),
    "worker.rollout.enable_chunked_prefill": Rule(None, _PERF),
    "worker.rollout.disable_tqdm": Rule(None, "progress is log.progress"),
    "worker.rollout.val_override_config.": Rule(None, "evaluation decodes greedily, one sample per prompt"),
    "worker.reward.reward_type": Rule(None, "batch or sequential is read from the function's signature"),
    "worker.reward.reward_function": Rule("reward.weights", "the function, weight 1", lambda v: {v: 1.0}),
    "worker.reward.score_function": Rule("reward.weights", "older EasyR1 name", lambda v: {v: 1.0}),
    "worker.reward.reward_function_kwargs": Rule(None, "becomes reward.function_kwargs of the function"),
    "worker.reward.skip_special_tokens": Rule(None, "completions are always decoded without special tokens"),
    "trainer.max_steps": Rule("train.steps"),
    "trainer.total_epochs": Rule(
        None, "vlmrl counts steps: set train.steps (epochs × rows / rollout_batch_size)"
    ),
    "trainer.total_episodes": Rule(
        None, "vlmrl counts steps: set train.steps (epochs × rows / rollout_batch_size)"
    ),
    "trainer.project_name": Rule(None, "log.run_dir is runs/PROJECT/EXPERIMENT"),
    "trainer.experiment_name": Rule(None, "log.run_dir is runs/PROJECT/EXPERIMENT"),
    "trainer.logger": Rule(None, "wandb → log.wandb, tensorboard → log.tensorboard; console is always on"),
    "trainer.val_freq": Rule("eval.every", "-1 becomes 0 (start and end only)", _every),
    "trainer.save_freq": Rule("train.save_every", "-1 becomes 0 (only at the end)", _every),
    "trainer.save_limit": Rule("train.keep_checkpoints", "-1 keeps 1000", lambda v: 1000 if v < 0 else v),
    "trainer.save_checkpoint_path": Rule("log.run_dir", "null: runs/PROJECT/EXPERIMENT"),
    "trainer.load_checkpoint_path": Rule(None, "resume with `vlmrl train CFG --resume` (from log.run_dir)"),
    "trainer.find_last_checkpoint": Rule(None, "resume with `vlmrl train CFG --resume` (from log.run_dir)"),
    "trainer.nnodes": Rule(None, "launch with torchrun --nnodes (see the scaling guide)"),
    "trainer.n_gpus_per_node": Rule(None, "launch with torchrun --nproc_per_node (see the scaling guide)"),
    "trainer.val_before_train": Rule(None, "evaluation always runs at step 0"),
    "trainer.val_only": Rule(None, "use `vlmrl eval CFG`"),
    "trainer.val_generations_to_log": Rule(None, "logged groups per step are log.groups_per_step"),
    "trainer.max_try_make_batch": Rule(None, "dynamic sampling rounds are algo.dynamic_sampling_max_rounds"),
    "trainer.save_model_only": Rule(None, "checkpoints always hold optimizer and RNG, for exact resume"),
}


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted EasyR1 key (exact, else the longest prefix rule), or None if unknown."""
    if key in TABLE:
        return TABLE[key]
    prefixes = [k for k in TABLE if k.endswith(".") and key.startswith(k)]
    return TABLE[max(prefixes, key=len)] if prefixes else None


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree and not prefix.endswith("reward_function_kwargs."):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _leaves(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: tree}


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *heads, last = dotted.split(".")
    for h in heads:
        tree = tree.setdefault(h, {})
    tree[last] = value


@dataclass
class Conversion:
    """The vlmrl config tree, and the EasyR1 keys that have no equivalent (key → why)."""

    config: dict[str, Any]
    unmapped: dict[str, str]
    translated: dict[str, str]


def convert(easyr1: dict[str, Any]) -> Conversion:
    """Translate an EasyR1 config tree (see :data:`TABLE`); raises ConfigError on a value that has
    no counterpart (an unknown advantage estimator, say)."""
    leaves = {k: v for k, v in _leaves(easyr1).items() if k}
    flat: dict[str, Any] = {}
    unmapped: dict[str, str] = {}
    translated: dict[str, str] = {}
    for key, value in leaves.items():
        rule = rule_for(key)
        if rule is None:
            unmapped[key] = "not a key vlmrl knows from EasyR1's config"
        elif rule.target is None:
            unmapped[key] = rule.note
        elif value is None:
            translated[key] = f"{rule.target} (null: vlmrl's default kept)"
        else:
            flat[rule.target] = rule.convert(value) if rule.convert else value
            translated[key] = rule.target
    _combined(leaves, flat, translated, unmapped)
    tree: dict[str, Any] = {}
    for key in sorted(flat):
        _put(tree, key, flat[key])
    return Conversion(tree, unmapped, translated)


def _combined(leaves: dict[str, Any], flat: dict[str, Any], translated: dict[str, str],
              unmapped: dict[str, str]) -> None:  # fmt: skip
    """The keys whose translation needs another key's value."""
    g = leaves.get

    def move(key: str, target: str) -> None:
        unmapped.pop(key, None)
        translated[key] = target

    if "rollout.max_new_tokens" in flat:
        flat["eval.max_new_tokens"] = flat["rollout.max_new_tokens"]
    if "rollout.vllm_gpu_memory_utilization" in flat:
        flat["rollout.engine"] = "vllm"
    if "algorithm.disable_kl" in leaves:
        if g("algorithm.disable_kl"):
            flat["algo.kl_coef"] = 0.0
        move("algorithm.disable_kl", "algo.kl_coef")
    rollout_batch, global_batch = g("data.rollout_batch_size"), g("worker.actor.global_batch_size")
    if rollout_batch and global_batch:
        if rollout_batch % global_batch:
            raise ConfigError(
                f"EasyR1 worker.actor.global_batch_size: {global_batch} does not divide "
                f"data.rollout_batch_size {rollout_batch}; vlmrl splits each step into equal minibatches"
            )
        flat["train.minibatches"] = rollout_batch // global_batch
        move("worker.actor.global_batch_size", "train.minibatches")
    ratio, steps = g("worker.actor.optim.lr_warmup_ratio"), g("trainer.max_steps")
    if ratio and steps:
        flat["train.warmup_steps"] = math.ceil(ratio * steps)
        move("worker.actor.optim.lr_warmup_ratio", "train.warmup_steps")
    fn = g("worker.reward.reward_function") or g("worker.reward.score_function")
    kwargs = g("worker.reward.reward_function_kwargs")
    if fn and kwargs:
        flat["reward.function_kwargs"] = {fn: dict(kwargs)}
        move("worker.reward.reward_function_kwargs", "reward.function_kwargs")
    loggers = g("trainer.logger") or []
    if loggers:
        flat["log.wandb"] = "wandb" in loggers
        flat["log.tensorboard"] = "tensorboard" in loggers
        move("trainer.logger", "log.wandb, log.tensorboard")
    if "log.run_dir" not in flat and (g("trainer.project_name") or g("trainer.experiment_name")):
        flat["log.run_dir"] = str(
            Path("runs", g("trainer.project_name") or "", g("trainer.experiment_name") or "")
        )
        for k in ("trainer.project_name", "trainer.experiment_name"):
            if k in leaves:
                move(k, "log.run_dir")


def convert_file(src: str | Path, out: str | Path) -> Conversion:
    """Read EasyR1's YAML at ``src``, write the vlmrl config to ``out`` with the untranslated keys
    listed in its header, check that the result loads as a vlmrl config, and return the conversion."""
    from vlmrl.config.load import load_config

    src = Path(src)
    if not src.is_file():
        raise ConfigError(f"convert easyr1: {src} does not exist")
    try:
        tree = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"convert easyr1: {src}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"convert easyr1: {src}: expected a mapping at the top")
    result = convert(tree)
    header = [f"# vlmrl config converted from the EasyR1 config {src.name} (vlmrl convert easyr1)."]
    if result.unmapped:
        header.append("# EasyR1 keys with no vlmrl equivalent (not carried over):")
        header += [f"#   {k}: {why}" for k, why in result.unmapped.items()]
    text = "\n".join(header) + "\n" + yaml.safe_dump(result.config, sort_keys=False, allow_unicode=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    load_config(out)  # the converted file must be a valid vlmrl config
    return result
