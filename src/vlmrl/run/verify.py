"""Verified checkpoints: what a checkpoint records about its own files, and the check a resume runs.

A checkpoint's ``state.json`` holds, beside the step and data position, ``files``: the size and
SHA-256 of every other file in the checkpoint, taken after the tensors were read back and found
finite (``finite: true``). :func:`verify_checkpoint` recomputes them. So a truncated or rewritten
``model.safetensors`` (a full disk, a bad copy, 64 KB of NaN bytes written into the weights), an
empty ``optimizer.safetensors`` or a broken ``state.json`` is found *before* anything loads, and
:func:`usable_checkpoint` falls back to the newest checkpoint that passes, with a warning that
names the bad file. Checkpoints written before ``files`` existed get the structural check instead:
every safetensors file must parse and hold finite floating tensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from vlmrl.errors import MissingFileError, UserError

log = logging.getLogger(__name__)

#: The files every trainer's checkpoint has beside its model (``run/checkpoint.py``).
REQUIRED = ("state.json", "optimizer.safetensors", "optimizer.json", "rng.safetensors")

#: What a checkpoint that failed verification is renamed to (``step_6`` → ``step_6.bad``): kept for
#: the operator to inspect, and out of the ``step_*[0-9]`` pattern that resume and pruning read.
BAD_SUFFIX = ".bad"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def nonfinite_tensor(path: Path) -> str | None:
    """The name of the first floating tensor in safetensors ``path`` holding NaN or ±inf, else None.

    Raises :class:`UserError` naming the file when it does not parse (truncated, garbage header).
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                t = f.get_tensor(name)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return name
    except UserError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError or OSError on bad bytes
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable safetensors file ({first})") from None
    return None


def record_files(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``directory`` but ``state.json``;
    raises :class:`NonFiniteError` naming the first safetensors file with a NaN / inf tensor."""
    from vlmrl.errors import NonFiniteError

    files: dict[str, dict[str, Any]] = {}
    for p in sorted(Path(directory).rglob("*")):
        if not p.is_file() or p.name == "state.json":
            continue
        if p.suffix == ".safetensors":
            bad = nonfinite_tensor(p)
            if bad is not None:
                raise NonFiniteError(f"{p.relative_to(directory)}: tensor {bad!r} holds NaN or inf")
        files[p.relative_to(directory).as_posix()] = {"size": p.stat().st_size, "sha256": sha256(p)}
    return files


def read_state(directory: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint; a missing or broken file is one user error naming it."""
    path = Path(directory) / "state.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise UserError(f"{path}: expected an object with an integer 'step', got {str(state)[:80]!r}")
    return state


def verify_checkpoint(directory: Path) -> str | None:
    """``None`` when the checkpoint can be resumed from, else the first problem, naming the file."""
    directory = Path(directory)
    try:
        state = read_state(directory)
    except UserError as e:
        return str(e)
    if state.get("finite") is False:
        return f"{directory / 'state.json'}: marked non-finite"
    for name in REQUIRED:
        if not (directory / name).is_file():
            return f"{directory / name}: file not found"
    recorded = state.get("files")
    if recorded is None:  # written before checksums: parse every tensor file, check finiteness
        for p in sorted(directory.rglob("*.safetensors")):
            try:
                bad = nonfinite_tensor(p)
            except UserError as e:
                return str(e)
            if bad is not None:
                return f"{p}: tensor {bad!r} holds NaN or inf"
        return None
    for rel, want in recorded.items():
        p = directory / rel
        if not p.is_file():
            return f"{p}: file not found (recorded in state.json)"
        size = p.stat().st_size
        if size != want["size"]:
            return f"{p}: {size} bytes, state.json recorded {want['size']} (truncated or rewritten)"
        if sha256(p) != want["sha256"]:
            return f"{p}: SHA-256 differs from the one state.json recorded (the bytes changed)"
    return None


def step_dirs(run_dir: Path) -> list[Path]:
    """``checkpoints/step_N`` folders, oldest first (``.tmp`` and ``.bad`` ones excluded)."""
    found = (Path(run_dir) / "checkpoints").glob("step_*[0-9]")
    return sorted((p for p in found if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))


def _set_aside(ckpt: Path) -> Path:
    """Rename a failed checkpoint out of the way (``.bad``, ``.bad2``, …) and return the new path."""
    for i in range(1, 1000):
        target = ckpt.with_name(ckpt.name + BAD_SUFFIX + (str(i) if i > 1 else ""))
        if not target.exists():
            ckpt.rename(target)
            return target
    return ckpt


def _is_rank0() -> bool:
    """Rank 0 or a single process (``torch.distributed`` directly: ``run/dist`` imports this room's
    checkpoint code, so importing it here would be a circle)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def usable_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint under ``run_dir/checkpoints`` that passes :func:`verify_checkpoint`.

    Each newer one that fails is renamed ``step_N.bad`` with a warning naming the bad file, so
    pruning never deletes a good checkpoint in favour of it. ``None`` when there is no checkpoint;
    :class:`UserError` listing every problem when there are some and none passes.
    """
    problems = []
    for ckpt in reversed(step_dirs(run_dir)):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            if problems:
                log.warning("resuming from %s (the newest checkpoint that passes verification)", ckpt)
            return ckpt
        moved = _set_aside(ckpt) if _is_rank0() else ckpt  # one rank renames (torchrun: all verify)
        log.warning("checkpoint %s is not usable: %s; moved to %s", ckpt.name, problem, moved.name)
        problems.append(f"{ckpt.name}: {problem}")
    if problems:
        raise UserError(
            f"--resume: no usable checkpoint under {Path(run_dir) / 'checkpoints'}: " + "; ".join(problems)
        )
    return None


def last_good(run_dir: Path) -> Path | None:
    """For messages: the newest checkpoint that passes verification (None: there is none)."""
    for ckpt in reversed(step_dirs(run_dir)):
        if verify_checkpoint(ckpt) is None:
            return ckpt
    return None


def resume_checkpoint(run_dir: Path) -> Path:
    """What ``--resume`` continues from: :func:`usable_checkpoint`, which must exist."""
    ckpt = usable_checkpoint(run_dir)
    if ckpt is None:
        raise MissingFileError(f"--resume: no checkpoint under {Path(run_dir) / 'checkpoints'}")
    return ckpt
