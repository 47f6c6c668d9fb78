"""symclone.students: group-agnostic students that learn equivariant teachers' features.

Registered: ``mlp`` (dense blocks), ``transformer`` (patch/point tokens, learned positions) and
``blocks`` (the paper's kernel-conditioned student ``y = Σ_b h_b(k) W_b x``).
"""
from ._base import (ACTIVATIONS, StudentBase, apply_activation, infer_activations, load_student,
                    save_student, teacher_layout)
from .blocks import BlocksStudent
from .mlp import MLPStudent
from .transformer import TransformerStudent

__all__ = ["StudentBase", "MLPStudent", "TransformerStudent", "BlocksStudent", "save_student", "load_student",
           "infer_activations", "apply_activation", "teacher_layout", "ACTIVATIONS"]
