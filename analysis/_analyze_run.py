"""Analyse a clone run directory: structure metrics, figures, ``report.md`` and ``metrics.json["structure"]``.

:func:`analyze_models` does the work on in-memory models; :func:`analyze_run` reads ``runs/NAME``
through ``symclone.runs.load_run`` and writes the results next to it (the run directory layout:
docs/runs.md; the command ``symclone analyze``: docs/analysis.md).

The models are duck-typed on the teacher/student feature API (docs/design.md §3, docs/teachers.md).
Required of the teacher: ``feature_shapes`` (input first) and ``reps`` (and ``num_layers`` when
neither ``layers`` nor the run's metrics or config name the layers); of the student:
``dense_matrix(l, params=None)`` ``(out_dim, in_dim)`` for the weight-structure metrics (a student
without it gets a note instead). Used when present: the teacher's ``group`` (its residual),
``as_dense``, ``kernel``, ``kernel_size``, ``padding`` and ``layer_params`` (teacher matrices,
Toeplitz reports, the blocks student's matrix at the teacher's own kernel), the student's
``block_matrices`` and ``config``, and ``forward_features`` / ``layer_forward(l, h,
pre_activation=True)`` of both (feature grid, Lie derivatives).

Examples
--------
>>> import tempfile, torch
>>> from types import SimpleNamespace
>>> class Lin:
...     def __init__(self, W): self.W = W
...     def dense_matrix(self, l, params=None): return self.W
>>> t = SimpleNamespace(feature_shapes=[(1, 4, 4), (1, 4, 4)], reps=["image", "image"], group=None, num_layers=1)
>>> res = analyze_models(t, Lin(torch.eye(16)), tempfile.mkdtemp(), plots=False, support=None)
>>> res["structure"]["layers"][0]["residual"]["t2"] < 1e-6
True
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from symclone.io import atomic_write_text, update_json

from ._figures import make_figures
from ._lie import relative_lie_derivative
from ._report import render_report
from ._structure import layer_structure

__all__ = ["analyze_models", "analyze_run", "data_support", "student_label", "model_lie_derivative"]

log = logging.getLogger(__name__)

_DATA_KEYS = ("data", "dataset", "inputs")


def _data_name(config: Mapping) -> Optional[str]:
    for scope in (config, config.get("distill") or {}):
        for k in _DATA_KEYS:
            v = scope.get(k) if isinstance(scope, Mapping) else None
            if isinstance(v, Mapping):
                v = v.get("name")
            if isinstance(v, str) and "mnist" in v.lower():
                return "fashion-mnist" if "fashion" in v.lower() else "mnist"
    return None


def data_support(name: str, limit: int = 5000, root: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(support (C, H, W) bool, first test image (C, H, W))`` of an image dataset: pixels that are
    non-zero in any of the first ``limit`` training images (files under ``root``, the run's ``--data-root``)."""
    from symclone.data import load_image_dataset

    xs = load_image_dataset(name, train=True, root=root, limit=limit).tensors[0]
    x0 = load_image_dataset(name, train=False, root=root, limit=1).tensors[0][0]
    return (xs != 0).any(0), x0


def _demo_image(size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """A smooth, asymmetric test image (blurred noise + an off-centre blob) so transforms show."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, size, size, generator=g)
    ker = torch.ones(channels, 1, 3, 3) / 9
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), ker, groups=channels)
    r = torch.arange(size, dtype=torch.float32)
    blob = torch.exp(-((r[:, None] - size * 0.3) ** 2 + (r[None, :] - size * 0.6) ** 2) / (0.02 * size * size))
    return x[0] + 2 * blob


def student_label(student: Any, config: Optional[Mapping] = None) -> str:
    """``"7-block"``, ``"9-block"``, ``"mlp"``, ... from a student's config."""
    cfg = getattr(student, "config", None) or (config or {}).get("student") or {}
    name = cfg.get("name", type(student).__name__)
    blocks = (cfg.get("kwargs") or {}).get("blocks")
    if name == "blocks" and blocks:
        b = set(blocks) if isinstance(blocks, (list, tuple)) else {blocks}
        return f"{'/'.join(str(v) for v in sorted(b))}-block"
    return str(name)


def _layers(teacher: Any, config: Mapping, metrics: Mapping) -> list[int]:
    layers = [int(e["layer"]) for e in metrics.get("layers", []) or [] if "layer" in e]
    layers = layers or [int(l) for l in config.get("layers") or []]
    return sorted(set(layers)) or list(range(1, int(teacher.num_layers) + 1))


#: generator of the run analysis's Lie derivative (every image teacher here is translation equivariant)
LIE_GENERATOR = "translation_x"


def _model_dtype(m: Any, default: torch.dtype) -> torch.dtype:
    return next((p.dtype for p in m.parameters()), default) if hasattr(m, "parameters") else default


def model_lie_derivative(model: Any, x: torch.Tensor, generator: str = LIE_GENERATOR, layer: int = 1) -> dict:
    """Relative Lie derivative ``‖L f‖/‖f‖`` of ``model``'s layer-``layer`` pre-activation at ``x (C, H, W)``.

    Pre-activations, because central differences do not commute with a pointwise ReLU: even an exactly
    equivariant net has a non-zero discrete Lie derivative after the nonlinearity. Forward-mode AD
    first (retried with the MATH attention backend, e.g. for transformers); if that is impossible,
    a central finite difference on a float64 copy of the model.

    Returns
    -------
    ``{"value", "method", "region"}`` of :func:`relative_lie_derivative`, plus ``"jvp_error"`` when
    the finite difference replaced a failed jvp.
    """
    xb = x[None].to(_model_dtype(model, x.dtype))
    try:
        return relative_lie_derivative(lambda h: model.layer_forward(layer, h, pre_activation=True), generator, xb,
                                       method="jvp")
    except NotImplementedError as err:
        jvp_error = str(err)
    log.info("Lie derivative: forward-mode AD unavailable (%s); central finite difference in float64", jvp_error)
    m64 = copy.deepcopy(model).double() if hasattr(model, "double") else model
    res = relative_lie_derivative(lambda h: m64.layer_forward(layer, h, pre_activation=True), generator,
                                  x[None].double(), method="fd")
    res["jvp_error"] = jvp_error
    return res


def _lie(models: Mapping[str, Any], x: torch.Tensor) -> dict:
    """Layer-1 Lie derivatives of ``models`` at ``x`` for the structure metrics: ``lie_derivative``
    (name → ‖L f‖/‖f‖), ``lie_derivative_method`` (name → how), ``lie_derivative_generator``, and when
    they apply ``lie_derivative_region`` (measured on the output's interior), ``lie_derivative_jvp_error``
    (why a finite difference was used) and ``lie_derivative_skipped`` (name → reason; also logged as a
    warning) for models whose Lie derivative could not be computed at all."""
    values, methods, regions, skipped, jvp_errors = {}, {}, {}, {}, {}
    for name, m in models.items():
        try:
            r = model_lie_derivative(m, x)
        except Exception as err:  # a metric must never take the analysis down, but it must say why
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            log.warning("Lie derivative of %s not computed: %s", name, reason)
            skipped[name] = reason
            continue
        values[name], methods[name], regions[name] = r["value"], r["method"], r["region"]
        if "jvp_error" in r:
            jvp_errors[name] = r["jvp_error"].splitlines()[0]
    out: dict = {"lie_derivative_generator": LIE_GENERATOR}
    if values:
        out["lie_derivative"] = values
        out["lie_derivative_method"] = methods
        if any(v != "full" for v in regions.values()):
            out["lie_derivative_region"] = regions
        if jvp_errors:  # why the finite difference was used
            out["lie_derivative_jvp_error"] = jvp_errors
    if skipped:
        out["lie_derivative_skipped"] = skipped
    return out


def analyze_models(teacher: Any, student: Any, out_dir: str | Path, metrics: Optional[Mapping] = None,
                   config: Optional[Mapping] = None, extra_students: Optional[Mapping[str, Any]] = None,
                   support: Any = "auto", plots: bool = True, layers: Optional[Sequence[int]] = None) -> dict:
    """Structure metrics (and, with ``plots``, figures under ``out_dir/figures``) for a teacher/student pair.

    Parameters
    ----------
    support : ``"auto"`` (from the run's dataset when it is (Fashion-)MNIST), a dataset name, a bool
        mask ``(H, W)``/``(C, H, W)``, or ``None``.
    extra_students : more students for the feature grid (e.g. ``{"7-block": s7}``); an untrained
        MLP is added automatically when the ``mlp`` student is registered.

    Returns
    -------
    ``{"structure": {"layers": [...], ...}, "figures": {name: png path}}``.
    """
    metrics, config = dict(metrics or {}), dict(config or {})
    out_dir = Path(out_dir)
    structure: dict = {}
    x = None
    if isinstance(support, str):
        name = _data_name(config) if support == "auto" else support
        support = None
        if name:
            try:
                distill_cfg = config.get("distill")
                root = distill_cfg.get("data_root") if isinstance(distill_cfg, Mapping) else None
                support, x = data_support(name, root=root)
                structure["support_source"] = name
                structure["support_fraction"] = float(support.double().mean())
            except (ValueError, OSError) as err:
                log.warning("data support unavailable (%s); reporting the full matrices only", err)
    elif support is not None:
        support = torch.as_tensor(support).bool()
    layer_ids = list(layers) if layers else _layers(teacher, config, metrics)
    results = [layer_structure(teacher, student, l, support) for l in layer_ids]
    shapes = getattr(teacher, "feature_shapes", None)
    reps = [str(r) for r in getattr(teacher, "reps", [])]
    if x is None and shapes and reps and reps[0] == "image":
        x = _demo_image(shapes[0][-1], shapes[0][0])
    models = {"teacher": teacher, f"cloned ({student_label(student, config)})": student}
    models.update(extra_students or {})
    try:
        from symclone.registry import create_student
        models["untrained MLP"] = create_student("mlp", teacher=teacher, seed=1)
    except Exception as err:  # the registry or the teacher may not support it
        log.info("no untrained MLP baseline: %s", err)
    first = next((e for e, _ in results if e.get("layer") == 1), None)
    if x is not None and hasattr(teacher, "forward_features") and first is not None:
        lie_models = {"teacher": teacher, "student": student}
        if "untrained MLP" in models:
            lie_models["untrained MLP"] = models["untrained MLP"]
        first.update(_lie(lie_models, x))
    structure["layers"] = [e for e, _ in results]
    figures = make_figures(out_dir / "figures", results, models, teacher, metrics, x) if plots else {}
    return {"structure": structure, "figures": figures}


def analyze_run(path: str | Path, compare: Sequence[str | Path] = (), support: Any = "auto",
                plots: bool = True) -> dict:
    """Analyse ``runs/NAME``: figures under ``figures/``, ``report.md``, and ``metrics.json``
    gains a ``"structure"`` entry (other keys are kept). ``compare`` adds the students of other
    runs of the same teacher to the feature grid. Returns what :func:`analyze_models` returns."""
    try:
        from symclone.runs import load_run
    except ImportError as err:
        raise ValueError(f"analyze: symclone.runs (the run reader) is not available: {err}") from None

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path: run directory {path} does not exist")
    run = load_run(path)
    extra = {}
    for other in compare:
        o = load_run(other)
        extra[f"{student_label(o.student, o.config)} ({Path(other).name})"] = o.student
    res = analyze_models(run.teacher, run.student, path, metrics=run.metrics, config=run.config,
                         extra_students=extra, support=support, plots=plots)
    update_json(path / "metrics.json", {"structure": res["structure"]})
    text = render_report(path.name, run.config or {}, run.metrics or {}, res["structure"], res["figures"], base=path)
    atomic_write_text(path / "report.md", text)
    res["report"] = str(path / "report.md")
    return res
