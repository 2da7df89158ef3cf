"""Checks that need no model: run by the command line before torch loads anything.

A typo in a reward name or a path must cost the user seconds, not the minute a model load takes;
so ``vlmrl train / sft / eval`` call :func:`check_before_loading` right after the config loads.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from vlmrl.config.schema import TrainConfig
from vlmrl.errors import MissingFileError, StorageError, UserError

#: A checkpoint holds the weights once and AdamW's two moments per trainable weight: about three
#: times the weights' bytes on disk (less with LoRA or a frozen tower: an upper estimate).
CHECKPOINT_FACTOR = 3


def looks_like_hub_id(path: str) -> bool:
    """``owner/name`` that is not a local path: only the hub can tell whether it exists.

    >>> looks_like_hub_id("Qwen/Qwen2.5-VL-3B-Instruct"), looks_like_hub_id("/nonexistent")
    (True, False)
    """
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def check_path(key: str, path: str | None) -> None:
    """Raise :class:`MissingFileError` naming ``key`` when ``path`` is neither on disk, a hub id, nor
    the shipped base's alias (``vlmrl-tiny-base``)."""
    from vlmrl.models.base_mix import BASE_NAME  # no torch

    if path is None or path == BASE_NAME or Path(path).expanduser().exists() or looks_like_hub_id(path):
        return
    raise MissingFileError(f"{key}: {path!r} does not exist (a local path, or a hub id owner/name)")


def check_before_loading(cfg: TrainConfig, model_path: str | None = None) -> None:
    """Reward names and plugin modules, then every path the run reads (``model_path`` defaults to
    ``model.path``); raises the project's user errors, each naming the key."""
    import vlmrl.envs  # noqa: F401  (registers the GUI tasks, data.task: gui / gui_ground; no torch)
    from vlmrl.rewards.judge import JUDGE, JudgeReward
    from vlmrl.rewards.plugins import reward_from_config

    reward_from_config(cfg.reward)  # unknown names and unimportable reward.modules
    if JUDGE in cfg.reward.weights:  # a judge server that is down fails now, not after the model loads
        JudgeReward(cfg.reward.judge).probe()
    check_path("model.path", model_path or cfg.model.path)
    check_path("sft.init", cfg.sft.init)
    from vlmrl.data.loading import split_spec

    for key, value in (("data.path", cfg.data.path), ("data.eval_path", cfg.data.eval_path)):
        check_path(key, None if value is None else split_spec(value, "")[0])  # NAME@SPLIT
    check_path("data.image_dir", cfg.data.image_dir)


def weights_bytes(model_path: str | None) -> int:
    """Bytes of the ``*.safetensors`` / ``*.bin`` weights under a local model folder (0 when unknown:
    a hub id, or no weight files)."""
    if not model_path or not Path(model_path).expanduser().is_dir():
        return 0
    root = Path(model_path).expanduser()
    return sum(p.stat().st_size for ext in ("*.safetensors", "*.bin") for p in root.rglob(ext) if p.is_file())


def check_run_dir(run_dir: str | Path, model_path: str | None = None, key: str = "log.run_dir") -> Path:
    """Create the run directory and prove it can hold a run, before any model work; returns it.

    Refuses, each as one :class:`StorageError` naming the path: the run dir (or its ``checkpoints/``
    or ``metrics.jsonl``) being the wrong kind of thing, a folder that cannot be written (read-only
    filesystem, permissions: a probe file is written and removed), and less free space than one
    checkpoint needs (:data:`CHECKPOINT_FACTOR` × the weights of ``model_path``). A disk that fills
    later fails the checkpoint write alone, with the previous checkpoints intact (``run/checkpoint.py``).
    """
    root = Path(run_dir).expanduser()
    for path, kind in ((root, "folder"), (root / "checkpoints", "folder"), (root / "metrics.jsonl", "file")):
        if path.exists() and (path.is_dir() != (kind == "folder")):
            what = "a file" if kind == "folder" else "a folder"
            raise StorageError.from_os(OSError(errno.EEXIST, f"is {what}; expected a {kind}"), key, path)
    probe = root / f".vlmrl-write-probe-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise StorageError.from_os(e, f"{key} is not writable", root) from e
    need = CHECKPOINT_FACTOR * weights_bytes(model_path)
    free = shutil.disk_usage(root).free
    if need and free < need:
        raise StorageError.from_os(
            OSError(
                errno.ENOSPC,
                f"{free / 2**20:.0f} MiB free, a checkpoint needs about {need / 2**20:.0f} MiB "
                f"({CHECKPOINT_FACTOR}× the weights of {model_path})",
            ),
            key,
            root,
        )
    return root


def check_sampling_args(samples: int, ks: list[int] | None, temperature: float, env: str | None) -> list[int]:
    """``vlmrl eval --samples N --pass-k K.. --temperature T``: the ks to report (default 1 and N);
    each a :class:`UserError` naming the flag: N ≥ 0, 1 ≤ K ≤ N, T > 0, single-turn only."""
    if samples < 0 or (samples == 0 and ks):
        raise UserError(f"--samples: need N ≥ 1 samples per prompt for pass@k, got {samples}")
    if samples == 0:
        return []
    if env is not None:
        raise UserError(f"--samples: sampled pass@k is single-turn; it does not apply to env.name={env!r}")
    if not temperature > 0:
        raise UserError(f"--temperature: must be > 0, got {temperature}")
    ks = sorted(set(ks or [1, samples]))
    if ks[0] < 1 or ks[-1] > samples:
        raise UserError(f"--pass-k: every K must be in 1..{samples} (--samples), got {ks}")
    return ks


#: What vlmrl writes into a run directory (globs): ``--overwrite`` removes these and nothing else,
#: so a run dir pointed at a folder that holds other files never loses them.
RUN_FILES: tuple[str, ...] = ("metrics.jsonl", "tb", "rollouts", "checkpoints", "report*", "config.yaml")
#: Their presence means the folder already holds a run (a config.yaml or a report alone does not).
RUN_MARKERS: tuple[str, ...] = ("metrics.jsonl", "checkpoints")


class RunDirTakenError(UserError):
    """``log.run_dir`` already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


def claim_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> list[Path]:
    """Refuse a run directory that already holds a run unless told what to do with it.

    A second ``vlmrl train`` into the same folder used to append its rows to the first run's
    ``metrics.jsonl`` (two runs' curves interleaved, steps repeated). Now: ``resume`` continues
    the old run; ``overwrite`` deletes vlmrl's own files (:data:`RUN_FILES`) and starts afresh;
    neither is one :class:`RunDirTakenError` naming the folder and both flags. Returns the paths
    removed (empty unless ``overwrite``). Only the command line calls this: the library's
    ``GRPOTrainer`` keeps its own ``resume`` argument.
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: continue the run, or replace it")
    root = Path(run_dir).expanduser()
    held = [m for m in RUN_MARKERS if (root / m).exists()]
    if not held or resume:
        return []
    if not overwrite:
        raise RunDirTakenError(
            f"log.run_dir: {str(root)!r} already holds a run ({', '.join(held)}); "
            "pass --resume to continue it, --overwrite to replace it, or choose another log.run_dir"
        )
    removed = sorted({p for pattern in RUN_FILES for p in root.glob(pattern)})
    for path in removed:
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError as e:
            raise StorageError.from_os(e, "--overwrite: removing the old run", path) from e
    return removed


def fsdp_conflicts(cfg: TrainConfig) -> list[str]:
    """The settings ``train.strategy: fsdp`` cannot run yet, as ``key=value`` (empty: none).

    Under FSDP2 every forward is a collective, so every rank must run the same forwards in the
    same order. These features run forwards on rank 0 alone (drift monitor), a data-dependent
    number of them per rank (multi-turn episodes, DAPO refills, PAPO's masked pass, noisy and
    SR1 re-asks, the blind and POPE probes), or hold a second copy of the tower (the anchor), or
    sample outside the sharded model (vLLM); none is tested sharded, so each is refused at load.
    """
    a, e = cfg.algo, cfg.eval
    checks = {
        "algo.papo_coef": a.papo_coef > 0,
        "vision.anchor_coef": cfg.vision.anchor_coef > 0,
        "env.name": cfg.env.name is not None,
        "eval.drift": e.drift,
        "eval.blind": e.blind,
        "eval.pope_size": e.pope_size > 0,
        "rollout.engine": cfg.rollout.engine != "hf",
        "rollout.noisy_frac": cfg.rollout.noisy_frac > 0,
        "algo.dynamic_sampling": a.dynamic_sampling,
        "algo.sr1_check": a.sr1_check,
    }
    return [f"{k}={_get(cfg, k)!r}" for k, on in checks.items() if on]


def async_conflicts(cfg: TrainConfig) -> list[str]:
    """The settings ``rollout.mode: async`` cannot run yet, as ``key=value`` (empty: none).

    The worker samples one batch of ``train.batch_prompts`` prompts per step from the prompt stream
    in lockstep with the trainer; features that call the engine again within a step (multi-turn
    episodes, DAPO refills, noisy and SR1 re-asks) or shard the model over ranks are refused at load.
    """
    checks = {
        "env.name": cfg.env.name is not None,
        "rollout.noisy_frac": cfg.rollout.noisy_frac > 0,
        "algo.dynamic_sampling": cfg.algo.dynamic_sampling,
        "algo.sr1_check": cfg.algo.sr1_check,
        "train.strategy": cfg.train.strategy != "dp",
    }
    return [f"{k}={_get(cfg, k)!r}" for k, on in checks.items() if on]


def _get(cfg: TrainConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)
