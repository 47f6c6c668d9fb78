"""Charged-particle n-body data ("nbody_small" protocol of EGNN / LPS / Frame Averaging).

Simulator (docs/design.md §5), vectorised with numpy over many systems at once:

* ``n = 5`` particles, charges ``q_i = ±1`` (p = ½), positions ``~ N(0, 1)``, velocities of a random
  direction with norm 0.5;
* Coulomb-like force ``F_i = Σ_{j≠i} q_i q_j (x_i − x_j) / |x_i − x_j|³``, each component clipped to
  ``±100``; leapfrog (kick-drift) with ``dt = 1e-3``, ``5000`` steps, state saved every ``100`` steps
  (49 frames: steps 100, 200, …, 4900);
* task: from frame 30 (positions, velocities, charges) predict the positions at frame 40.

Inputs are packed as ``x`` (B, N, 7) = ``[position (3), velocity (3), charge (1)]``, rep
``"irreps:1x1o+1x1o+1x0e"``; targets ``y`` (B, N, 3) positions, rep ``"points"`` (or ``"irreps:1x1o"``).
Splits 3000 / 2000 / 2000 are simulated from seeds ``seed``, ``seed + 1``, ``seed + 2`` and cached
to ``.cache/nbody/`` as ``.npz`` with a SHA-256 checksum (recomputed and verified on load).

Examples
--------
>>> ds = load_nbody("train", size="tiny", root=None)
>>> x, y = ds[0]; tuple(x.shape), tuple(y.shape)
((5, 7), (5, 3))
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["NBodyConfig", "simulate", "integrate", "load_nbody", "nbody_tensors", "NBODY_REP_IN", "NBODY_REP_OUT",
           "SPLIT_SIZES", "pack_inputs"]

log = logging.getLogger(__name__)

NBODY_REP_IN = "irreps:1x1o+1x1o+1x0e"
NBODY_REP_OUT = "points"
#: number of systems per split for each preset size
SPLIT_SIZES = {"full": {"train": 3000, "valid": 2000, "test": 2000},
               "small": {"train": 500, "valid": 200, "test": 200},
               "tiny": {"train": 16, "valid": 8, "test": 8}}
_SPLIT_OFFSET = {"train": 0, "valid": 1, "test": 2}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class NBodyConfig:
    """Simulation protocol (defaults = the published ``nbody_small`` set)."""

    n_particles: int = 5
    dim: int = 3
    dt: float = 1e-3
    steps: int = 5000
    save_every: int = 100
    vel_norm: float = 0.5
    loc_std: float = 1.0
    max_force: float = 100.0
    interaction: float = 1.0
    frame_in: int = 30
    frame_out: int = 40

    def __post_init__(self) -> None:
        if self.n_particles < 2 or self.steps < self.save_every or self.save_every < 1:
            raise ValueError(f"config: need n_particles >= 2 and steps >= save_every >= 1, got {self}")
        n_frames = self.steps // self.save_every - 1
        if not 0 <= self.frame_in < self.frame_out < n_frames:
            raise ValueError(f"frame_in/frame_out: need 0 <= frame_in < frame_out < {n_frames} "
                             f"saved frames, got {self.frame_in}, {self.frame_out}")

    @property
    def frame_time(self) -> float:
        """Simulated time between the input and the output frame, ``(frame_out − frame_in) · save_every · dt``."""
        return (self.frame_out - self.frame_in) * self.save_every * self.dt

    @property
    def n_frames(self) -> int:
        return self.steps // self.save_every - 1


def _forces(loc: np.ndarray, qq: np.ndarray, cfg: NBodyConfig) -> np.ndarray:
    """Clipped Coulomb-like forces for ``loc`` (S, N, D) and charge products ``qq`` (S, N, N)."""
    diff = loc[:, :, None, :] - loc[:, None, :, :]                 # x_i - x_j
    r2 = (diff ** 2).sum(-1)
    n = loc.shape[1]
    r2[:, np.arange(n), np.arange(n)] = 1.0                        # diagonal: no self force
    size = cfg.interaction * qq / r2 ** 1.5
    size[:, np.arange(n), np.arange(n)] = 0.0
    F = (size[..., None] * diff).sum(2)
    return np.clip(F, -cfg.max_force, cfg.max_force)


def simulate(n_sims: int, seed: int, cfg: NBodyConfig = NBodyConfig(), chunk: int = 1000) -> dict:
    """Simulate ``n_sims`` independent systems; returns numpy arrays.

    Returns
    -------
    dict with ``loc`` and ``vel`` (S, T, N, D) float64 at the ``T = steps // save_every - 1`` saved
    frames and ``charges`` (S, N).

    Examples
    --------
    >>> out = simulate(3, seed=0, cfg=NBodyConfig(steps=300, frame_in=0, frame_out=1))
    >>> out["loc"].shape, sorted(set(out["charges"].ravel().tolist())) <= [-1.0, 1.0]
    ((3, 2, 5, 3), True)
    """
    if n_sims < 1:
        raise ValueError(f"n_sims: expected >= 1, got {n_sims}")
    rng = np.random.default_rng(seed)
    n, D = cfg.n_particles, cfg.dim
    charges = rng.choice(np.array([-1.0, 1.0]), size=(n_sims, n))
    loc0 = rng.standard_normal((n_sims, n, D)) * cfg.loc_std
    vel0 = rng.standard_normal((n_sims, n, D))
    vel0 = vel0 * cfg.vel_norm / np.linalg.norm(vel0, axis=-1, keepdims=True)
    return integrate(loc0, vel0, charges, cfg, chunk) | {"charges": charges}


def integrate(loc0: np.ndarray, vel0: np.ndarray, charges: np.ndarray, cfg: NBodyConfig = NBodyConfig(),
              chunk: int = 1000) -> dict:
    """Leapfrog-integrate systems from positions / velocities ``(S, N, D)`` and charges ``(S, N)``.

    Returns ``loc`` and ``vel`` ``(S, T, N, D)`` at the ``T = cfg.n_frames`` saved frames (what
    :func:`simulate` returns for its random initial states).

    Examples
    --------
    >>> cfg = NBodyConfig(steps=300, frame_in=0, frame_out=1)
    >>> out = integrate(np.zeros((1, 5, 3)) + np.arange(5.0)[:, None], np.ones((1, 5, 3)), np.ones((1, 5)), cfg)
    >>> out["loc"].shape
    (1, 2, 5, 3)
    """
    n_sims = loc0.shape[0]
    T = cfg.n_frames
    locs = np.empty((n_sims, T) + loc0.shape[1:])
    vels = np.empty((n_sims, T) + loc0.shape[1:])
    for a in range(0, n_sims, chunk):
        b = min(n_sims, a + chunk)
        loc, vel = loc0[a:b].astype(np.float64), vel0[a:b].astype(np.float64)
        qq = charges[a:b, :, None] * charges[a:b, None, :]
        vel += cfg.dt * _forces(loc, qq, cfg)                      # initial half kick
        frame = 0
        for i in range(1, cfg.steps):
            loc += cfg.dt * vel
            if i % cfg.save_every == 0 and frame < T:
                locs[a:b, frame], vels[a:b, frame] = loc, vel
                frame += 1
                if frame == T:                                     # later steps change no saved frame
                    break
            vel += cfg.dt * _forces(loc, qq, cfg)
    return {"loc": locs, "vel": vels}


def pack_inputs(loc: np.ndarray | torch.Tensor, vel, charges) -> torch.Tensor:
    """Pack positions (B, N, 3), velocities (B, N, 3) and charges (B, N) into ``(B, N, 7)``."""
    loc, vel, charges = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (loc, vel, charges))
    return torch.cat([loc, vel, charges.unsqueeze(-1)], dim=-1)


def _checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode()); h.update(str(a.dtype).encode()); h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_stem(root: Path, n_sims: int, seed: int, cfg: NBodyConfig) -> Path:
    tag = hashlib.sha256(repr((asdict(cfg), _CACHE_VERSION)).encode()).hexdigest()[:10]
    return root / f"nbody_n{n_sims}_s{seed}_{tag}"


def _load_or_simulate(n_sims: int, seed: int, cfg: NBodyConfig, root: Optional[Path]) -> dict:
    if root is None:
        return simulate(n_sims, seed, cfg)
    from ..io import atomic_write_bytes, read_json, write_json
    stem = _cache_stem(root, n_sims, seed, cfg)
    npz, meta = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if npz.exists() and meta.exists():
        try:
            with np.load(npz) as f:
                arrays = {k: f[k] for k in f.files}
            if _checksum(arrays) == read_json(meta)["sha256"]:
                return arrays
            log.warning("nbody cache %s failed its checksum; regenerating", npz)
        except Exception as err:  # noqa: BLE001 - any unreadable cache (BadZipFile, OSError, ...) is regenerated
            log.warning("nbody cache %s unreadable (%s); regenerating", npz, err)
    log.info("simulating %d n-body systems (seed %d) -> %s", n_sims, seed, npz)
    arrays = simulate(n_sims, seed, cfg)
    arrays = {"loc": arrays["loc"].astype(np.float32), "vel": arrays["vel"].astype(np.float32),
              "charges": arrays["charges"].astype(np.float32)}
    import io as _io
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(npz, buf.getvalue())
    write_json(meta, {"sha256": _checksum(arrays), "n_sims": n_sims, "seed": seed, "config": asdict(cfg)})
    return arrays


def nbody_tensors(split: str = "train", size: str | int = "full", seed: int = 43,
                  root: Optional[str | os.PathLike] = ".cache/nbody",
                  cfg: NBodyConfig = NBodyConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` float32 tensors of a split: ``x`` (S, N, 7) at ``frame_in``, ``y`` (S, N, 3) at ``frame_out``.

    ``size``: ``"full"`` (3000/2000/2000), ``"small"``, ``"tiny"`` or an explicit number of systems.
    ``root=None`` disables the cache.
    """
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split: expected one of {sorted(_SPLIT_OFFSET)}, got {split!r}")
    if isinstance(size, str):
        if size not in SPLIT_SIZES:
            raise ValueError(f"size: expected one of {sorted(SPLIT_SIZES)} or an int, got {size!r}")
        n_sims = SPLIT_SIZES[size][split]
    else:
        n_sims = int(size)
    a = _load_or_simulate(n_sims, seed + _SPLIT_OFFSET[split], cfg, None if root is None else Path(root))
    fi, fo = cfg.frame_in, cfg.frame_out
    x = pack_inputs(a["loc"][:, fi], a["vel"][:, fi], a["charges"])
    y = torch.as_tensor(np.asarray(a["loc"][:, fo]), dtype=torch.float32)
    return x, y


def load_nbody(split: str = "train", size: str | int = "full", seed: int = 43,
               root: Optional[str | os.PathLike] = ".cache/nbody",
               cfg: NBodyConfig = NBodyConfig()) -> TensorDataset:
    """The n-body task as a ``TensorDataset`` of ``(x (N, 7), y (N, 3))`` pairs (see module doc)."""
    return TensorDataset(*nbody_tensors(split, size, seed, root, cfg))
