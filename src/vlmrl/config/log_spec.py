"""``log.*``: where a run writes and which trackers mirror it (its own module to keep ``schema.py`` small).

``schema.py`` imports :class:`LogConfig` into the tree; ``run/metrics.py`` takes it as its spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LogConfig:
    run_dir: str = "runs/grpo"
    """Where config, metrics, rollouts and checkpoints go. ``vlmrl train`` refuses a folder that
    already holds a run (``metrics.jsonl`` or ``checkpoints/``) unless ``--resume`` or ``--overwrite``."""
    tensorboard: bool = True
    """Write tb/ event files: the scalars, and each step's logged groups as text and images."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb extra and a login); wandb is imported only then."""
    wandb_project: str = "vlmrl"
    """The wandb project the run goes to."""
    wandb_name: str | None = None
    """The wandb run's display name (None: the run directory's folder name)."""
    wandb_tags: list[str] = field(default_factory=list)
    """Tags on the wandb run, e.g. ``[grpo, count]``."""
    groups_per_step: int = 4
    """Prompts per step whose whole group (all G completions, rewards, advantages) goes to
    ``rollouts/step_*.jsonl``, the report's group view and the tb / wandb completions table (0: none)."""
    progress: bool = True
    """Show a rich progress bar (``vlmrl train`` and ``vlmrl sft``)."""
