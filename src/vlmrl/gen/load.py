"""Which generator a ``model.path`` names, and the loader for it (the one place that knows both kinds).

``gen/model.py`` (our flow-matching UNet) and ``gen/hub.py`` (a diffusers pipeline) each load
their own kind; this module dispatches between them, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlmrl.errors import MissingFileError
from vlmrl.gen.hub import is_pipeline_source, load_pipeline_policy
from vlmrl.gen.model import load_flow_policy


def load_gen_policy(path: str | Path, device: str | torch.device = "cpu", **pipeline_knobs):
    """The generator ``model.path`` names: a ``vlmrl gen pretrain`` directory (``gen_model.json``)
    → :class:`vlmrl.gen.model.FlowPolicy`; a diffusers pipeline directory (``model_index.json``), a saved
    pipeline policy (``gen_pipeline.json``) or a hub id (``owner/name``, not a local path) →
    :class:`vlmrl.gen.hub.PipelinePolicy` built with ``pipeline_knobs`` (``PipelineSpec`` fields)."""
    p = Path(path)
    if is_pipeline_source(p):
        return load_pipeline_policy(str(path), device, **pipeline_knobs)
    if not p.exists() and str(path).count("/") == 1 and not str(path).startswith((".", "/", "~")):
        try:  # owner/name: a hub id, unless that fails too
            return load_pipeline_policy(str(path), device, **pipeline_knobs)
        except ValueError as e:
            raise MissingFileError(
                f"{path}: no such generator directory, and not a loadable hub pipeline ({e})"
            ) from None
    return load_flow_policy(p, device)
