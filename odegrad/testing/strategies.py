"""Hypothesis strategies for gradient-correctness properties (float64 throughout).

Structure (what hypothesis draws) comes from hypothesis — sizes, eigenvalues, activations, time
grids — so shrinking yields small, readable failing examples; bulk random numbers (weights,
eigenvectors, initial states) come from a drawn integer ``seed`` through ``torch.Generator``, so a
failing example is reproduced from the printed seed alone.

Main entry points: :func:`linear_fields`, :func:`mlp_fields`, :func:`time_dependent_fields`,
:func:`vector_fields`, :func:`time_grids`, :func:`batch_shapes`, :func:`tolerances` and
:func:`ode_cases` (a field, y0 — possibly a tuple state — and t together, as an :class:`ODECase`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import Tensor, nn

from ._fields import ACTIVATIONS, ForcedLinearField, LinearField, RandomMLPField, TupleField, describe_field

SPECTRA = ("stable", "oscillatory", "unstable")
"""Eigenvalue families :func:`spectra` draws from (see there)."""
DTYPE = torch.float64
"""The dtype of every drawn tensor (gradient comparisons need float64)."""

# Default draws (module-level so they are built once).
_DIMS = st.integers(1, 3)
_WIDTHS = st.integers(2, 8)
_DEPTHS = st.integers(1, 2)
_KINDS = st.sampled_from(SPECTRA)
_ACTIVATIONS = st.sampled_from(sorted(ACTIVATIONS))
_RATES = st.floats(0.2, 1.5)
_SPANS = st.floats(0.1, 1.2)
_STARTS = st.floats(-1.0, 1.0)
_BOOL = st.booleans()


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch.Generator (printed with every failing example)."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def spectra(draw, dim: int, kind: str) -> list[complex]:
    """Eigenvalues of a real ``dim``×``dim`` matrix (complex ones in conjugate pairs).

    ``stable``: real parts in [−1.5, −0.1]; ``oscillatory``: pairs ±iω with ω ∈ [0.5, 1.5] and
    real part in [−0.1, 0.05] (a real eigenvalue in that band when dim is odd); ``unstable``
    (mildly): real parts in [0.05, 0.5], possibly oscillating.
    """
    values: list[complex] = []
    while len(values) < dim:
        pair = dim - len(values) >= 2 and (kind == "oscillatory" or draw(st.booleans()))
        if kind == "stable":
            re = draw(st.floats(-1.5, -0.1))
        elif kind == "oscillatory":
            re = draw(st.floats(-0.1, 0.05))
        else:
            re = draw(st.floats(0.05, 0.5))
        if pair:
            im = draw(st.floats(0.5, 1.5))
            values.extend([complex(re, im), complex(re, -im)])
        else:
            values.append(complex(re, 0.0))
    return values


def matrix_with_spectrum(eigenvalues: Sequence[complex], seed: int) -> Tensor:
    """Real ``A = V D V⁻¹`` with ``D`` the real block-diagonal form of ``eigenvalues`` and ``V``
    a random well-conditioned basis (orthogonal × diag(e^u), |u| ≤ 0.3, so cond(V) ≤ e^0.6)."""
    dim = len(eigenvalues)
    D = torch.zeros(dim, dim, dtype=DTYPE)
    i = 0
    while i < dim:
        z = eigenvalues[i]
        if z.imag != 0 and i + 1 < dim:
            D[i, i] = D[i + 1, i + 1] = z.real
            D[i, i + 1], D[i + 1, i] = abs(z.imag), -abs(z.imag)
            i += 2
        else:
            D[i, i] = z.real
            i += 1
    generator = _generator(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=DTYPE))
    scales = torch.exp(0.6 * torch.rand(dim, generator=generator, dtype=DTYPE) - 0.3)
    V = Q * scales
    return V @ D @ torch.linalg.inv(V)


@st.composite
def linear_fields(draw, dims: st.SearchStrategy[int] = _DIMS,
                  kinds: st.SearchStrategy[str] = _KINDS,
                  affine: st.SearchStrategy[bool] = _BOOL) -> LinearField:
    """``f = y Aᵀ (+ b)`` with A drawn from a chosen spectrum family (see :func:`spectra`).

    Args:
        dims: strategy for the state size.
        kinds: strategy for the spectrum family (one of :data:`SPECTRA`).
        affine: strategy for whether to add a random offset b.
    """
    dim, kind, seed = draw(dims), draw(kinds), draw(seeds())
    A = matrix_with_spectrum(draw(spectra(dim, kind)), seed)
    b = torch.randn(dim, generator=_generator(seed + 1), dtype=DTYPE) if draw(affine) else None
    return LinearField(A, b, spectrum=f"{kind}, seed={seed}")


@st.composite
def mlp_fields(draw, dims: st.SearchStrategy[int] = _DIMS,
               widths: st.SearchStrategy[int] = _WIDTHS,
               depths: st.SearchStrategy[int] = _DEPTHS,
               activations: st.SearchStrategy[str] = _ACTIVATIONS,
               time_dependent: st.SearchStrategy[bool] = _BOOL,
               rates: st.SearchStrategy[float] = _RATES) -> RandomMLPField:
    """Random smooth MLP fields of varied width/depth/activation; rate scale (Lipschitz bound) drawn.

    Args:
        dims, widths, depths, activations: strategies for the :class:`RandomMLPField` arguments.
        time_dependent: strategy for whether t is an input.
        rates: strategy for the rate scale the output layer is rescaled to.
    """
    return RandomMLPField(draw(dims), draw(widths), draw(depths), draw(activations),
                    time_dependent=draw(time_dependent), seed=draw(seeds()),
                    gain=draw(st.floats(0.5, 1.5)), rate_target=draw(rates))


@st.composite
def forced_linear_fields(draw, dims: st.SearchStrategy[int] = _DIMS) -> ForcedLinearField:
    """``f = y Aᵀ + c cos(ω t)`` with a stable or oscillatory A."""
    dim, seed = draw(dims), draw(seeds())
    A = matrix_with_spectrum(draw(spectra(dim, draw(st.sampled_from(SPECTRA[:2])))), seed)
    c = torch.randn(dim, generator=_generator(seed + 2), dtype=DTYPE)
    return ForcedLinearField(A, c, draw(st.floats(0.5, 3.0)))


def time_dependent_fields() -> st.SearchStrategy[nn.Module]:
    """Fields that depend on t explicitly: forced linear systems and MLPs taking t as an input."""
    return st.one_of(forced_linear_fields(), mlp_fields(time_dependent=st.just(True)))


def vector_fields() -> st.SearchStrategy[nn.Module]:
    """Any of the suite's fields: linear/affine, MLP (autonomous or not), forced linear."""
    return st.one_of(linear_fields(), mlp_fields(), forced_linear_fields())


@st.composite
def time_grids(draw, min_points: int = 2, max_points: int = 10,
               spans: st.SearchStrategy[float] = _SPANS,
               starts: st.SearchStrategy[float] = _STARTS,
               decreasing: st.SearchStrategy[bool] = _BOOL) -> Tensor:
    """``Tensor[n]`` float64, 2 ≤ n ≤ 10 strictly monotone times: increasing or decreasing, span
    drawn, gaps drawn (each ≥ 1/5 of the largest, so no gap is vanishingly small).

    Args:
        min_points, max_points: range of the number of times.
        spans: strategy for ``|t[-1] − t[0]|``.
        starts: strategy for ``t[0]``.
        decreasing: strategy for the direction.
    """
    n = draw(st.integers(min_points, max_points))
    span, start = draw(spans), draw(starts)
    gaps = draw(st.lists(st.floats(0.2, 1.0), min_size=n - 1, max_size=n - 1))
    total = sum(gaps)
    sign = -1.0 if draw(decreasing) else 1.0
    times, position = [start], 0.0
    for gap in gaps:
        position += gap
        times.append(start + sign * span * position / total)
    return torch.tensor(times, dtype=DTYPE)


def batch_shapes(max_batch: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Leading batch shapes of the state: (), (b,), or (b1, b2)."""
    size = st.integers(1, max_batch)
    return st.one_of(st.just(()), st.tuples(size), st.tuples(size, st.integers(1, 2)))


def tolerances(min_rtol: float = 1e-9, max_rtol: float = 1e-3) -> st.SearchStrategy[tuple[float, float]]:
    """``(rtol, atol)`` log-uniform, ``atol = rtol · 10^(−k)`` with k ∈ [0, 3]."""
    low, high = math.log10(min_rtol), math.log10(max_rtol)
    return st.tuples(st.floats(low, high), st.floats(0.0, 3.0)).map(
        lambda p: (10.0 ** p[0], 10.0 ** (p[0] - p[1])))


@dataclass
class ODECase:
    """One drawn problem: ``func`` (the field, wrapped in :class:`TupleField` for tuple states),
    ``y0`` (``Tensor[*batch, dim]`` or tuple), ``t`` (``Tensor[T]``) and the seed of y0."""

    func: nn.Module
    y0: Tensor | tuple[Tensor, ...]
    t: Tensor
    seed: int

    @property
    def span(self) -> float:
        """Length of the time span, ``|t[-1] − t[0]|``."""
        return abs(float(self.t[-1] - self.t[0]))

    @property
    def scale(self) -> float:
        """The field's rate scale Λ (``func.rate_scale``), for the error model."""
        return float(self.func.rate_scale)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions of y0 (of its first state for tuple states)."""
        first = self.y0 if isinstance(self.y0, Tensor) else self.y0[0]
        return tuple(first.shape[:-1])

    def describe(self) -> str:
        """One line for failing-example reports: the field, y0's shape, its seed, t and Λ."""
        state = ("tuple state " + str([tuple(y.shape) for y in self.y0]) if isinstance(self.y0, tuple)
                 else f"y0 shape {tuple(self.y0.shape)}")
        return (f"field: {describe_field(self.func)}; {state}; y0 seed={self.seed}; "
                f"t={[float(f'{v:.6g}') for v in self.t.tolist()]}; rate scale {self.scale:.3g}")


@st.composite
def ode_cases(draw, fields: st.SearchStrategy[nn.Module] | None = None,
              times: st.SearchStrategy[Tensor] | None = None,
              batches: st.SearchStrategy[tuple[int, ...]] | None = None,
              tuple_states: st.SearchStrategy[bool] = _BOOL) -> ODECase:
    """A field, an initial state (tuple state when drawn and dim ≥ 2) and output times.

    Args:
        fields: strategy for the field (default :func:`vector_fields`).
        times: strategy for t (default :func:`time_grids`).
        batches: strategy for y0's batch shape (default :func:`batch_shapes`).
        tuple_states: strategy for whether to split the state into a tuple of two.
    """
    field = draw(fields if fields is not None else vector_fields())
    t = draw(times if times is not None else time_grids())
    batch = draw(batches if batches is not None else batch_shapes())
    seed = draw(seeds())
    y0 = torch.randn(*batch, field.dim, generator=_generator(seed), dtype=DTYPE)
    if field.dim >= 2 and draw(tuple_states):
        split = draw(st.integers(1, field.dim - 1))
        field = TupleField(field, (split, field.dim - split))
        return ODECase(field, field.split(y0), t, seed)
    return ODECase(field, y0, t, seed)
