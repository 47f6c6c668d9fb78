"""Abstract group interface shared by every symmetry group in symclone.

Element validation
------------------
Public methods that take elements from the caller (:meth:`Group.act`, :meth:`Group.compose`,
:meth:`Group.inverse`) check them with the same code as :meth:`Group.validate` and raise a
``ValueError`` naming the argument, the group and the expected form. The checks have two tiers:

* *form* (type, dtype, shape, batch size): Python on tensor metadata only; always on.
* *values* (ranges, permutations, orthogonality and det, finiteness): a few small reductions and
  one host sync; on by default, skipped with ``validate=False`` or inside :func:`unchecked` (for
  hot loops that produce the elements themselves, e.g. samplers and orbit loops).

Examples
--------
>>> from symclone.groups import get_group
>>> get_group("c4").act(torch.tensor(1.5), torch.zeros(1, 1, 3, 3))
Traceback (most recent call last):
...
ValueError: g: c4 elements are integers 0..3 of shape () or a batch (B,); got a float32 tensor of shape () = 1.5
>>> with unchecked():  # value checks off in this block (form checks stay on)
...     get_group("c4").act(torch.tensor(7), torch.zeros(1, 1, 3, 3)).shape
torch.Size([1, 1, 3, 3])
"""
from __future__ import annotations

import abc
import contextlib
import contextvars
import operator
from typing import Any, Iterator, Optional, Sequence

import torch

from ._reps import Rep, RepLike, parse_rep

__all__ = ["Group", "check_tensor", "unchecked", "validation_enabled", "orthogonality_tol"]

Element = Any  # a tensor (or a tuple of tensors for product groups)

_VALIDATE: contextvars.ContextVar[bool] = contextvars.ContextVar("symclone_validate_elements", default=True)

#: default bound on ``max |QᵀQ - I|`` for orthogonal-matrix elements, by dtype (about 840 ulp for
#: float32, 4.5e5 ulp for float64: loose enough for products of many sampled rotations, tight
#: enough to reject anything that is not a rotation)
_ORTHO_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Skip the *value* checks of group elements (ranges, permutations, orthogonality) in a block.

    Meant for hot loops that produce elements themselves (samplers, orbit loops). Form checks
    (dtype, shape, batch size) cost no kernel and stay on. The switch is context-local (safe with
    threads and asyncio) and nests.

    Examples
    --------
    >>> with unchecked():
    ...     validation_enabled()
    False
    >>> validation_enabled()
    True
    """
    token = _VALIDATE.set(False)
    try:
        yield
    finally:
        _VALIDATE.reset(token)


def validation_enabled() -> bool:
    """Whether element value checks are on in this context (see :func:`unchecked`)."""
    return _VALIDATE.get()


def orthogonality_tol(dtype: torch.dtype) -> float:
    """Default bound on ``max |QᵀQ - I|`` (dimensionless, i.e. relative to ``|I| = 1``) for ``dtype``.

    Examples
    --------
    >>> orthogonality_tol(torch.float32), orthogonality_tol(torch.float64)
    (0.0001, 1e-10)
    """
    return _ORTHO_TOL.get(dtype, 1e-4)


def positive_int(value: Any, arg: str, group: str) -> int:
    """``value`` as a positive ``int`` (ints, numpy/0-d tensor integers), else a ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"{arg}: group {group!r} expects a positive integer, got a bool ({value})")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{arg}: group {group!r} expects a positive integer, "
                         f"got {value!r} ({type(value).__name__})") from None
    if out < 1:
        raise ValueError(f"{arg}: group {group!r} expects a positive integer, got {out}")
    return out


def describe(t: torch.Tensor) -> str:
    """``'a float32 tensor of shape (2,) = [1.5, 2.0]'`` (values only for small tensors)."""
    dt = str(t.dtype).replace("torch.", "")
    out = f"a {dt} tensor of shape {tuple(t.shape)}"
    if t.numel() <= 9:
        out += f" = {t.detach().cpu().tolist()}"
    return out


def check_tensor(x: Any, rep: Rep, name: str = "x") -> torch.Tensor:
    """Validate that ``x`` is a tensor with at least the dimensions ``rep`` expects; return it.

    Only the type and the number of dimensions (:attr:`Rep.min_ndim`) are checked here; the group's
    action checks the sizes it needs (square images, channels divisible by 4, the irreps' dim, ...).

    Raises
    ------
    ValueError
        naming ``name``, the rep and its layout (:attr:`Rep.layout`).

    Examples
    --------
    >>> from symclone.groups import parse_rep
    >>> check_tensor(torch.zeros(2, 5, 3), parse_rep("points")).shape
    torch.Size([2, 5, 3])
    >>> check_tensor(torch.zeros(5, 3), parse_rep("points"))
    Traceback (most recent call last):
    ...
    ValueError: x: rep points expects a tensor of shape (B, N, 3), got shape (5, 3)
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim < rep.min_ndim:
        raise ValueError(f"{name}: rep {rep} expects a tensor of shape {rep.layout}, got shape {tuple(x.shape)}")
    return x


class Group(abc.ABC):
    """A symmetry group with an explicit action on tensors.

    Elements are tensors (a tuple of tensors for products). A *batch* of elements carries a
    leading batch dimension; ``act`` applies element ``g[b]`` to sample ``x[b]`` when ``g`` is
    batched, and one element to every sample otherwise.

    Subclasses define ``element_ndim`` (dimensions of one element), ``element_form`` (words for
    error messages), ``_check_dtype``/``_check_shape``/``_check_values`` (validation),
    ``_compose``, ``_inverse`` and ``_act``.
    """

    name: str = "group"
    element_ndim: int = 0
    #: representations this group knows how to act on (``trivial`` is always allowed)
    supported_reps: tuple[str, ...] = ()

    # ---- structure -------------------------------------------------------------------------
    @property
    def order(self) -> Optional[int]:
        """Number of elements, ``None`` for continuous groups."""
        return None

    @property
    def is_finite(self) -> bool:
        """Whether the group has finitely many elements (``order`` is not ``None``).

        A grid group built without ``size`` is finite although its order is unknown.
        """
        return self.order is not None

    @property
    @abc.abstractmethod
    def identity(self) -> Element:
        """The neutral element ``e`` (one element, no batch axis): ``act(e, x) == x``."""

    def compose(self, a: Element, b: Element, *, validate: bool = True) -> Element:
        """The product ``a b`` (apply ``b`` first, then ``a``); batches broadcast.

        ``validate=False`` skips the value checks of ``a`` and ``b`` (see :meth:`validate`).
        """
        check = validate and _VALIDATE.get()
        a, b = self._element(a, "a", check), self._element(b, "b", check)
        na, nb = self.batch_size(a), self.batch_size(b)
        if na is not None and nb is not None and na != nb:
            raise ValueError(f"a, b: cannot compose a batch of {na} {self.name} elements with a "
                             f"batch of {nb}")
        return self._compose(a, b)

    def inverse(self, a: Element, *, validate: bool = True) -> Element:
        """The inverse ``a⁻¹`` (elementwise for a batch); ``validate=False`` skips value checks."""
        return self._inverse(self._element(a, "a", validate and _VALIDATE.get()))

    @abc.abstractmethod
    def _compose(self, a: Element, b: Element) -> Element: ...

    @abc.abstractmethod
    def _inverse(self, a: Element) -> Element: ...

    @abc.abstractmethod
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Element:
        """``n`` elements drawn uniformly (Haar measure), stacked along a leading batch axis."""

    def elements(self) -> Element:
        """All elements stacked along a leading axis (finite groups only)."""
        raise ValueError(f"group {self.name!r} is continuous: it has no finite list of elements; use sample()")

    def equal(self, a: Element, b: Element, atol: float = 1e-6) -> bool:
        """Whether ``a`` and ``b`` are the same element(s): exact for integer elements, entrywise
        within ``atol`` (in float64) for floating ones; a batch is equal when every entry is.

        Examples
        --------
        >>> from symclone.groups import get_group
        >>> G = get_group("c4"); G.equal(G.compose(torch.tensor(3), torch.tensor(2)), torch.tensor(1))
        True
        """
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.dtype.is_floating_point or b.dtype.is_floating_point:
            return bool(torch.allclose(a.double(), b.double(), atol=atol))
        return bool(torch.equal(a, b))

    def batch_size(self, g: Element) -> Optional[int]:
        """Leading batch size of ``g``, or ``None`` for a single element."""
        g = torch.as_tensor(g)
        return None if g.ndim == self.element_ndim else int(g.shape[0])

    def index(self, g: Element, i: int) -> Element:
        """The ``i``-th element of a batch of elements."""
        return g[i]

    # ---- validation ------------------------------------------------------------------------
    @property
    def element_form(self) -> str:
        """What an element looks like, for error messages."""
        return f"tensors with {self.element_ndim} dims"

    def validate(self, g: Element, name: str = "g") -> Element:
        """Check that ``g`` is one element or a batch of elements of this group; return it as a tensor.

        Raises
        ------
        ValueError
            naming ``name``, the group and the expected form, e.g.
            ``"g: c4 elements are integers 0..3 of shape () or a batch (B,); got ... = 5"``.

        Examples
        --------
        >>> from symclone.groups import get_group
        >>> get_group("sn", n=3).validate([2, 0, 1])
        tensor([2, 0, 1])
        >>> get_group("sn", n=3).validate([2, 2, 1])
        Traceback (most recent call last):
        ...
        ValueError: g: sn elements are permutations of 0..2 ...; got [2, 2, 1] (not a permutation of 0..2)
        """
        return self._element(g, name, True)

    def _element(self, g: Element, name: str, values: bool) -> Element:
        """Form checks always; value checks if ``values`` (no autograd graph is recorded)."""
        g = self._check_form(g, name)
        if values:
            with torch.no_grad():
                self._check_values(g, name)
        return g

    def _error(self, name: str, got: str) -> ValueError:
        return ValueError(f"{name}: {self.name} elements are {self.element_form}; got {got}")

    def _check_form(self, g: Element, name: str) -> torch.Tensor:
        if not isinstance(g, torch.Tensor):
            if isinstance(g, (str, bytes)) or g is None:
                raise self._error(name, f"{type(g).__name__} {g!r}")
            try:
                g = torch.as_tensor(g)
            except (TypeError, ValueError, RuntimeError):
                raise self._error(name, f"a {type(g).__name__} that is not convertible to a tensor") from None
        if g.ndim not in (self.element_ndim, self.element_ndim + 1):
            raise self._error(name, f"shape {tuple(g.shape)}")
        self._check_dtype(g, name)
        self._check_shape(g, name)
        return g

    def _check_dtype(self, g: torch.Tensor, name: str) -> None:
        """Raise unless ``g`` has a dtype elements may have (no kernel, no sync)."""

    def _check_shape(self, g: torch.Tensor, name: str) -> None:
        """Raise unless the trailing ``element_ndim`` dims of ``g`` are right (no kernel, no sync)."""

    def _check_values(self, g: torch.Tensor, name: str) -> None:
        """Raise unless every entry of ``g`` is an element (reductions + one host sync)."""

    # helpers for subclasses
    def _require_integer(self, g: torch.Tensor, name: str) -> None:
        if g.dtype.is_floating_point or g.dtype.is_complex or g.dtype == torch.bool:
            raise self._error(name, describe(g))

    def _require_float(self, g: torch.Tensor, name: str) -> None:
        if not g.dtype.is_floating_point:
            raise self._error(name, describe(g))

    def _where(self, g: torch.Tensor, i: int) -> str:
        return f"element {i} of the batch with " if g.ndim > self.element_ndim else ""

    def _check_int_columns(self, g: torch.Tensor, name: str,
                           columns: Sequence[tuple[str, Optional[int]]]) -> None:
        """Every entry of column ``j`` (trailing axis; a 0-dim element is one column) of integer
        ``g`` must lie in ``0 .. high_j - 1`` (``high_j = None``: unbounded). One sync."""
        bounded = [j for j, (_, high) in enumerate(columns) if high is not None]
        if not bounded or g.numel() == 0:
            return
        flat = g.reshape(-1, len(columns))
        lo, hi = torch.aminmax(flat, dim=0)
        lo, hi = torch.stack([lo, hi]).tolist()
        for j in bounded:
            label, high = columns[j]
            if lo[j] < 0 or hi[j] >= high:
                i = int(((flat[:, j] < 0) | (flat[:, j] >= high)).nonzero()[0])
                raise self._error(name, f"{self._where(g, i)}{label} = {int(flat[i, j])}, "
                                        f"outside 0..{high - 1}")

    # ---- action ----------------------------------------------------------------------------
    def acts_on(self, rep: RepLike) -> bool:
        """Whether :meth:`act` accepts ``rep``: ``trivial`` or one of ``supported_reps``.

        Examples
        --------
        >>> from symclone.groups import get_group
        >>> get_group("c4").acts_on("regular"), get_group("c4").acts_on("points")
        (True, False)
        """
        rep = parse_rep(rep)
        return rep.kind == "trivial" or rep.kind in self.supported_reps

    def act(self, g: Element, x: torch.Tensor, rep: RepLike = "image", *,
            validate: bool = True) -> torch.Tensor:
        """Apply ``g`` to ``x`` laid out as ``rep``.

        ``act(g, act(h, x)) == act(compose(g, h), x)`` and ``act(identity, x) == x``.

        Parameters
        ----------
        g : one element (applied to every sample) or a batch of ``x.shape[0]`` elements.
        x : tensor laid out as ``rep``.
        rep : representation name or :class:`Rep`.
        validate : check the values of ``g`` (see :meth:`validate`); ``False`` (or
            :func:`unchecked`) skips them in hot loops whose elements are known to be valid.
            Form checks (dtype, shape, batch size) always run.
        """
        rep = parse_rep(rep)
        if not self.acts_on(rep):
            raise ValueError(f"rep: group {self.name!r} does not act on rep {rep}; "
                             f"supported: {('trivial',) + tuple(self.supported_reps)}")
        x = check_tensor(x, rep)
        g = self._element(g, "g", validate and _VALIDATE.get())
        if rep.kind == "trivial":
            return x
        g = self._check_batch(g, x)
        return self._act(g, x, rep)

    def _check_batch(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Check ``g``'s batch against ``x``'s and move it to ``x``'s device."""
        if g.ndim == self.element_ndim + 1 and g.shape[0] != x.shape[0]:
            raise ValueError(f"g: batch of {g.shape[0]} elements does not match the batch of "
                             f"{x.shape[0]} samples in x")
        return g.to(x.device)

    @abc.abstractmethod
    def _act(self, g: Element, x: torch.Tensor, rep: Rep) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
