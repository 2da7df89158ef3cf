"""Checkpoints as safetensors + JSON only (no pickle): weights, optimizer, RNG, trainer state.

Layout of ``checkpoints/step_N/``:
- ``model/``: ``save_pretrained`` output (+ processor), loadable by ``load_policy``; with LoRA
  adapters (``model.lora``, ``vision.train: lora``) these are the *merged* weights ``W + B·A·α/r``,
  a plain HF model for eval / vLLM / the hub;
- ``trainable.safetensors`` (LoRA runs only): every trainable parameter unmerged, by name
  (adapters, plus any base weight that trains, e.g. the tower under ``vision.train: full``). A
  resume loads the base ``model.path`` (state.json ``lora_base``), adds the same adapters and
  loads these: exact, where re-splitting merged weights would not be;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW moments by parameter index, hyper-params;
- ``rng.safetensors``: the global torch CPU (and CUDA) generator states, and every rank's
  sampling generator ``rank{r}.sampler_cpu`` / ``_cuda`` (what the trainer samples from,
  ``run/seeding.py``); ``state.json``: step, global data position.
A checkpoint is written to ``step_N.tmp`` and renamed, so a kill mid-write never leaves a
half checkpoint that ``--resume`` would pick. Before the rename every tensor file is read back and
must be finite, and ``state.json`` records each file's size and SHA-256 (``run/verify.py``): a
resume verifies them and falls back past a checkpoint that fails. A write that fails (full disk,
read-only) removes its ``.tmp`` and raises one :class:`StorageError` naming the file; the previous
checkpoints are untouched.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlmrl.errors import MissingFileError, NonFiniteError, StorageError, UserError
from vlmrl.models.lora import has_lora, merged_state_dict
from vlmrl.run.verify import last_good, read_state, record_files, step_dirs


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing file or unreadable bytes are one user error naming it."""
    if not Path(path).is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError or OSError on bad bytes
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable safetensors file ({first})") from None


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    idx = 0
    for g in opt.param_groups:
        for p in g["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor):
                    tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{k}"] = v
            idx += 1
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return tensors, {"groups": groups, "scalars": scalars}


def save_checkpoint(
    directory: Path,
    policy,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_rng: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write everything a resume needs; returns the final directory.

    ``extra_rng``: more generator states for ``rng.safetensors`` (other ranks', see ``run/dist.py``).
    """

    def save_model(tmp: Path) -> None:
        if has_lora(policy.model):
            policy.model.save_pretrained(tmp / "model", state_dict=merged_state_dict(policy.model))
            named = policy.model.named_parameters()
            trainable = {n: p.detach().cpu().contiguous() for n, p in named if p.requires_grad}
            save_file(trainable, tmp / "trainable.safetensors")
        else:
            policy.model.save_pretrained(tmp / "model")
        policy.processor.save_pretrained(tmp / "model")

    return write_checkpoint(directory, save_model, optimizer, state, extra_rng)


def write_checkpoint(
    directory: Path,
    save_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_rng: dict[str, torch.Tensor] | None = None,
) -> Path:
    """The layout above for any model: ``save_model(tmp_dir)`` writes the weights, this the rest.
    Written to ``step_N.tmp``, verified finite, checksummed into ``state.json`` and renamed (a kill
    mid-write leaves no half checkpoint; a NaN never reaches a checkpoint). Any failure removes
    the ``.tmp``; an ``OSError`` becomes a :class:`StorageError` naming the file."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    try:
        _write(tmp, save_model, optimizer, state, extra_rng)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, StorageError):
            raise
        raise StorageError.from_os(e, f"checkpoint {final.name} not written", tmp) from e
    except NonFiniteError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        good = last_good(final.parent.parent) or "none yet"
        raise NonFiniteError(
            f"checkpoint {final.name} not written: {e}. Last good checkpoint: {good}"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write(
    tmp: Path,
    save_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra_rng: dict[str, torch.Tensor] | None,
) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    if tmp.parent.exists() and not tmp.parent.is_dir():
        raise StorageError.from_os(
            OSError(errno.ENOTDIR, "is a file, not a folder"), "checkpoints", tmp.parent
        )
    tmp.mkdir(parents=True)
    save_model(tmp)
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(rng | (extra_rng or {}), tmp / "rng.safetensors")
    files = record_files(tmp)  # raises NonFiniteError (and the .tmp goes) if any tensor is NaN / inf
    (tmp / "state.json").write_text(json.dumps(state | {"finite": True, "files": files}, indent=2))


def load_checkpoint(directory: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG in place (weights are loaded by ``load_policy(dir/'model')``);
    returns ``state.json``. Every problem is a :class:`UserError` naming the file."""
    directory = Path(directory)
    state = read_state(directory)
    tensors = read_weights(directory / "optimizer.safetensors")
    meta_path = directory / "optimizer.json"
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        groups = meta["groups"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta_path}: not a readable optimizer.json ({type(e).__name__}: {e})") from None
    if len(groups) != len(optimizer.param_groups):
        raise UserError(
            f"{meta_path}: {len(groups)} parameter groups, this run's optimizer has "
            f"{len(optimizer.param_groups)}; resume with the config the run was started with"
        )
    idx = 0
    for g, saved in zip(optimizer.param_groups, groups, strict=True):
        g.update(saved)
        for p in g["params"]:
            st = {
                k.split(".", 1)[1]: v.to(p.device)
                for k, v in tensors.items()
                if k.split(".", 1)[0] == str(idx)
            }
            st.update(
                {k.split(".", 1)[1]: v for k, v in meta["scalars"].items() if k.split(".", 1)[0] == str(idx)}
            )
            if st:
                optimizer.state[p] = st
            idx += 1
    rng = read_weights(directory / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    return state


def load_trainable(directory: Path, model: torch.nn.Module) -> None:
    """Load ``trainable.safetensors`` into a model built like the saved one (base + same adapters)."""
    path = Path(directory) / "trainable.safetensors"
    saved = read_weights(path)
    params = dict(model.named_parameters())
    want = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != want:
        missing, extra = sorted(want - set(saved))[:3], sorted(set(saved) - want)[:3]
        raise ValueError(
            f"{path}: trainable parameters differ from this config's (missing {missing}, unexpected {extra});"
            " resume with the model.lora / vision.train the run was started with"
        )
    with torch.no_grad():
        for n, t in saved.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``step_N`` by number, unverified (a resume uses :func:`usable_checkpoint`)."""
    ckpts = step_dirs(run_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    ckpts = step_dirs(run_dir)
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
