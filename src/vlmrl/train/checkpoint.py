"""Checkpoints as safetensors + JSON only (no pickle): weights, optimizer, RNG, trainer state.

Layout of ``checkpoints/step_N/``:
- ``model/``: ``save_pretrained`` output (+ processor), loadable by ``load_policy``;
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW moments by parameter index, hyper-params;
- ``rng.safetensors``: torch CPU (and CUDA) generator states; ``state.json``: step, data position.
A checkpoint is written to ``step_N.tmp`` and renamed, so a kill mid-write never leaves a
half checkpoint that ``--resume`` would pick.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


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


def save_checkpoint(directory: Path, policy, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """Write everything a resume needs; returns the final directory."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.model.save_pretrained(tmp / "model")
    policy.processor.save_pretrained(tmp / "model")
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(rng, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def load_checkpoint(directory: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG in place (weights are loaded by ``load_policy(dir/'model')``)."""
    directory = Path(directory)
    tensors = load_file(directory / "optimizer.safetensors")
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
    rng = load_file(directory / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    return json.loads((directory / "state.json").read_text())


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
