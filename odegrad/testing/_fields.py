"""Small vector fields used by the gradient-correctness suite.

Every field is an ``nn.Module`` called as ``field(t, y)`` with ``y: Tensor[*batch, dim]`` (the
last dimension is the state) and knows ``rate_scale``: an upper bound of how fast it makes the
solution change — ‖∂f/∂y‖₂, and for explicitly time-dependent fields also ‖∂f/∂t‖'s rate (the
forcing frequency) — that the error model in :mod:`odegrad.testing._tolerances` uses as Λ. ``describe()``
returns a one-line text that identifies the field in failing-example reports.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InvalidInput

# Activations that are smooth (high-order methods converge at their order on them) with the
# global Lipschitz constant of each; ReLU is left out on purpose (its kink breaks convergence order).
ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    "tanh": (nn.Tanh, 1.0),
    "sigmoid": (nn.Sigmoid, 0.25),
    "softplus": (nn.Softplus, 1.0),
    "silu": (nn.SiLU, 1.1),
    "gelu": (nn.GELU, 1.13),
}


def spectral_norm(matrix: Tensor) -> float:
    """Largest singular value of a 2-D tensor (0 for an empty one)."""
    if matrix.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(matrix.detach().to(torch.float64), ord=2))


class LinearField(nn.Module):
    """``f(t, y) = y Aᵀ + b`` (autonomous, affine when ``b`` is given); ``A: [dim, dim]``, ``b: [dim]``.

    ``spectrum`` (optional) names the eigenvalue family the matrix was built from.

    Args:
        A: the matrix, copied into a parameter.
        b: the offset, copied into a parameter (None: linear field, no offset).
        spectrum: label of the eigenvalue family, shown by :meth:`describe`.

    Raises:
        InvalidInput: ``A`` is not square or ``b`` is not a vector of its size.
    """

    def __init__(self, A: Tensor, b: Tensor | None = None, spectrum: str = "given"):
        super().__init__()
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise InvalidInput("A", A, "a square matrix [dim, dim]")
        if b is not None and tuple(b.shape) != (A.shape[0],):
            raise InvalidInput("b", b, f"a vector of shape ({A.shape[0]},)")
        self.A = nn.Parameter(A.clone())
        self.b = nn.Parameter(b.clone()) if b is not None else None
        self.spectrum = spectrum

    @property
    def dim(self) -> int:
        """State size (the size of y's last dimension)."""
        return self.A.shape[0]

    @property
    def rate_scale(self) -> float:
        """``‖A‖₂``, the Lipschitz constant of the field in y."""
        return spectral_norm(self.A)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``y Aᵀ (+ b)``: ``Tensor[*batch, dim]`` (t is ignored)."""
        out = y @ self.A.t()  # .t(), not .T: torch.while_loop refuses a body reading .T twice (torch 2.13)
        return out + self.b if self.b is not None else out

    def describe(self) -> str:
        """One line naming the field: linear or affine, the spectrum label, eigenvalues and A."""
        eig = torch.linalg.eigvals(self.A.detach()).tolist()
        eig_text = ", ".join(f"{z.real:.3g}{z.imag:+.3g}j" for z in eig)
        kind = "affine" if self.b is not None else "linear"
        return f"{kind} field ({self.spectrum}; eigenvalues {eig_text}; A={self.A.detach().tolist()})"


class RandomMLPField(nn.Module):
    """``f(t, y) = MLP([y, t])`` (``t`` appended only when ``time_dependent``).

    Args:
        dim: state size; width, depth: hidden width and number of hidden layers (≥ 1).
        activation: ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"silu"`` or ``"gelu"``.
        seed: initialises the weights (N(0, gain²/fan_in)) reproducibly.
        gain: weight scale (N(0, gain²/fan_in) weights).
        rate_target: when given, the output layer is rescaled so that :attr:`rate_scale` equals
            it (keeps the steps a solver needs bounded).
        time_dependent: append t to the MLP's input.

    Weights are float64.

    Raises:
        InvalidInput: an unknown activation or a size that is not a positive integer.
    """

    def __init__(self, dim: int, width: int, depth: int, activation: str = "tanh", *,
                 time_dependent: bool = False, seed: int = 0, gain: float = 1.0,
                 rate_target: float | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InvalidInput("activation", activation, "one of " + ", ".join(ACTIVATIONS))
        for name, value in (("dim", dim), ("width", width), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(name, value, "a positive integer")
        self.dim, self.width, self.depth = dim, width, depth
        self.activation, self.time_dependent, self.seed, self.gain = activation, time_dependent, seed, gain
        generator = torch.Generator().manual_seed(seed)
        sizes = [dim + int(time_dependent), *([width] * depth), dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            linear = nn.Linear(n_in, n_out, dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
                                    * (gain / math.sqrt(n_in)))
                linear.bias.copy_(0.3 * torch.randn(n_out, generator=generator, dtype=torch.float64))
            layers.append(linear)
            if i < depth:
                layers.append(ACTIVATIONS[activation][0]())
        self.net = nn.Sequential(*layers)
        if rate_target is not None:
            bound = self.rate_scale
            if bound > 0:
                with torch.no_grad():
                    layers[-1].weight.mul_(rate_target / bound)

    @property
    def rate_scale(self) -> float:
        """Lipschitz bound of the MLP in (y, t) jointly: Π ‖W_i‖₂ × activation constants."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        bound = spectral_norm(linears[0].weight)
        for linear in linears[1:]:
            bound *= spectral_norm(linear.weight) * ACTIVATIONS[self.activation][1]
        return bound

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """The MLP at ``y`` (with ``t`` appended when time-dependent): ``Tensor[*batch, dim]``."""
        if self.time_dependent:
            y = torch.cat([y, t.to(y.dtype).expand(*y.shape[:-1], 1)], dim=-1)
        return self.net(y)

    def describe(self) -> str:
        """One line naming the field: sizes, activation, gain and weight seed."""
        kind = "time-dependent " if self.time_dependent else ""
        return (f"{kind}MLP field (dim={self.dim}, width={self.width}, depth={self.depth}, "
                f"activation={self.activation}, gain={self.gain:.3g}, weight seed={self.seed})")


class ForcedLinearField(nn.Module):
    """Time-dependent ``f(t, y) = y Aᵀ + c · cos(ω t)`` with learnable ``A``, ``c`` and ``ω``.

    Args:
        A: the matrix ``[dim, dim]``; c: the forcing amplitude ``[dim]``; omega: the forcing
            frequency ω (all copied into parameters).
    """

    def __init__(self, A: Tensor, c: Tensor, omega: float):
        super().__init__()
        self.linear = LinearField(A, spectrum="forced")
        self.c = nn.Parameter(c.clone())
        self.omega = nn.Parameter(torch.tensor(float(omega), dtype=A.dtype))

    @property
    def dim(self) -> int:
        """State size (the size of y's last dimension)."""
        return self.linear.dim

    @property
    def rate_scale(self) -> float:
        """``max(‖A‖₂, |ω|)``: the faster of the field's rate in y and the forcing's rate in t."""
        return max(self.linear.rate_scale, abs(float(self.omega.detach())))

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``y Aᵀ + c · cos(ω t)``: ``Tensor[*batch, dim]``."""
        return self.linear(t, y) + self.c * torch.cos(self.omega * t)

    def describe(self) -> str:
        """One line naming the field: ω, c and the linear part's description."""
        return (f"forced linear field (omega={float(self.omega.detach()):.4g}, c={self.c.detach().tolist()}; "
                f"{self.linear.describe()})")


class TupleField(nn.Module):
    """Presents a field over ``Tensor[*batch, sum(sizes)]`` as a field over a tuple of states
    ``(Tensor[*batch, sizes[0]], Tensor[*batch, sizes[1]], ...)``.

    Args:
        inner: a field over ``Tensor[*batch, dim]`` with a ``dim`` attribute (e.g. :class:`LinearField`).
        sizes: the sizes of the tuple's states, positive and adding up to ``inner.dim``.

    Raises:
        InvalidInput: ``sizes`` are not positive or do not add up to ``inner.dim``.
    """

    def __init__(self, inner: nn.Module, sizes: tuple[int, ...]):
        super().__init__()
        if sum(sizes) != inner.dim or any(s < 1 for s in sizes):
            raise InvalidInput("sizes", sizes, f"positive sizes adding up to the inner dim {inner.dim}")
        self.inner = inner
        self.sizes = tuple(sizes)

    @property
    def dim(self) -> int:
        """Total state size (``sum(sizes)``)."""
        return self.inner.dim

    @property
    def rate_scale(self) -> float:
        """The inner field's rate scale."""
        return self.inner.rate_scale

    def forward(self, t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The inner field on the concatenated states, split back into a tuple shaped like ``y``."""
        return torch.split(self.inner(t, torch.cat(y, dim=-1)), self.sizes, dim=-1)

    def split(self, y: Tensor) -> tuple[Tensor, ...]:
        """``Tensor[*batch, dim]`` → the tuple state this field expects."""
        return tuple(torch.split(y, self.sizes, dim=-1))

    def describe(self) -> str:
        """One line naming the tuple sizes and the inner field."""
        return f"tuple state {self.sizes} over {self.inner.describe()}"


def describe_field(field: nn.Module) -> str:
    """``field.describe()`` when available, else its repr."""
    describe = getattr(field, "describe", None)
    return describe() if callable(describe) else repr(field)
