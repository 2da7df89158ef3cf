"""YAML ⇄ typed dataclasses, with dotted overrides and errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from vlmrl.config.checks import async_conflicts, fsdp_conflicts
from vlmrl.config.schema import CHOICES, TrainConfig
from vlmrl.errors import UserError


class ConfigError(UserError):
    """A config problem, always naming the key (and file when there is one)."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last
    one silently, so ``steps: 3`` followed by ``steps: 0`` would run zero steps."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen and key_node.tag != "tag:yaml.org,2002:merge":
                raise ConfigError(f"line {line}: duplicate key {key!r} (first on line {seen[key]})")
            if isinstance(key, str):
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file strictly: UTF-8 text without NUL bytes, no duplicate keys; every problem
    is one :class:`ConfigError` naming the file (and line)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}: {raw[e.start]:#04x})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (NUL byte at offset {text.index(chr(0))})")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None


def _allowed_keys(cls) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _coerce(value: Any, tp: Any, key: str, choices: dict | None = None) -> Any:
    """Check ``value`` against the annotation ``tp``; allow int → float; reject everything else."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, choices)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, choices)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return list(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number people mean.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: Any, prefix: str = "", choices: dict | None = None):
    choices = CHOICES if choices is None else choices
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            hint = difflib.get_close_matches(k, names, n=1) if isinstance(k, str) else []
            raise ConfigError(
                f"unknown key {where!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                f"allowed under {prefix or 'the top level'}: {_allowed_keys(cls)}"
            )
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], key, choices)
        if key in choices and kwargs[k] not in choices[key]:
            raise ConfigError(f"{key}: {kwargs[k]!r} is not allowed; choose one of {list(choices[key])}")
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. algo.clip_high=0.28")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value: {e}") from None
    return key.strip().split("."), value


def dotted_keys(cls, prefix: str = "") -> list[str]:
    """Every leaf key of the typed tree ``cls`` as ``section.name`` (nested dataclasses walked)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        out += dotted_keys(tp, key + ".") if dataclasses.is_dataclass(tp) else [key]
    return out


def check_override_key(cls, keys: list[str], item: str) -> None:
    """Blame a command-line override whose key is not in the tree on the command line (not on the
    config file it is merged into), with the closest keys (``difflib.get_close_matches``, ratio ≥ 0.6):
    ``algo.clip_hgih=0.3`` → "did you mean 'algo.clip_high'?". Below a mapping-typed field
    (``reward.weights``, ``env.kwargs``) any key is allowed."""
    node: Any = cls
    for depth, k in enumerate(keys):
        if not dataclasses.is_dataclass(node):
            return  # inside a dict / Any field: free-form
        hints = typing.get_type_hints(node)
        if k not in hints:
            # a wrong name in a right section: its siblings; a wrong section: every dotted key
            close = (
                [".".join([*keys[:depth], c]) for c in difflib.get_close_matches(k, list(hints), n=3)]
                if depth
                else difflib.get_close_matches(".".join(keys), dotted_keys(cls), n=3)
            )
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(
                f"command line {item!r}: unknown key {'.'.join(keys[: depth + 1])!r}; {hint}"
                f"allowed under {'.'.join(keys[:depth]) or 'the top level'}: {_allowed_keys(node)}"
            )
        node = _dataclass_of(hints[k])


def _dataclass_of(tp: Any) -> Any:
    """The dataclass inside ``tp`` (``X | None`` → ``X``), else ``tp`` itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
    return tp


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read YAML (or start from defaults), apply dotted overrides, validate, return the tree."""
    cfg = load_tree(TrainConfig, CHOICES, path, overrides)
    _validate(cfg)
    return cfg


def load_tree(cls, choices: dict, path: str | Path | None = None, overrides=()) -> Any:
    """The typed tree ``cls`` from YAML ``path`` (or defaults) and dotted ``overrides``; ``choices``
    maps dotted keys to their allowed values. Cross-field validation is the caller's."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a folder")
        data = read_yaml(p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        keys, value = parse_override(item)
        check_override_key(cls, keys, item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    try:
        return _build(cls, data, choices=choices)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def require_at_least(values: dict[str, float], lo: float) -> None:
    """Raise :class:`ConfigError` naming the first dotted key whose value is below ``lo``."""
    for key, v in values.items():
        if v < lo:
            raise ConfigError(f"{key}: must be ≥ {lo:g}, got {v}")


def _validate(cfg: TrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    require_at_least(
        {
            "rollout.n": cfg.rollout.n,
            "rollout.max_new_tokens": cfg.rollout.max_new_tokens,
            "rollout.vllm_tensor_parallel_size": cfg.rollout.vllm_tensor_parallel_size,
            "train.batch_prompts": cfg.train.batch_prompts,
            "train.epochs": cfg.train.epochs,
            "train.minibatches": cfg.train.minibatches,
            "train.micro_batch": cfg.train.micro_batch,
            "eval.batch_size": cfg.eval.batch_size,
            "train.nonfinite_patience": cfg.train.nonfinite_patience,
        },
        1,
    )
    require_at_least(
        {
            "train.steps": cfg.train.steps,
            "train.weight_decay": cfg.train.weight_decay,
            "train.warmup_steps": cfg.train.warmup_steps,
            "train.grad_clip": cfg.train.grad_clip,
            "train.save_every": cfg.train.save_every,
            "train.keep_checkpoints": cfg.train.keep_checkpoints,
            "eval.every": cfg.eval.every,
            "algo.kl_coef": cfg.algo.kl_coef,
            "rollout.staleness": cfg.rollout.staleness,
            "reward.temporal_contrast": cfg.reward.temporal_contrast,
            "reward.temporal_mu": cfg.reward.temporal_mu,
        },
        0,
    )
    require_at_least({"algo.tis_cap": cfg.algo.tis_cap}, 1)
    require_at_least({"data.video_max_frames": cfg.data.video_max_frames}, 2)  # one temporal patch
    if not cfg.data.video_fps > 0:
        raise ConfigError(f"data.video_fps: must be > 0, got {cfg.data.video_fps}")
    for key, v in {"train.lr": cfg.train.lr, "sft.lr": cfg.sft.lr}.items():
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{key}: must be a finite number > 0, got {v}")
    if cfg.rollout.temperature <= 0:
        raise ConfigError(f"rollout.temperature: must be > 0, got {cfg.rollout.temperature}")
    if not 0 < cfg.rollout.top_p <= 1:
        raise ConfigError(f"rollout.top_p: must be in (0, 1], got {cfg.rollout.top_p}")
    _resolve_clip(cfg)
    lora = cfg.model.lora
    if lora.r < 0 or lora.alpha <= 0 or not 0 <= lora.dropout < 1 or (lora.r and not lora.target_modules):
        raise ConfigError(
            f"model.lora: need r ≥ 0 (0: off), alpha > 0, 0 ≤ dropout < 1, target_modules; got r={lora.r}, "
            f"alpha={lora.alpha}, dropout={lora.dropout}, target_modules={lora.target_modules}"
        )
    if not 0 < cfg.rollout.vllm_gpu_memory_utilization < 1:
        raise ConfigError(
            "rollout.vllm_gpu_memory_utilization: must be in (0, 1), "
            f"got {cfg.rollout.vllm_gpu_memory_utilization}"
        )
    _validate_vision_rl(cfg)
    _validate_env(cfg)
    if cfg.train.strategy == "fsdp" and (bad := fsdp_conflicts(cfg)):
        raise ConfigError(f"train.strategy: fsdp does not support {', '.join(bad)} yet; turn off or use dp")
    if cfg.rollout.mode == "async" and (bad := async_conflicts(cfg)):
        raise ConfigError(f"rollout.mode: async does not support {', '.join(bad)} yet; turn off or use sync")
    total = cfg.train.batch_prompts * cfg.rollout.n
    if total % cfg.train.minibatches:
        raise ConfigError(
            f"train.minibatches: {cfg.train.minibatches} must divide batch_prompts × rollout.n = {total}"
        )


def _resolve_clip(cfg: TrainConfig) -> None:
    """Fill ``algo.clip_low`` / ``clip_high`` / ``dual_clip_c`` left unset from the loss's own
    defaults, then check them against its valid ranges (``vlmrl.algos.CLIP_RANGES``)."""
    from vlmrl.algos import CLIP_RANGES, PolicyLoss

    a = cfg.algo
    spec = CLIP_RANGES[PolicyLoss(a.loss)]
    problems = spec.problems(
        spec.clip_low if a.clip_low is None else a.clip_low,
        spec.clip_high if a.clip_high is None else a.clip_high,
        a.dual_clip_c,
    )
    if problems:
        raise ConfigError(f"algo.loss={a.loss}: " + "; ".join(problems))
    a.clip_low = spec.clip_low if a.clip_low is None else a.clip_low
    a.clip_high = spec.clip_high if a.clip_high is None else a.clip_high
    a.dual_clip_c = spec.dual_clip_c if a.dual_clip_c is None else a.dual_clip_c


def _validate_vision_rl(cfg: TrainConfig) -> None:
    """PAPO and NoisyRollout knobs: ratios in [0, 1), coefficients and std ≥ 0."""
    ranges = {
        "algo.papo_mask_ratio": cfg.algo.papo_mask_ratio,
        "rollout.noisy_frac": cfg.rollout.noisy_frac,
    }
    for key, v in ranges.items():
        if not 0 <= v < 1:
            raise ConfigError(f"{key}: must be in [0, 1), got {v}")
    require_at_least(
        {
            "algo.papo_coef": cfg.algo.papo_coef,
            "algo.papo_entropy_coef": cfg.algo.papo_entropy_coef,
            "rollout.noise_std": cfg.rollout.noise_std,
            "eval.blind_gap_drop": cfg.eval.blind_gap_drop,
        },
        0,
    )
    steps = cfg.rollout.noise_anneal_steps
    if steps is not None and steps < 1:
        raise ConfigError(f"rollout.noise_anneal_steps: must be ≥ 1 (or null: train.steps), got {steps}")
    r = cfg.rollout
    if r.noisy_frac > 0 and r.noisy_count == 0:
        raise ConfigError(
            f"rollout.noisy_frac: {r.noisy_frac} × rollout.n = {r.n} leaves no noisy rollout "
            f"(⌊noisy_frac·n⌋ = 0); raise it to ≥ {1 / r.n:.3g} or set 0"
        )


def _validate_env(cfg: TrainConfig) -> None:
    """``env.*``: a registered name, positive budgets, and no option the multi-turn path lacks."""
    e = cfg.env
    if e.name is None:
        return
    from vlmrl.envs import ENVS, make_env  # the registry (lazy: envs imports rewards and tasks)

    if e.name not in ENVS:
        raise ConfigError(f"env.name: unknown environment {e.name!r}; allowed: {sorted(ENVS)}")
    keys = ("max_turns", "max_tool_calls", "turn_max_new_tokens", "max_total_tokens")
    require_at_least({f"env.{k}": getattr(e, k) for k in keys}, 1)
    costs = ("cost_coef", "cost_target", "cost_lr", "cost_lambda_max")
    require_at_least({f"env.{k}": getattr(e, k) for k in costs if getattr(e, k) is not None}, 0)
    try:  # builds one env now: a bad keyword or value fails at load time
        make_env(e.name, **{"max_turns": e.max_turns, "max_tool_calls": e.max_tool_calls, **e.kwargs})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"env.kwargs: {err}") from None
    if e.turn_max_new_tokens > e.max_total_tokens:
        raise ConfigError(
            f"env.turn_max_new_tokens: {e.turn_max_new_tokens} exceeds env.max_total_tokens "
            f"({e.max_total_tokens})"
        )
    unsupported = {
        "rollout.engine (only 'hf')": cfg.rollout.engine != "hf",
        "rollout.noisy_frac": cfg.rollout.noisy_frac > 0,
        "algo.sr1_check": cfg.algo.sr1_check,
        "algo.papo_coef": cfg.algo.papo_coef > 0,
        "algo.credit (only 'scalar')": cfg.algo.credit != "scalar",
        "algo.dynamic_sampling": cfg.algo.dynamic_sampling,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"env.name: multi-turn rollouts do not support {', '.join(bad)}; unset them")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Any typed config tree (``TrainConfig``, ``GenConfig``) as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
