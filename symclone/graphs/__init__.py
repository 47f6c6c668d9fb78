"""Graphs: dense ``[A | mask | X]`` batches, readers (graph6, EXP), backbones, S_n samplers, the
graph-separation protocols of LPS (EXP-iso, GRAPH8c, EXP-classify) and PATTERN node classification."""
from ._batch import check_graph_batch, component_labels, graph_width, split_graph, to_dense
from ._classify import ClassifyConfig, exp_classify, exp_classify_headline, exp_split
from ._canon import CanonicalBudgetError, canonical_order, initial_colors, refine_colors
from ._io import (GRAPH_DATA_ENV, Graph, find_graph_data, load_exp, load_graph8c, parse_graph6,
                  read_graph6, to_graph6)
from ._models import GraphMLP, MessagePassing, NodeMessagePassing, NodeTransformer, mlp
from ._pattern import SPLITS, PatternData, PatternRecipe, generate_pattern, load_pattern, pattern_motifs
from ._pattern_runs import pattern_table, run_pattern
from ._pattern_stats import pattern_class_weights, pattern_expectations, pattern_statistics, weighted_accuracy
from ._pattern_train import PATTERN_MODELS, PatternConfig, build_pattern_model, canonical_pattern, train_pattern
from ._refine_noise import random_ir_colors, refined_noise
from ._symmetrize import symmetrize_graph_model
from ._samplers import (CanonicalGraphSampler, GraphSampler, LearnedGraphSampler, UniformGraphSampler,
                        component_offsets, make_graph_sampler, real_first_argsort)
from ._protocols import ProtocolConfig, exp_iso, graph8c, in_distribution_test

__all__ = ["Graph", "parse_graph6", "to_graph6", "read_graph6", "load_exp", "load_graph8c",
           "find_graph_data", "GRAPH_DATA_ENV", "to_dense", "split_graph", "check_graph_batch",
           "graph_width", "canonical_order", "refine_colors", "initial_colors", "CanonicalBudgetError",
           "GraphMLP", "MessagePassing", "NodeTransformer", "NodeMessagePassing", "mlp", "GraphSampler",
           "UniformGraphSampler", "CanonicalGraphSampler", "LearnedGraphSampler", "make_graph_sampler",
           "real_first_argsort", "symmetrize_graph_model", "refined_noise", "random_ir_colors",
           "PatternRecipe", "PatternData", "SPLITS", "generate_pattern", "pattern_motifs", "load_pattern",
           "pattern_statistics", "pattern_expectations", "pattern_class_weights", "weighted_accuracy",
           "PATTERN_MODELS", "PatternConfig", "build_pattern_model", "canonical_pattern", "train_pattern",
           "run_pattern", "pattern_table", "ClassifyConfig", "exp_classify", "exp_classify_headline", "exp_split",
           "component_labels", "component_offsets", "ProtocolConfig", "exp_iso", "graph8c", "in_distribution_test"]
