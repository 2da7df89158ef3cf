"""The finite guard: a NaN or inf never reaches the weights, the optimizer or a checkpoint.

Where non-finite values come from and what happens to them:
- **rewards or advantages** (a reward plugin returns ``nan``, a judge returns ``inf``): the step's
  update is skipped whole, before any forward; the count is logged (``guard/nonfinite_rewards``);
- **loss or gradient norm** (an overflow in the forward or backward, e.g. ``train.lr`` far too
  high): that optimizer step is skipped and its gradients dropped (``train/update.py``);
- **weights** after an update, or **sampling probabilities** (the policy's outputs are no longer
  finite): nothing can be skipped any more; the run stops with one :class:`NonFiniteError` line.

Every skipped update is counted in ``guard/skipped_updates``. After ``train.nonfinite_patience``
steps in a row with a skipped update the run stops with one line naming the cause, the step and
the last good checkpoint. A checkpoint is written only after a step whose update applied (and the
checkpoint writer reads every tensor back and refuses NaN / inf, ``run/verify.py``), so the
checkpoints on disk are always finite and ``--resume`` continues from the last good one. Decisions
are taken on values summed over ranks, so every rank skips the same updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vlmrl.errors import NonFiniteError
from vlmrl.run.dist import all_reduce_sum
from vlmrl.run.verify import last_good

#: The metrics the guard logs on every step (0 on a healthy one).
GUARD_KEYS = ("guard/skipped_updates", "guard/nonfinite_rewards")


def count_nonfinite(*tensors: torch.Tensor) -> list[int]:
    """NaN / ±inf entries of each tensor, summed over every rank (one all-reduce)."""
    local = torch.tensor([float((~torch.isfinite(t)).sum()) for t in tensors], dtype=torch.float64)
    return [int(x) for x in all_reduce_sum(local)]


def weights_finite(params: list[torch.nn.Parameter]) -> bool:
    """Whether every parameter is finite: one norm per tensor, one device sync for all of them."""
    if not params:
        return True
    norms = torch.stack([torch.linalg.vector_norm(p.detach().float()) for p in params])
    return bool(torch.isfinite(norms).all())


class FiniteGuard:
    """Skips updates on non-finite values, counts them, and stops the run when skipping cannot help.

    ``patience``: steps in a row with a skipped update before the run stops (``train.nonfinite_patience``).
    """

    def __init__(self, model: torch.nn.Module, run_dir: Path, patience: int):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.run_dir = Path(run_dir)
        self.patience = patience
        self.in_a_row = 0  # steps in a row whose update was (partly) skipped
        self.cause = ""

    @property
    def healthy(self) -> bool:
        """The last step's update applied in full: its state may be checkpointed."""
        return self.in_a_row == 0

    def update(
        self, step: int, rewards: torch.Tensor, advantages: torch.Tensor, run: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """``run()`` (the policy update) unless a reward or advantage is non-finite; then the guard's
        metrics, the step counted, and the weights checked. Raises :class:`NonFiniteError` when the
        weights hold NaN / inf or ``patience`` steps in a row skipped their update."""
        bad_rewards, bad_adv = count_nonfinite(rewards, advantages)
        if bad_rewards or bad_adv:
            what = f"{bad_rewards} reward(s)" if bad_rewards else f"{bad_adv} advantage(s)"
            metrics: dict[str, Any] = {"guard/skipped_updates": 1, "actor/optimizer_steps": 0}
            self.cause = f"{what} were NaN or inf (check the reward functions)"
        else:
            metrics = run()
            metrics.setdefault("guard/skipped_updates", 0)
            self.cause = "the loss or gradient norm was NaN or inf (train.lr too high?)"
        metrics["guard/nonfinite_rewards"] = bad_rewards
        self.in_a_row = self.in_a_row + 1 if metrics["guard/skipped_updates"] else 0
        if not weights_finite(self.params):
            self.stop(step + 1, "the weights hold NaN or inf after the update (train.lr too high?)")
        if self.in_a_row >= self.patience:
            self.stop(
                step + 1,
                f"{self.in_a_row} steps in a row skipped their update (train.nonfinite_patience="
                f"{self.patience}); the last one because {self.cause}",
            )
        return metrics

    def stop(self, step: int, why: str) -> None:
        """Raise the one-line :class:`NonFiniteError` for ``step``."""
        good = last_good(self.run_dir)
        then = (
            "none yet (start again)"
            if good is None
            else f"{good} (vlmrl train CONFIG --resume continues from it)"
        )
        raise NonFiniteError(
            f"step {step}: {why}; stopped without checkpointing it. Last good checkpoint: {then}"
        )

    @contextmanager
    def sampling(self, step: int) -> Iterator[None]:
        """Turn the sampler's "probability tensor contains inf / nan" into :class:`NonFiniteError`:
        the policy's outputs stopped being finite (weights that are finite but far too large)."""
        try:
            yield
        except RuntimeError as e:
            msg = str(e).lower()
            if "inf" in msg and "nan" in msg and "probability" in msg:
                self.stop(step + 1, "sampling met NaN / inf probabilities: the policy's outputs diverged")
            raise
