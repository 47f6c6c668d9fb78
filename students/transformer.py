"""``transformer``: a ViT-style student, one token stage per teacher layer.

Stage ``l`` maps feature ``l-1`` to feature ``l``:

    tokens  t_j = E vec(patch_j(h)) + p_j      (images: p×p patches with a ``halo``-pixel margin
                                                (wrapped around, like the circular teachers' features);
                                                point clouds: one token per point)
    blocks  t ← t + MHSA(LN(t));  t ← t + MLP(LN(t))     (pre-LN, ``depth`` times), then LN
    readout z = fold(R t_j)  cropped to the teacher's feature shape,  f_l = σ_l(z)

The position embeddings ``p_j`` are learned and absolute, so the student is *not* equivariant to
translations, rotations or permutations until it learns to be.

Examples
--------
>>> import torch
>>> s = TransformerStudent(feature_shapes=[[1, 8, 8], [4, 6, 6]], reps=["image", "image"], dim=16, patch=2)
>>> s(torch.randn(2, 1, 8, 8)).shape
torch.Size([2, 4, 6, 6])
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from symclone.registry import register_student

from ._base import StudentBase

__all__ = ["TransformerStudent", "TokenStage"]



class TokenStage(nn.Module):
    """Tokenize a feature, run pre-LN transformer blocks, read tokens out to the next feature."""

    def __init__(self, shape_in: Sequence[int], shape_out: Sequence[int], image: bool, dim: int, depth: int,
                 heads: int, patch: int, mlp_ratio: int, halo: int = 0):
        super().__init__()
        self.image, self.shape_in, self.shape_out = image, tuple(shape_in), tuple(shape_out)
        if image:
            if len(shape_in) != 3 or len(shape_out) != 3:
                raise ValueError(f"feature_shapes: image features must be (C, H, W), got {shape_in} -> {shape_out}")
            C, H, W = shape_in
            self.patch = p = max(1, min(patch, H, W))
            self.halo = int(halo)
            self.grid = (math.ceil(H / p), math.ceil(W / p))
            Co, Ho, Wo = shape_out
            self.out_patch = (math.ceil(Ho / self.grid[0]), math.ceil(Wo / self.grid[1]))
            n_tokens, tok_in = self.grid[0] * self.grid[1], C * (p + 2 * self.halo) ** 2
            tok_out = Co * self.out_patch[0] * self.out_patch[1]
        else:
            if len(shape_in) != 2 or len(shape_out) != 2 or shape_in[0] != shape_out[0]:
                raise ValueError(f"feature_shapes: point features must be (N, d) with the same N, got "
                                 f"{shape_in} -> {shape_out}")
            n_tokens, tok_in, tok_out = shape_in[0], shape_in[1], shape_out[1]
        self.embed = nn.Linear(tok_in, dim)
        self.pos = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=mlp_ratio * dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.readout = nn.Linear(dim, tok_out)

    def tokens(self, h: torch.Tensor) -> torch.Tensor:
        """The raw tokens of ``h (N, *shape_in)``: point features as they are ``(N, n_points, d)``; for
        images the ``p×p`` patches with their ``halo``-pixel circular margin, flattened
        ``(N, T, C·(p + 2·halo)²)`` (``T = ceil(H/p)·ceil(W/p)``, the image zero-padded to the grid)."""
        if not self.image:
            return h
        C, H, W = self.shape_in
        p, (gh, gw) = self.patch, self.grid
        h = F.pad(h, (0, gw * p - W, 0, gh * p - H))
        if self.halo:
            e = self.halo
            h = F.pad(h, (e, e, e, e), mode="circular")
        return F.unfold(h, kernel_size=p + 2 * self.halo, stride=p).transpose(1, 2)  # (N, T, C (p+2e)^2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h (N, *shape_in)`` -> ``(N, *shape_out)``: embed tokens, add positions, run the blocks,
        read each token out (images: folded back onto the output grid and cropped)."""
        t = self.embed(self.tokens(h)) + self.pos
        for blk in self.blocks:
            t = blk(t)
        r = self.readout(self.norm(t))
        if not self.image:
            return r
        Co, Ho, Wo = self.shape_out
        (gh, gw), (oh, ow) = self.grid, self.out_patch
        z = F.fold(r.transpose(1, 2), output_size=(gh * oh, gw * ow), kernel_size=(oh, ow), stride=(oh, ow))
        return z[..., :Ho, :Wo]


@register_student("transformer")
class TransformerStudent(StudentBase):
    """Transformer student with a linear read-out per cloned teacher layer.

    Parameters
    ----------
    feature_shapes, reps, activations : the teacher's layout (input first).
    dim, depth, heads, mlp_ratio : token width, pre-LN blocks per stage, attention heads, MLP width ratio.
    patch : patch size for image features (tokens = ceil(H/patch) × ceil(W/patch)).
    halo : extra pixels around each patch in its token (overlapping patches; 0 = plain ViT patches).
    seed : initialisation seed.
    teacher : take the layout from this teacher (``like``).
    """

    def __init__(self, feature_shapes: Optional[Sequence[Sequence[int]]] = None,
                 reps: Optional[Sequence[str]] = None, activations: Optional[Sequence[str]] = None,
                 dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 4, mlp_ratio: int = 2,
                 halo: int = 1, seed: Optional[int] = 0, teacher: Any = None):
        super().__init__()
        self._init_layout(feature_shapes, reps, activations, teacher)
        if dim % heads:
            raise ValueError(f"dim: must be divisible by heads ({heads}), got {dim}")
        self.config = {"name": "transformer", "kwargs": dict(
            feature_shapes=[list(s) for s in self.feature_shapes], reps=[str(r) for r in self.reps],
            activations=list(self.activations), dim=dim, depth=depth, heads=heads, patch=patch,
            mlp_ratio=mlp_ratio, halo=halo, seed=seed)}
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.layers = nn.ModuleList([
                TokenStage(self.feature_shapes[l - 1], self.feature_shapes[l],
                           self.reps[l - 1].is_image, dim, depth, heads, patch, mlp_ratio, halo)
                for l in range(1, self.num_layers + 1)])

    @classmethod
    def like(cls, teacher: Any, **kwargs: Any) -> "TransformerStudent":
        """A transformer student with ``teacher``'s feature layout and nonlinearities."""
        return cls(teacher=teacher, **kwargs)

    def _pre(self, l: int, h: torch.Tensor, params: Optional[torch.Tensor]) -> torch.Tensor:
        nd = len(self.feature_shapes[l - 1])
        lead = h.shape[: h.ndim - nd]
        z = self.layers[l - 1](h.reshape(-1, *self.feature_shapes[l - 1]))
        return z.reshape(*lead, *self.feature_shapes[l])
