"""Classifiers for the downstream comparison: baselines, the GCNN, and cloned students with a head.

* :class:`MLPBaseline` — the paper's deep MLP ``in-256-256-512-512-256-128-C``.
* :class:`CNNBaseline` — a small CNN (3 conv + max-pool stages, flatten, linear); no exact symmetry.
* :class:`FeatureClassifier` — any feature network (a teacher such as ``gcnn_c4`` trained from
  scratch, or a cloned student) followed by :class:`InvariantHead` (``"c4"``: max over the 4
  orientation channels of each regular field, orbit sum over the 4 rotations, 2x2 average pool,
  MLP; ``"t2"``: global mean and max, MLP). On exactly equivariant features the logits are
  exactly invariant (C4 resp. T(2)).
* :class:`ClonedNet` — a :class:`FeatureClassifier` whose feature network is a cloned student; it
  declares ``cloned_parameters()`` = every parameter of the student (block matrices ``W_b``,
  kernel maps, dense layers with their cloned bias vectors), which
  :func:`~symclone.finetune.finetune` freezes or anchors. Its own ``field_bias`` — one scalar per
  output field of the last cloned layer, added before the nonlinearity — is not cloned structure
  and trains in every mode, so ``frozen`` trains kernels, biases and the head. With
  ``kernels (F, P)`` it applies a one-layer blocks student once per learnable kernel
  (``z_f = sum_b h_b(k_f) W_b x``, ``F`` output fields sharing the cloned ``W_b``) — the
  "GCNN-shaped network built from cloned block layers".

Examples
--------
>>> m = MLPBaseline((1, 28, 28), 20)
>>> m(torch.rand(3, 1, 28, 28)).shape
torch.Size([3, 20])
>>> sum(p.numel() for p in m.parameters()) > 800_000
True
"""
from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

__all__ = ["MLPBaseline", "CNNBaseline", "InvariantHead", "FeatureClassifier", "ClonedNet",
           "MLP_HIDDEN", "count_parameters"]

MLP_HIDDEN = (256, 256, 512, 512, 256, 128)
log = logging.getLogger(__name__)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` when ``trainable_only``).

    Examples
    --------
    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class MLPBaseline(nn.Module):
    """Flatten -> ReLU MLP with hidden widths :data:`MLP_HIDDEN` -> ``num_classes`` logits."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = MLP_HIDDEN):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNNBaseline(nn.Module):
    """``[conv3x3 -> ReLU -> maxpool2] x 3`` (16, 32, 64 channels) -> flatten -> linear.

    Examples
    --------
    >>> CNNBaseline((1, 48, 48), 20)(torch.rand(2, 1, 48, 48)).shape
    torch.Size([2, 20])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32, 64)):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for co in channels:
            layers += [nn.Conv2d(c, co, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = co, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class InvariantHead(nn.Module):
    """Pool features ``(B, C, H, W)`` invariantly, then ``Linear-ReLU-Linear`` to logits.

    ``rep == "regular"`` (``C = 4F``): first max over each field's 4 orientation channels
    (``C -> F``; a rotation of the input then only rotates the map). Then by ``pool``:

    * ``"c4"``: orbit sum ``m + rot90(m) + rot180(m) + rot270(m)`` (exactly invariant under
      ``rot90`` of the map), 2x2 average pooling, flatten — keeps spatial detail, C4-invariant;
    * ``"t2"``: power spectrum ``|rfft2(m)|^2`` of every channel, ``log1p`` and 2x2 average pooled
      over frequencies — exactly invariant to cyclic shifts (a shift only changes the phases) while
      keeping the spatial-frequency content; plus the global max of each channel.

    Examples
    --------
    >>> h = InvariantHead((8, 6, 6), 10, rep="regular", pool="c4")
    >>> x = torch.randn(2, 8, 6, 6)
    >>> gx = torch.rot90(x.view(2, 2, 4, 6, 6).roll(1, 2).view(2, 8, 6, 6), 1, (-2, -1))
    >>> torch.allclose(h(x), h(gx), atol=1e-6)
    True
    >>> h = InvariantHead((3, 6, 6), 10, pool="t2")
    >>> torch.allclose(h(x[:, :3]), h(torch.roll(x[:, :3], (2, 5), (-2, -1))), atol=1e-6)
    True
    """

    def __init__(self, shape: Sequence[int], num_classes: int, rep: str = "image", pool: str = "c4",
                 hidden: int = 64):
        super().__init__()
        C, H, W = (int(s) for s in shape)
        if rep == "regular" and C % 4:
            raise ValueError(f"shape: regular fields need a multiple of 4 channels, got {C}")
        if pool not in ("c4", "t2"):
            raise ValueError(f"pool: expected 'c4' or 't2', got {pool!r}")
        if pool == "c4" and H != W:
            raise ValueError(f"pool: 'c4' needs square features, got {H}x{W}")
        self.rep, self.pool_kind, self.shape = rep, pool, (C, H, W)
        F = C // 4 if rep == "regular" else C
        width = F * (H // 2) * (W // 2) if pool == "c4" else F * (H // 2) * ((W // 2 + 1) // 2) + F
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """Invariant summary (B, D) of the features ``h`` (B, C, H, W) under the head's group (see the class)."""
        if h.ndim != 4 or tuple(h.shape[1:]) != self.shape:
            raise ValueError(f"h: expected features (B, {', '.join(map(str, self.shape))}), got {tuple(h.shape)}")
        if self.rep == "regular":
            h = h.view(h.shape[0], -1, 4, *h.shape[-2:]).amax(dim=2)
        if self.pool_kind == "t2":
            spec = torch.fft.rfft2(h, norm="ortho").abs().pow(2).log1p()   # (B, F, H, W // 2 + 1)
            spec = nn.functional.avg_pool2d(spec, 2).flatten(1)
            return torch.cat([spec, h.amax(dim=(-2, -1))], dim=1)
        h = h + torch.rot90(h, 1, (-2, -1)) + torch.rot90(h, 2, (-2, -1)) + torch.rot90(h, 3, (-2, -1))
        return nn.functional.avg_pool2d(h, 2).flatten(1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(h))


def _rep_kind(rep) -> str:
    return getattr(rep, "kind", str(rep))


def _features_shape(net: nn.Module) -> tuple:
    shapes = getattr(net, "feature_shapes", None)
    if not shapes:
        raise ValueError("net: expected a teacher/student with feature_shapes (list of per-layer shapes)")
    return tuple(shapes[-1])


class FeatureClassifier(nn.Module):
    """``logits = head(net.forward_features(x)[-1])`` with an :class:`InvariantHead`.

    ``net`` is a teacher or student following the contracts (``forward_features``, ``reps``,
    ``feature_shapes``). All parameters train (e.g. the GCNN teacher trained from scratch).
    """

    def __init__(self, net: nn.Module, num_classes: int, pool: str = "c4", hidden: int = 64,
                 feature_shape: Optional[Sequence[int]] = None):
        super().__init__()
        self.net = net
        shape = tuple(feature_shape) if feature_shape is not None else _features_shape(net)
        if len(shape) != 3:
            raise ValueError(f"net: the head needs image-like last features (C, H, W), got {shape}")
        self.head = InvariantHead(shape, num_classes, _rep_kind(net.reps[-1]), pool, hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map for the inputs ``x`` (what the head pools)."""
        return self.net.forward_features(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _bias_layout(rep, channels: int) -> Optional[tuple[int, int]]:
    """``(fields, channels per field)`` of a feature whose per-field constant is G-invariant:
    ``image`` channels (T(2), C4 acting on the grid) are their own fields; ``regular`` C4 fields
    span 4 orientation channels. ``None`` for other representations."""
    kind = _rep_kind(rep)
    if kind == "image":
        return channels, 1
    if kind == "regular" and channels % 4 == 0:
        return channels // 4, 4
    return None


class ClonedNet(FeatureClassifier):
    """A cloned student + invariant head; ``cloned_parameters()`` = the student's parameters.

    The last cloned layer gets an equivariant bias: with ``z`` its pre-activation, ``σ`` its
    nonlinearity and ``b ∈ R^{fields}`` the trainable ``field_bias`` (zeros at the start, so the
    initial network is the clone),

        f = σ(z + b[field(c)])   for every output channel c and pixel,

    one scalar per output field (an ``image`` channel, or the 4 orientation channels of a
    ``regular`` C4 field), constant over the group orbit. So ``f`` stays G-equivariant whatever
    ``b`` is, and ``frozen`` fine-tuning keeps the symmetry while the biases train. The cloned
    bias *vectors* of the student (dense ``bias``, block biases ``c_b``) are one value per output
    unit; letting them move freely would break the symmetry, so they stay cloned structure.

    Parameters
    ----------
    student : a cloned student (``forward_features``; with ``kernels``: a one-layer
        kernel-conditioned student, ``layer_forward(1, x, params=(K, P))``).
    num_classes, pool, hidden : see :class:`InvariantHead`.
    structure_group : the teacher's group; enables structure residuals of the cloned layers.
    kernels : optional ``(F, P)`` initial kernels. They become the trainable parameter ``kernels``
        and the student's cloned layer is applied once per kernel: ``F`` output channels (``F``
        regular fields for a C4 lifting clone), all sharing the cloned blocks ``W_b``
        (``z_f = sum_b h_b(k_f) W_b x``, computed as one ``W_b x`` for all ``f``).
    bias : add the trainable ``field_bias`` (shape ``(F, fields per kernel)`` with ``kernels``,
        ``(fields,)`` without). Left out (``field_bias = None``) when ``False`` or when the student
        cannot return pre-activations (``layer_forward(..., pre_activation=True)`` and
        ``activations``) or its last feature is neither ``image`` nor ``regular``.

    Examples
    --------
    >>> from symclone.registry import create_student, create_teacher
    >>> t = create_teacher("gcnn_c4", fields=1, depth=1, size=8)
    >>> net = ClonedNet(create_student("blocks", teacher=t), 20, kernels=t.sample_params(1, 3))
    >>> tuple(net.field_bias.shape), "field_bias" in " ".join(net.cloned_parameters())
    ((3, 1), False)
    """

    def __init__(self, student: nn.Module, num_classes: int, kernels: Optional[torch.Tensor] = None,
                 pool: str = "c4", hidden: int = 64, structure_group: Any = None, bias: bool = True):
        shape = None
        if kernels is not None:
            if int(student.num_layers) != 1:
                raise ValueError(f"student: kernels need a one-layer kernel-conditioned student, got "
                                 f"{student.num_layers} layers")
            if "params" not in inspect.signature(student.layer_forward).parameters:
                raise ValueError("student: kernels need layer_forward(l, h, params=...) (a blocks student)")
            if kernels.ndim != 2:
                raise ValueError(f"kernels: expected (F, P), got shape {tuple(kernels.shape)}")
            c, H, W = student.feature_shapes[1]
            shape = (c * kernels.shape[0], H, W)
        super().__init__(student, num_classes, pool, hidden, shape)
        self.kernels = None if kernels is None else nn.Parameter(kernels.detach().clone().float())
        #: the teacher's group (e.g. ``get_group("p4", size=28)``), for structure residuals
        self.structure_group = structure_group
        self.field_bias: Optional[nn.Parameter] = None
        self._per_field = 1
        layout = _bias_layout(student.reps[-1], int(student.feature_shapes[-1][0])) if bias else None
        pre_ok = ("pre_activation" in inspect.signature(student.layer_forward).parameters
                  and len(getattr(student, "activations", ())) == int(student.num_layers))
        if layout is not None and pre_ok:
            fields, self._per_field = layout
            shape = (kernels.shape[0], fields) if kernels is not None else (fields,)
            self.field_bias = nn.Parameter(torch.zeros(shape))
        elif bias:
            log.info("ClonedNet: no field bias for this student (rep %s, pre-activations %s)",
                     student.reps[-1], "available" if pre_ok else "unavailable")

    def cloned_parameters(self) -> list[str]:
        """Names of the cloned student's parameters (``net.*``): what ``frozen`` freezes and ``anchored``
        anchors; ``field_bias``, ``kernels`` and the head are not cloned structure."""
        return [f"net.{n}" for n, _ in self.net.named_parameters()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x``: the cloned layer (once per learnable kernel when ``kernels`` is set) with the
        per-field bias added before the nonlinearity."""
        if self.field_bias is None:
            if self.kernels is None:
                return self.net.forward_features(x)[-1]
            z = self.net.layer_forward(1, x, params=self.kernels)  # (F, B, c, H, W)
            return z.transpose(0, 1).reshape(x.shape[0], -1, *z.shape[-2:])
        from ..students import apply_activation

        L = int(self.net.num_layers)
        act = self.net.activations[L - 1]
        bias = self.field_bias.repeat_interleave(self._per_field, dim=-1)   # one value per channel
        if self.kernels is None:
            h = x
            for l in range(1, L):
                h = self.net.layer_forward(l, h)
            z = self.net.layer_forward(L, h, pre_activation=True)          # (B, C, H, W)
            return apply_activation(act, z + bias.to(z.dtype)[:, None, None])
        z = self.net.layer_forward(1, x, params=self.kernels, pre_activation=True)  # (F, B, c, H, W)
        z = apply_activation(act, z + bias.to(z.dtype)[:, None, :, None, None])
        return z.transpose(0, 1).reshape(x.shape[0], -1, *z.shape[-2:])
