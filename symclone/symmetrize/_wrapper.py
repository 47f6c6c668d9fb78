"""``Symmetrized``: wrap any model into ``f_sym(x) = (1/k) Σ_i g_i · f(g_i⁻¹ · x)``."""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

from ..groups import Group, RepLike, check_tensor, get_group, parse_rep
from ._action import reads_inputs, transform
from ._base import GroupSample, Sampler, repeat_batch
from ._center import Centering
from ._uniform import ALL

__all__ = ["Symmetrized"]

log = logging.getLogger(__name__)


class Symmetrized(nn.Module):
    """Probabilistic symmetrization of an arbitrary model (Kim et al. 2023, docs/design.md §5).

    ``f_sym(x) = (1/k) Σ_{i=1..k} g_i · f(g_i⁻¹ · x)``, ``g_i ~ p(g | x)``. If ``p`` is equivariant,
    ``f_sym`` is equivariant in distribution; with ``sampler="canonical"`` (a point mass) or
    ``"uniform"`` averaging over every element of a finite group (the Reynolds operator; ``k="all"``,
    or automatically when ``|G| <= k``) it is exactly equivariant per call.

    Keeps no state between calls. ``forward`` returns ``f_sym(x)``; ``forward_with_aux`` also
    returns the sampler's auxiliary loss (add it to the training loss).

    Parameters
    ----------
    model : any ``nn.Module`` (or callable) mapping ``rep_in`` tensors to ``rep_out`` tensors.
    group : group name (``"c4"``, ``"p4"``, ``"so2"``, ``"so3"``, ``"o3"``, ``"sn"``, ``"sn x o3"``)
        or :class:`~symclone.groups.Group`.
    rep_in, rep_out : representations of input and output.
    sampler : ``"uniform"``, ``"canonical"``, ``"learned"`` or a :class:`Sampler` instance.
    k, k_eval : samples per input in training / eval mode (``k_eval`` defaults to ``k``); canonical
        samplers always use one element. For the uniform sampler on a finite group, ``k="all"``
        asks for the exact average over every element (``|G|`` backbone evaluations per input);
        an integer ``k >= |G|`` gives that average automatically (it is then no more expensive),
        and an integer ``k < |G|`` draws ``k`` i.i.d. uniform elements per input (equivariant in
        distribution). :attr:`averaging`, :attr:`evaluations_per_input` and :attr:`exact` say
        which was done.
    noise : input-noise scale of learned samplers (canonical: 0).
    center : subtract the centroid of the positions (first ``1o`` block / points) before and add
        it back to vector outputs after (translations by centring); default: on for ``o3``/``so3``
        groups on points or irreps.
    sampler_kw : extra keyword arguments for the default sampler (e.g. ``tau``, ``hidden``,
        ``chunk_size``, ``in_channels``).

    Examples
    --------
    >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Unflatten(1, (1, 4, 4)))
    >>> f = Symmetrized(mlp, "c4", "image", "image", sampler="uniform")
    >>> x = torch.randn(2, 1, 4, 4)
    >>> torch.allclose(f(torch.rot90(x, 1, (-2, -1))), torch.rot90(f(x), 1, (-2, -1)), atol=1e-6)
    True
    >>> f.averaging
    'all 4 elements of c4 (exact group average, |G| <= k=10)'
    >>> g = Symmetrized(mlp, "p4", "image", "image", sampler="uniform", k=3, group_kw={"size": 4})
    >>> g.exact, g.evaluations_per_input, g.averaging
    (False, 3, '3 sampled of 64 elements of p4 per input (i.i.d. uniform, with replacement;
    equivariant in distribution)')
    """

    def __init__(self, model: Any, group: str | Group, rep_in: RepLike, rep_out: RepLike,
                 sampler: str | Sampler = "uniform", k: int | str = 10, k_eval: Optional[int | str] = None,
                 noise: Optional[float] = None, center: Optional[bool] = None,
                 group_kw: Optional[dict] = None, **sampler_kw: Any):
        super().__init__()
        if not callable(model):
            raise ValueError(f"model: expected an nn.Module or callable, got {type(model).__name__}")
        self.model = model
        self.rep_in, self.rep_out = parse_rep(rep_in), parse_rep(rep_out)
        if isinstance(sampler, Sampler):
            self.group = sampler.group if isinstance(group, str) else group
        else:
            self.group = get_group(group, **(group_kw or {})) if isinstance(group, str) else group
        for name, rep in (("rep_in", self.rep_in), ("rep_out", self.rep_out)):
            if not self.group.acts_on(rep):
                raise ValueError(f"{name}: group {self.group.name!r} does not act on rep {rep}; "
                                 f"supported: {('trivial',) + tuple(self.group.supported_reps)}")
        self.k = _check_k(k, "k")
        self.k_eval = _check_k(self.k if k_eval is None else k_eval, "k_eval")
        if isinstance(sampler, str):
            from ._factory import make_sampler
            sampler = make_sampler(sampler, self.group, self.rep_in, noise=noise, **sampler_kw)
        elif not isinstance(sampler, Sampler):
            raise ValueError(f"sampler: expected 'uniform', 'canonical', 'learned' or a Sampler, "
                             f"got {sampler!r}")
        elif sampler_kw:
            raise ValueError(f"sampler_kw: options {sorted(sampler_kw)} only apply to named samplers")
        self.sampler = sampler
        for name, value in (("k", self.k), ("k_eval", self.k_eval)):
            self._check_all(value, name)
        self.centering = Centering.default(self.group, self.rep_in, self.rep_out, center)
        log.debug("Symmetrized(%s): training %s; eval %s", self.group.name, self.sampler.describe(self.k),
                  self.sampler.describe(self.k_eval))

    @property
    def exact(self) -> bool:
        """Whether ``f_sym`` is equivariant per call (not only in distribution), for the current
        mode's ``k`` (``k`` in training, ``k_eval`` in eval mode)."""
        return bool(self.sampler.exact_for(self.current_k()))

    @property
    def evaluations_per_input(self) -> int:
        """Backbone evaluations per input of one call in the current mode."""
        return int(self.sampler.evaluations(self.current_k()))

    @property
    def averaging(self) -> str:
        """What one call in the current mode computes, in words (e.g. ``"all 4 elements of c4 (exact
        group average, ...)"`` or ``"4 sampled of 256 elements of p4 per input (...)"``)."""
        return self.sampler.describe(self.current_k())

    def current_k(self) -> int | str:
        """The ``k`` of the current mode: ``k`` in training mode, ``k_eval`` in eval mode."""
        return self.k if self.training else self.k_eval

    def _check_all(self, k: Any, name: str) -> None:
        if isinstance(k, str) and k == ALL and not getattr(self.sampler, "supports_all", False):
            kind = type(self.sampler).__name__
            raise ValueError(f"{name}: 'all' (the exact average over every element) needs the uniform "
                             f"sampler on a finite group of known order; got {kind} on {self.group.name!r}")

    def _resolve_k(self, k: Any) -> int | str:
        if k is None:
            return self.current_k()
        k = _check_k(k, "k")
        self._check_all(k, "k")
        return k

    def sample_group(self, x: torch.Tensor, k: Optional[int] = None,
                     generator: Optional[torch.Generator] = None) -> GroupSample:
        """Draw ``k`` elements per input from ``p(g | x)`` (``g`` batched ``k·B``, sample-major; for the
        uniform sampler i.i.d. uniform elements, whatever the group's order)."""
        x = self._check_input(x)
        x = self.centering.center_input(x) if self.centering else x
        k = self._resolve_k(k)
        if isinstance(k, str):
            raise ValueError("k: sample_group draws k elements per input; 'all' is a whole-group average "
                             "(see Sampler.chunks)")
        return self.sampler.sample(x, k, generator)

    def forward(self, x: torch.Tensor, k: Optional[int | str] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``f_sym(x)`` (see :meth:`forward_with_aux`, which also returns the auxiliary loss)."""
        return self.forward_with_aux(x, k, generator)[0]

    def forward_with_aux(self, x: torch.Tensor, k: Optional[int | str] = None,
                         generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_sym(x), aux_loss)``; ``k`` (default: the mode's ``k`` / ``k_eval``) as in the class doc.

        ``f_sym(x) = Σ_chunks a_c Σ_i g_i·f(g_i⁻¹·x) / k_c / Σ_c a_c`` over the chunks the sampler
        yields (one chunk of ``k`` samples, or the whole group in chunks; ``a_c`` their
        ``average_weight``), with the positions centred first and the centroid restored on the output
        when :attr:`centering` is on. ``aux_loss`` (a scalar) is the sum of the chunks' ``aux_loss``.
        """
        x = self._check_input(x)
        k = self._resolve_k(k)
        B = x.shape[0]
        xc, centroid = (self.centering.split(x) if self.centering else (x, None))
        total, weight_sum, aux = None, 0.0, x.new_zeros(())
        for s in self.sampler.chunks(xc, k, generator):
            # exhaustive blocks and per-sample grid-group elements read the B inputs directly (no k-fold
            # copy); one sample per input needs no copy either
            x_rep = xc if s.k == 1 or reads_inputs(self.group, s, self.rep_in) else repeat_batch(xc, s.k)
            x_in = transform(self.group, s, x_rep, self.rep_in, inverse=True)
            y = self.model(x_in)
            y = self._transform_output(s, y, B)
            w = float(s.average_weight if s.average_weight is not None else s.k)
            if s.k == 1:
                part = y if w == 1.0 else y * w
            else:
                part = y.view(s.k, B, *y.shape[1:]).sum(0)
                part = part if w == s.k else part * (w / s.k)
            total = part if total is None else total + part
            weight_sum += w
            aux = aux + s.aux_loss.to(aux.dtype)
        out = total if weight_sum == 1.0 else total / weight_sum
        if centroid is not None:
            out = self.centering.restore(out, centroid)
        return out, aux

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        return check_tensor(x, self.rep_in, "x")

    def _transform_output(self, s: GroupSample, y: Any, B: int) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.ndim < 1 or y.shape[0] != s.k * B:
            raise ValueError(f"model: expected an output tensor with batch {s.k * B} (k·B) laid out as "
                             f"rep_out {self.rep_out}, got {getattr(y, 'shape', type(y).__name__)}")
        try:
            return transform(self.group, s, y, self.rep_out, inverse=False)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"model: output of shape {tuple(y.shape)} does not fit rep_out "
                             f"{self.rep_out} under group {self.group.name!r} ({err})") from None

    def extra_repr(self) -> str:
        return (f"group={self.group.name}, rep_in={self.rep_in}, rep_out={self.rep_out}, "
                f"k={self.k!r}, k_eval={self.k_eval!r}, averaging={self.averaging!r}")


def _check_k(k: Any, name: str) -> int | str:
    if isinstance(k, str) and k == ALL:
        return ALL
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name}: expected an integer number of samples >= 1 or 'all', got {k!r}")
    return k
