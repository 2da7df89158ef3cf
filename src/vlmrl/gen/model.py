"""The prompt-conditioned flow-matching generator: a small diffusers ``UNet2DModel`` + prompt encoder.

Flow matching (rectified flow), the convention every ``gen`` module shares:
``x_t = (1 - t) * x0 + t * eps`` with ``t`` in [0, 1] (t = 0: image, t = 1: noise), and the network
predicts the velocity ``v = eps - x0`` (so ``dx_t / dt = v``). Sampling integrates from t = 1 to
t = 0; the Euler step is ``x_s = x_t + (s - t) * v`` with ``s < t``. The UNet's timestep input is
``t * 1000`` so its sinusoidal embedding sees the usual diffusion range.

The prompt encoder sums three ``nn.Embedding`` tables (colour, count, side) into the UNet's
time-embedding width (``4 * block_out_channels[0]``) and hands the sum to the UNet as its
``class_labels`` with ``class_embed_type="identity"``, i.e. it is added to the time embedding.
Each table is initialised N(0, 1/3) so the sum has the unit variance of a single diffusers class
embedding.

Checkpoints: ``model.safetensors`` (the state dict) + ``gen_model.json`` (the ``GenModelSpec``
fields and ``"format": 1``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlmrl.errors import MissingFileError, UserError
from vlmrl.gen.prompts import COLOURS, COUNTS, SIDES
from vlmrl.run.checkpoint import read_weights

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "gen_model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GenModelSpec:
    """Architecture of the generator (FACTS.md measures the defaults: 1.1 M params, 32 px)."""

    size: int = 32
    """Image side in pixels (square images)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet channels per resolution level; the image is halved between levels."""
    layers_per_block: int = 1
    """ResNet layers per down block (up blocks get one more, as in diffusers)."""
    norm_num_groups: int = 8
    """GroupNorm groups; must divide every entry of ``block_out_channels``."""
    attention_head_dim: int = 8
    """Channels per attention head in the attention blocks."""
    attention: bool = True
    """Self-attention in the lowest-resolution block (down, up and mid); False: convolutions only."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        boc = self.block_out_channels
        if not boc or any(c <= 0 for c in boc):
            raise ValueError(f"GenModelSpec.block_out_channels {boc}: need one or more positive ints")
        if self.size <= 0 or self.size % 2 ** (len(boc) - 1):
            raise ValueError(
                f"GenModelSpec.size {self.size}: must be a positive multiple of {2 ** (len(boc) - 1)} "
                f"for {len(boc)} levels"
            )
        if self.norm_num_groups <= 0 or any(c % self.norm_num_groups for c in boc):
            raise ValueError(
                f"GenModelSpec.norm_num_groups {self.norm_num_groups}: must divide every channel count {boc}"
            )
        if self.layers_per_block < 1:
            raise ValueError(f"GenModelSpec.layers_per_block {self.layers_per_block}: must be >= 1")
        if self.attention and (self.attention_head_dim <= 0 or boc[-1] % self.attention_head_dim):
            raise ValueError(
                f"GenModelSpec.attention_head_dim {self.attention_head_dim}: must divide {boc[-1]}"
            )

    @property
    def embed_dim(self) -> int:
        """Width of the time (and prompt) embedding: ``4 * block_out_channels[0]``."""
        return 4 * self.block_out_channels[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "GenModelSpec") -> GenModelSpec:
        """Build from a dict with exactly the spec's keys; errors name ``where`` and the keys."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        missing = [n for n in names if n not in d]
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown}; allowed {names}")
        if missing:
            raise UserError(f"{where}: missing key(s) {missing}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {e}") from None


class FlowPolicy(nn.Module):
    """Prompt-conditioned velocity field ``v_theta(x_t, t, prompt)`` (see the module docstring)."""

    def __init__(self, spec: GenModelSpec | None = None) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.spec = spec = spec or GenModelSpec()
        n = len(spec.block_out_channels)
        low_down = "AttnDownBlock2D" if spec.attention else "DownBlock2D"
        low_up = "AttnUpBlock2D" if spec.attention else "UpBlock2D"
        self.unet = UNet2DModel(
            sample_size=spec.size,
            in_channels=3,
            out_channels=3,
            block_out_channels=spec.block_out_channels,
            layers_per_block=spec.layers_per_block,
            norm_num_groups=spec.norm_num_groups,
            attention_head_dim=spec.attention_head_dim,
            down_block_types=("DownBlock2D",) * (n - 1) + (low_down,),
            up_block_types=(low_up,) + ("UpBlock2D",) * (n - 1),
            add_attention=spec.attention,
            class_embed_type="identity",
        )
        w = spec.embed_dim
        self.colour_emb = nn.Embedding(len(COLOURS), w)
        self.count_emb = nn.Embedding(len(COUNTS), w)
        self.side_emb = nn.Embedding(len(SIDES), w)
        for emb in (self.colour_emb, self.count_emb, self.side_emb):
            nn.init.normal_(emb.weight, std=3**-0.5)

    def encode_prompt(self, cond: torch.Tensor) -> torch.Tensor:
        """Prompt embedding ``[B, 4 * block_out_channels[0]]`` from ids ``[B, 3]``."""
        return self.colour_emb(cond[:, 0]) + self.count_emb(cond[:, 1]) + self.side_emb(cond[:, 2])

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted ``v = eps - x0`` at ``x_t`` ``[B, 3, H, W]``, ``t`` ``[B]`` in [0, 1], ids ``[B, 3]``."""
        t = t.to(device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])  # [B]
        emb = self.encode_prompt(cond.to(x.device))  # [B, 4 * C0]
        return self.unet(x, t * 1000.0, class_labels=emb, return_dict=False)[0]  # [B, 3, H, W]

    forward = velocity

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one chain state: the image itself, ``[3, size, size]`` (no VAE)."""
        return (3, self.spec.size, self.spec.size)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Chain state → image in [-1, 1]: the state is the image, clamped."""
        return x.clamp(-1.0, 1.0)

    def load_trained(self, model_dir: str | Path) -> None:
        """Load the weights :meth:`save` wrote into ``model_dir`` (a checkpoint, on resume)."""
        self.load_state_dict(load_flow_policy(model_dir).state_dict())

    def save(self, out_dir: str | Path) -> Path:
        """Write ``model.safetensors`` + ``gen_model.json`` into ``out_dir``; return the directory."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
        spec = {**self.spec.to_dict(), "format": FORMAT_VERSION}
        (out / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        return out


def load_flow_policy(model_dir: str | Path, device: str | torch.device = "cpu") -> FlowPolicy:
    """Load a ``FlowPolicy`` saved by ``FlowPolicy.save``.

    Returned in eval mode: there is no dropout or batch norm, but CPU kernels differ between
    train and eval mode at the 1e-7 level (a 1x1 conv), so compare outputs in one mode.
    Raises :class:`~vlmrl.errors.MissingFileError` (missing directory or file) or
    :class:`~vlmrl.errors.UserError` (unreadable JSON,
    wrong/missing spec keys, corrupt safetensors, tensors that do not fit the spec), each a single
    line naming the file.
    """

    d = Path(model_dir)
    if not d.is_dir():
        raise MissingFileError(f"{d}: generator directory not found")
    spec_path, weights_path = d / SPEC_FILE, d / WEIGHTS_FILE
    for p in (spec_path, weights_path):
        if not p.is_file():
            raise MissingFileError(
                f"{p}: file not found (a generator directory holds {SPEC_FILE} + {WEIGHTS_FILE})"
            )
    try:
        raw = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{spec_path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{spec_path}: expected a JSON object, got {type(raw).__name__}")
    version = raw.pop("format", None)
    if version != FORMAT_VERSION:
        raise UserError(f"{spec_path}: format {version!r} not supported (expected {FORMAT_VERSION})")
    spec = GenModelSpec.from_dict(raw, where=str(spec_path))
    state = read_weights(weights_path)
    model = FlowPolicy(spec)
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) e.g. {unexpected[0]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[0]}")
        raise UserError(f"{weights_path}: does not match the spec in {SPEC_FILE}: " + "; ".join(parts))
    model.load_state_dict(state)
    return model.to(device).eval()


def _device(gen: nn.Module) -> torch.device:
    return next(gen.parameters()).device


@torch.no_grad()
def sample_ode(
    gen: FlowPolicy,
    cond: torch.Tensor,
    steps: int = 20,
    generator: torch.Generator | None = None,
    x1: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler-integrate the flow ODE from noise ``x1`` (t = 1) to an image (t = 0).

    ``t_k = 1 - k / steps``; ``x_{t_{k+1}} = x_{t_k} + (t_{k+1} - t_k) * v(x_{t_k}, t_k, cond)``.
    ``x1`` ``[B, *gen.latent_shape]`` defaults to ``randn`` drawn from ``generator``. Returns images
    ``[B, 3, size, size]`` in [-1, 1] (``gen.decode`` of the last state: the state itself clamped
    for :class:`FlowPolicy`, the VAE's decoding for a pipeline).
    """
    if steps < 1:
        raise ValueError(f"sample_ode steps {steps}: must be >= 1")
    dev = _device(gen)
    cond = cond.to(dev)
    b = cond.shape[0]
    if x1 is None:
        gdev = generator.device if generator is not None else dev
        x1 = torch.randn((b, *gen.latent_shape), generator=generator, device=gdev)
    x = x1.to(dev, torch.float32)  # [B, *latent_shape]
    ts = torch.linspace(1.0, 0.0, steps + 1, device=dev)
    for k in range(steps):
        t, t_next = ts[k], ts[k + 1]
        v = gen.velocity(x, t.expand(b), cond)  # [B, *latent_shape]
        x = x + (t_next - t) * v
    return gen.decode(x)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images ``[B, 3, H, W]`` in [-1, 1] -> uint8 numpy ``[B, H, W, 3]``: ``round((x + 1) * 127.5)``."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(imgs: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` in [-1, 1]: ``x / 127.5 - 1``."""
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
