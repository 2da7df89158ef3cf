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
- ``rng.safetensors``: torch CPU (and CUDA) generator states (multi-process: also
  ``rank{r}.torch_cpu`` for every other rank); ``state.json``: step, global data position.
A checkpoint is written to ``step_N.tmp`` and renamed, so a kill mid-write never leaves a
half checkpoint that ``--resume`` would pick.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlmrl.errors import MissingFileError, UserError
from vlmrl.models.lora import has_lora, merged_state_dict


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
    Written to ``step_N.tmp`` and renamed (a kill mid-write leaves no half checkpoint)."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
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
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def load_checkpoint(directory: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG in place (weights are loaded by ``load_policy(dir/'model')``)."""
    directory = Path(directory)
    tensors = read_weights(directory / "optimizer.safetensors")
    meta = json.loads((directory / "optimizer.json").read_text())
    idx = 0
    for g, saved in zip(optimizer.param_groups, meta["groups"], strict=True):
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
    return json.loads((directory / "state.json").read_text())


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
    ckpts = sorted(
        (Path(run_dir) / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1])
    )
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    ckpts = sorted(
        (Path(run_dir) / "checkpoints").glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1])
    )
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
