"""Probabilistic symmetrization (docs/design.md §5): ``f_sym(x) = (1/k) Σ_i g_i · f(g_i⁻¹ · x)``.

:class:`Symmetrized` wraps any model; a :class:`Sampler` draws the elements ``g_i ~ p(g | x)``
(:func:`make_sampler` builds the default one per group: uniform, canonical or learned), and
:func:`transform` applies them through the groups' own actions (:mod:`symclone.groups`).
:func:`symmetrize_run` symmetrizes the student of a cloning run (``symclone symmetrize``).

Examples
--------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Flatten(1), nn.Linear(15, 15), nn.Unflatten(1, (5, 3)))
>>> f = Symmetrized(model, "sn x o3", "points", "points", sampler="learned", k=4,
...                 group_kw={"n": 5})
>>> y, aux = f.forward_with_aux(torch.randn(2, 5, 3))
>>> y.shape
torch.Size([2, 5, 3])
"""
from ..groups import act_o3 as act_o3_fast  # the former name of the O(3) action, kept for callers
from ._action import permute_by_matrix, transform
from ._base import GroupSample, Sampler, repeat_batch
from ._center import Centering
from ._factory import SAMPLER_NAMES, make_sampler
from ._finite import C4Net, C4Sampler
from ._frames import FrameSampler, SO2Sampler, gram_schmidt, principal_axes
from ._models import PairTransformer, ParticleTransformer
from ._noise import add_noise
from ._perm import (log_sinkhorn, permutation_entropy, sort_permutation, soft_sort_matrix,
                    straight_through_permutation)
from ._pointnet import PointNet
from ._scorenets import DeepSetScores, GraphScores
from ._sn import SnSampler
from ._symmetrize_run import Displacement, SymmetrizeRunConfig, symmetrize_run, task_of_run
from ._uniform import UniformSampler
from ._wrapper import Symmetrized

__all__ = ["Symmetrized", "GroupSample", "Sampler", "SnSampler", "UniformSampler", "C4Sampler",
           "C4Net", "FrameSampler", "SO2Sampler", "PointNet", "DeepSetScores", "GraphScores",
           "make_sampler", "SAMPLER_NAMES", "Centering", "gram_schmidt", "principal_axes", "repeat_batch", "transform",
           "act_o3_fast", "permute_by_matrix", "add_noise", "log_sinkhorn", "permutation_entropy",
           "sort_permutation", "soft_sort_matrix", "straight_through_permutation", "PairTransformer",
           "ParticleTransformer", "SymmetrizeRunConfig", "symmetrize_run", "Displacement", "task_of_run"]
