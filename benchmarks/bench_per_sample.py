"""Per-sample solving (issue 26) side by side: odegrad's per-sample mode vs odegrad's shared-step
mode vs torchode, in one run.

(a) **Van der Pol batch.** B oscillators ``x'' = μ(1 − x²)x' − x``, y0 = (2, 0), μ log-spaced over
    [0.1, 20], on [0, 20] (μ = 20 reaches its first relaxation jump there) with 50 shared output
    times; dopri5, rtol 1e-5 / atol 1e-7, float64, forward only. Per method: accepted steps summed
    over the entries ("total"), the most any entry took ("max") and those of the easiest entry
    (μ = 0.1), rejected steps (total), NFE (batched calls of the field: one call evaluates every
    entry), the wall time of one solve (median of alternating repeats) and the error at the
    outputs against a tight reference (scipy DOP853, rtol 1e-12, the whole batch as one system),
    in tolerance units ``|Δ| / (atol + rtol·|y_ref|)``: each entry's largest, then the median
    over entries, the easiest entry's and the largest (global errors: near a relaxation jump a
    small phase error is a large difference of states). In shared-step mode every entry
    takes every step of the batch, so its total is B x its steps. Goal: per-sample total ≤ 0.5x
    the shared-step total.

(b) **Latent-ODE-style fit on irregularly sampled series.** B series of the cubic damped spiral
    ``y' = y³A`` (torchdiffeq's demo field, A = [[-0.1, 2], [-2, -0.1]]), each from its own random
    start on [0.5, 1.5]-radius rings, observed (noise σ = 0.01) at its own n_i ~ U{10..50} times: 0
    and n_i − 1 sorted uniform times in (0, T], T = 10, so rows end at different times. Model:
    encoder Linear(2, 8) of the observation at t = 0 → latent ODE with field MLP 8-64-64-8 (tanh)
    → decoder Linear(8, 2); loss the MSE over the observed points; Adam, float32, dopri5 rtol
    1e-5 / atol 1e-6. The model is first pretrained (torchode AutoDiffAdjoint, the fastest method
    that exists whatever odegrad's state, Adam lr 1e-2; 100 iterations, full mode 300) so that
    the field is no longer the near-zero one of initialisation (8 steps per entry) but rotates
    like the data (~30 steps per entry). Timed: one training iteration (forward, loss, backward,
    Adam step at lr 1e-3), the median over alternating iterations after a warm-up iteration,
    each method training its own copy of the pretrained model on the same data.

    Rectangular times: per-sample ``t`` is one ``[B, n_max]`` tensor, so each row holds its n_i
    real times plus ``n_max − n_i`` *filler* times drawn uniformly inside its own span
    ``(0, t_last)`` (all sorted, strictly increasing); a mask marks the real ones and the loss
    averages over them only. Fillers never move a row's end, so they change no solver's steps:
    they cost the per-sample solvers (odegrad and torchode alike) only their interpolation, and
    with ``gq``/``backsolve`` a (zero) adjoint jump. The union rows solve in odegrad's shared-step
    mode on the sorted union of every row's real times (about B x 30 of them, all rows to the
    latest end) and gather each row's outputs from it.

    Methods: odegrad per-sample (``t`` of shape ``[B, n_max]``) with each gradient backend
    (direct, backsolve, gq, interp), and each again under
    ``torch.compile(fullgraph=True)`` (``--compiled-backends``; their first, untimed iteration
    compiles; inside a graph no drift warning can be raised) and the adjoint backends compiled with
    inductor's C++ wrapper (``--cpp-wrapper-backends``); torchode ``AutoDiffAdjoint`` (backprop through the solver)
    and ``BacksolveAdjoint``; odegrad shared-step on the union with each backend (quick mode:
    direct and gq only; the union's adjoint backends pay for every distinct output time, seconds
    per iteration). Ratios against torchode (goal: per-sample faster than torchode's
    AutoDiffAdjoint with every backend) and against the union solve with the same backend; per
    method also the forward NFE and mean accepted steps per entry of a no-grad solve of the trained
    model, the losses of its first and last iteration, and how many reverse-solve drift warnings
    its iterations raised (see below).

torchode (``pip install odegrad[bench]``) runs with ``Dopri5`` and ``IntegralController`` (safety
0.9, factors 0.2–10: odegrad's default controller gains), the same tolerances, its default RMS
norm per sample, eagerly (``torch.jit.script`` of its solver fails under torch 2.13 with an internal
assert). odegrad's backsolve and gq warn instead of raising on reverse-solve drift (as in common.py's
``METHODS``): their cost is what is measured, and the table counts the warnings.

Until odegrad's per-sample mode exists (``options={"per_sample": True}`` raises), its rows are
printed with the error instead of numbers.

    python benchmarks/bench_per_sample.py --quick         # B = 64 / 32, ~1 minute on 2 shared cores
    python benchmarks/bench_per_sample.py                 # B = 256 / 128, ~20 minutes (mostly the union rows)
    python benchmarks/bench_per_sample.py --only vdp      # one part (vdp | latent)
    python benchmarks/bench_per_sample.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchode
from common import paired_median_times, ratio
from scipy.integrate import solve_ivp

import odegrad

PER_SAMPLE = {"per_sample": True}
BACKENDS = ("direct", "backsolve", "gq", "interp")


def backend(name: str) -> str | odegrad.gradients.Backend:
    """An odegrad gradient backend by name; backsolve and gq warn on reverse-solve drift."""
    if name == "backsolve":
        return odegrad.gradients.Backsolve(on_drift="warn")
    if name == "gq":
        return odegrad.gradients.GaussQuadrature(on_drift="warn")
    return name


def per_sample_support(device: torch.device) -> str | None:
    """None when odegrad solves per sample, else why not (the error of a tiny per-sample solve)."""
    y0 = torch.ones(2, 1, device=device)
    try:
        with torch.no_grad():
            odegrad.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], device=device), options=PER_SAMPLE)
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return None


def torchode_solver(field: Callable, rtol: float, atol: float, adjoint: str = "autodiff"):
    """A torchode solver (``.solve(problem)``): dopri5, integral controller, the given adjoint."""
    term = torchode.ODETerm(field)
    method = torchode.Dopri5(term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
    if adjoint == "autodiff":
        return torchode.AutoDiffAdjoint(method, controller)
    return torchode.BacksolveAdjoint(term, method, controller)


def synchronized(device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out
    return run


# ---- (a) Van der Pol batch -------------------------------------------------------------------------

VDP_T, VDP_OUTPUTS, VDP_RTOL, VDP_ATOL = 20.0, 50, 1e-5, 1e-7
MU_RANGE = (0.1, 20.0)


class VanDerPol(torch.nn.Module):
    """A batch of Van der Pol oscillators, entry i with damping ``mu[i]``; ``t`` is unused (a
    number in shared-step mode, a ``[batch]`` tensor per sample)."""

    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:
        x, v = y.unbind(-1)
        return torch.stack([v, self.mu * (1 - x ** 2) * v - x], -1)


@dataclass
class VdpRow:
    method: str
    accepted: torch.Tensor | None = None  # [batch] accepted steps of each entry
    rejected: torch.Tensor | None = None  # [batch] (shared-step: the batch's, on every entry)
    nfe: int = 0
    seconds: float = math.nan
    error: torch.Tensor | None = None  # [batch] largest error of each entry [tol units]
    failure: str = ""


def vdp_reference(mu: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[n_times, batch, 2]``: the whole batch as one system, DOP853 at rtol 1e-12 (its shared
    steps are those of the hardest entry: the easy ones are only more accurate)."""
    def f(_, y):
        x, v = y.reshape(-1, 2).T
        return np.stack([v, mu * (1 - x ** 2) * v - x], -1).ravel()

    y0 = np.tile([2.0, 0.0], len(mu))
    sol = solve_ivp(f, (t[0], t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
    return sol.y.T.reshape(len(t), len(mu), 2)


def vdp(batch: int, repeats: int, device: torch.device, support: str | None) -> None:
    d = torch.float64
    mu_np = np.geomspace(*MU_RANGE, batch)
    mu = torch.tensor(mu_np, dtype=d, device=device)
    field = VanDerPol(mu)
    y0 = torch.tensor([2.0, 0.0], dtype=d, device=device).expand(batch, 2).contiguous()
    t = torch.linspace(0.0, VDP_T, VDP_OUTPUTS, dtype=d, device=device)
    reference = torch.tensor(vdp_reference(mu_np, t.cpu().numpy()), dtype=d)
    tolerance = dict(rtol=VDP_RTOL, atol=VDP_ATOL)

    def error(ys: torch.Tensor) -> torch.Tensor:
        """ys ``[n_times, batch, 2]``: each entry's largest error at the outputs, in tolerance units."""
        return ((ys.cpu() - reference).abs() / (VDP_ATOL + VDP_RTOL * reference.abs())).amax((0, 2))

    rows: list[VdpRow] = []
    timed: dict[str, Callable[[], object]] = {}

    def odegrad_solve(options):
        return lambda: odegrad.solve(field, y0, t, method="dopri5", options=options, **tolerance)

    with torch.no_grad():
        shared = odegrad_solve(None)()
        s = shared.stats
        rows.append(VdpRow("odegrad shared-step", torch.full((batch,), s.steps_accepted),
                           torch.full((batch,), s.steps_rejected), s.nfe_forward, error=error(shared.ys)))
        timed["odegrad shared-step"] = synchronized(device, odegrad_solve(None))

        if support is None:
            try:
                per = odegrad_solve(PER_SAMPLE)()
                s = per.stats
                rows.append(VdpRow("odegrad per-sample", torch.as_tensor(s.steps_accepted).cpu(),
                                   torch.as_tensor(s.steps_rejected).cpu(), int(s.nfe_forward), error=error(per.ys)))
                timed["odegrad per-sample"] = synchronized(device, odegrad_solve(PER_SAMPLE))
            except Exception as failure:  # noqa: BLE001 - reported in the table
                rows.append(VdpRow("odegrad per-sample", failure=f"{type(failure).__name__}: {failure}"))
        else:
            rows.append(VdpRow("odegrad per-sample", failure=support))

        solver = torchode_solver(field, **tolerance)
        problem = torchode.InitialValueProblem(y0=y0, t_eval=t.expand(batch, -1))
        sol = solver.solve(problem)
        n_steps, n_accepted = sol.stats["n_steps"].cpu(), sol.stats["n_accepted"].cpu()
        rows.append(VdpRow("torchode", n_accepted, n_steps - n_accepted, int(sol.stats["n_f_evals"].max()),
                           error=error(sol.ys.transpose(0, 1))))
        timed["torchode"] = synchronized(device, lambda: solver.solve(problem))

        for name, seconds in zip(timed, paired_median_times(list(timed.values()), repeats)):
            next(r for r in rows if r.method == name).seconds = seconds

    print(f"### (a) Van der Pol batch: B = {batch}, μ geomspace{MU_RANGE}, t ∈ [0, {VDP_T:g}], "
          f"{VDP_OUTPUTS} outputs, dopri5 rtol {VDP_RTOL:g} / atol {VDP_ATOL:g}, float64, {device.type}\n")
    print("| method | steps total | steps max | steps of μ = 0.1 | rejected total | NFE | time [ms] "
          "| error [tol units]: median entry, μ = 0.1, max |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.failure:
            print(f"| {r.method} | {r.failure} | | | | | | |")
            continue
        print(f"| {r.method} | {int(r.accepted.sum())} | {int(r.accepted.max())} | {int(r.accepted[0])} | "
              f"{int(r.rejected.sum())} | {r.nfe} | {r.seconds * 1e3:.1f} | {r.error.median():.3g}, "
              f"{r.error[0]:.3g}, {r.error.max():.3g} |")
    base = rows[0]
    print("\n| ratio | steps total | NFE | time |\n|---|---|---|---|")
    for r in rows[1:]:
        if not r.failure:
            print(f"| {r.method} / odegrad shared-step | {ratio(float(r.accepted.sum()), float(base.accepted.sum()))} "
                  f"| {ratio(r.nfe, base.nfe)} | {ratio(r.seconds, base.seconds)} |")
    per = rows[1]
    if not per.failure:
        tode = rows[2]
        print(f"| odegrad per-sample / torchode | {ratio(float(per.accepted.sum()), float(tode.accepted.sum()))} | "
              f"{ratio(per.nfe, tode.nfe)} | {ratio(per.seconds, tode.seconds)} |")
        goal = float(per.accepted.sum()) / float(base.accepted.sum())
        print(f"\nGoal per-sample / shared-step total steps ≤ 0.5: {goal:.2f} ({'met' if goal <= 0.5 else 'missed'})")
    print(flush=True)


# ---- (b) latent-ODE-style fit on irregular series --------------------------------------------------

LATENT_T, LATENT_RTOL, LATENT_ATOL, LR, PRETRAIN_LR = 10.0, 1e-5, 1e-6, 1e-3, 1e-2
N_RANGE = (10, 50)
SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
TORCHODE_ADJOINTS = {"autodiff": "AutoDiffAdjoint", "backsolve": "BacksolveAdjoint"}


@dataclass
class Series:
    """B irregularly sampled series, rectangular: ``times [B, n_max]`` (each row strictly
    increasing, its real times plus fillers inside its span), ``mask [B, n_max]`` (True: real),
    ``targets [B, n_max, 2]`` (zero at fillers), ``x0 [B, 2]`` the observation at t = 0, and the
    union view: ``union [n_union]`` (sorted real times of every row), ``index [B, n_max]`` (each
    real time's position in ``union``; 0 at fillers)."""

    times: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor
    x0: torch.Tensor
    union: torch.Tensor
    index: torch.Tensor


def make_series(batch: int, device: torch.device, seed: int = 0) -> Series:
    generator = np.random.default_rng(seed)
    counts = generator.integers(N_RANGE[0], N_RANGE[1] + 1, batch)
    n_max = int(counts.max())
    real_rows, rows, masks = [], [], []
    for n in counts:
        real = np.concatenate([[0.0], np.sort(generator.uniform(0.0, LATENT_T, n - 1))])
        filler = generator.uniform(0.0, real[-1], n_max - n)
        row = np.concatenate([real, filler])
        order = np.argsort(row, kind="stable")
        real_rows.append(real)
        rows.append(row[order])
        masks.append((np.arange(n_max) < n)[order])
    times64 = np.stack(rows)
    if np.any(np.diff(times64, axis=1) <= 0):  # a repeated draw (probability ~0): redraw
        return make_series(batch, device, seed + 1)
    union64 = np.unique(np.concatenate(real_rows))
    index = np.where(np.stack(masks), np.searchsorted(union64, times64), 0)

    # ground truth in float64 on the union (one tight shared-step solve), then each row's outputs
    radius = generator.uniform(0.5, 1.5, batch)
    angle = generator.uniform(0.0, 2 * math.pi, batch)
    y0 = torch.tensor(np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1))
    a = torch.tensor(SPIRAL_A, dtype=torch.float64)
    with torch.no_grad():
        truth = odegrad.odeint(lambda t, y: (y ** 3) @ a, y0, torch.tensor(union64), rtol=1e-10, atol=1e-12)
    index_t = torch.tensor(index)
    targets = truth[index_t, torch.arange(batch)[:, None]]
    targets = targets + 0.01 * torch.tensor(generator.standard_normal(targets.shape))
    mask = torch.tensor(np.stack(masks))
    targets = torch.where(mask[..., None], targets, 0.0)

    def f32(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=torch.float32)

    return Series(f32(torch.tensor(times64)), mask.to(device), f32(targets), f32(y0), f32(torch.tensor(union64)),
                  index_t.to(device))


class Field(torch.nn.Module):
    """The latent field ``MLP(z)`` (8-64-64-8, tanh); ``t`` unused."""

    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(latent, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, latent))

    def forward(self, t, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentODE(torch.nn.Module):
    def __init__(self, latent: int = 8, hidden: int = 64):
        super().__init__()
        self.encoder = torch.nn.Linear(2, latent)
        self.field = Field(latent, hidden)
        self.decoder = torch.nn.Linear(latent, 2)


Solve = Callable[[LatentODE, torch.Tensor, Series], torch.Tensor]
"""``(model, z0 [B, latent], series) -> z [B, n_max, latent]`` at each row's times."""


def odegrad_per_sample(gradient: str, compiled: bool = False, cpp_wrapper: bool = False) -> Solve:
    """odegrad's per-sample solve with ``gradient``; ``compiled``: under ``torch.compile(fullgraph=
    True)`` (inductor, with its C++ wrapper when ``cpp_wrapper``; the first iteration compiles)."""
    def run(field, z0, times):
        return odegrad.odeint(field, z0, times, method="dopri5", rtol=LATENT_RTOL, atol=LATENT_ATOL,
                              options=PER_SAMPLE, gradient=backend(gradient))

    run = torch.compile(run, fullgraph=True, options={"cpp_wrapper": cpp_wrapper}) if compiled else run

    def solve(model, z0, series):
        return run(model.field, z0, series.times)
    return solve


def odegrad_union(gradient: str) -> Solve:
    def solve(model, z0, series):
        zs = odegrad.odeint(model.field, z0, series.union, method="dopri5", rtol=LATENT_RTOL, atol=LATENT_ATOL,
                            gradient=backend(gradient))
        return zs[series.index, torch.arange(z0.shape[0], device=z0.device)[:, None]]
    return solve


def torchode_fit(adjoint: str) -> Solve:
    solvers: dict[int, object] = {}

    def solve(model, z0, series):
        solver = solvers.get(id(model))
        if solver is None:
            solver = solvers[id(model)] = torchode_solver(model.field, LATENT_RTOL, LATENT_ATOL, adjoint)
        return solver.solve(torchode.InitialValueProblem(y0=z0, t_eval=series.times)).ys
    return solve


def loss_of(model: LatentODE, solve: Solve, series: Series) -> torch.Tensor:
    prediction = model.decoder(solve(model, model.encoder(series.x0), series))
    squared = (prediction - series.targets).square().sum(-1)
    return torch.where(series.mask, squared, 0.0).sum() / (2 * series.mask.sum())


def stats_of(name: str, model: LatentODE, series: Series) -> str:
    """Forward NFE (batched field calls) and accepted steps per entry (mean) of one no-grad
    solve of ``model`` as ``name`` solves it (the error's name if that fails)."""
    try:
        return _stats_of(name, model, series)
    except Exception as failure:  # noqa: BLE001 - reported in the table
        return f"{type(failure).__name__} | "


def _stats_of(name: str, model: LatentODE, series: Series) -> str:
    with torch.no_grad():
        z0 = model.encoder(series.x0)
        tol = dict(method="dopri5", rtol=LATENT_RTOL, atol=LATENT_ATOL)
        if name.startswith("torchode"):
            stats = torchode_solver(model.field, LATENT_RTOL, LATENT_ATOL).solve(
                torchode.InitialValueProblem(y0=z0, t_eval=series.times)).stats
            return f"{int(stats['n_f_evals'].max())} | {stats['n_accepted'].float().mean():.1f}"
        if "per-sample" in name:
            s = odegrad.solve(model.field, z0, series.times, options=PER_SAMPLE, **tol).stats
            return f"{s.nfe_forward} | {torch.as_tensor(s.steps_accepted).float().mean():.1f}"
        s = odegrad.solve(model.field, z0, series.union, **tol).stats
        return f"{s.nfe_forward} | {s.steps_accepted}"


def latent(batch: int, repeats: int, pretrain: int, device: torch.device, support: str | None, backends: list[str],
           union_backends: list[str], torchode_adjoints: list[str], compiled_backends: list[str] = (),
           cpp_wrapper_backends: list[str] = ()) -> None:
    series = make_series(batch, device)
    torch.manual_seed(0)
    initial = LatentODE().to(device)
    optimizer = torch.optim.Adam(initial.parameters(), lr=PRETRAIN_LR)
    pretrain_solve = torchode_fit("autodiff")
    start = time.perf_counter()
    for _ in range(pretrain):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(initial, pretrain_solve, series)
        loss.backward()
        optimizer.step()
    pretrained = (f"pretrained {pretrain} iterations in {time.perf_counter() - start:.0f} s to loss "
                  f"{loss_of(initial, pretrain_solve, series).item():.3f}" if pretrain else "not pretrained")
    methods: dict[str, Solve] = {}
    for g in backends:
        methods[f"odegrad per-sample {g}"] = odegrad_per_sample(g)
    for g in compiled_backends:
        methods[f"odegrad per-sample {g} compiled"] = odegrad_per_sample(g, compiled=True)
    for g in cpp_wrapper_backends:
        methods[f"odegrad per-sample {g} compiled, C++ wrapper"] = odegrad_per_sample(g, compiled=True,
                                                                                       cpp_wrapper=True)
    for adjoint in torchode_adjoints:
        methods[f"torchode {TORCHODE_ADJOINTS[adjoint]}"] = torchode_fit(adjoint)
    for g in union_backends:
        methods[f"odegrad union {g}"] = odegrad_union(g)

    results: dict[str, dict] = {}
    steps: dict[str, Callable[[], None]] = {}
    for name, solve in methods.items():
        if "per-sample" in name and support is not None:
            results[name] = {"failure": support}
            continue
        model = copy.deepcopy(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        record = {"model": model, "losses": [], "drift": 0}

        def step(model=model, optimizer=optimizer, solve=solve, record=record) -> None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                optimizer.zero_grad(set_to_none=True)
                loss = loss_of(model, solve, series)
                loss.backward()
                optimizer.step()
            record["losses"].append(loss.item())
            record["drift"] += sum("backwards misses" in str(w.message) for w in caught)
            for w in caught:
                if "backwards misses" not in str(w.message):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

        try:
            start = time.perf_counter()
            synchronized(device, step)()  # also the warm-up of paired_median_times' first round
            record["first"] = time.perf_counter() - start
        except Exception as failure:  # noqa: BLE001 - reported in the table
            results[name] = {"failure": f"{type(failure).__name__}: {str(failure).splitlines()[0][:200]}"}
            continue
        results[name] = record
        steps[name] = synchronized(device, step)

    for name, s in zip(steps, paired_median_times(list(steps.values()), repeats)):
        results[name]["seconds"] = s

    counts = series.mask.sum(1)
    print(f"### (b) Latent-ODE fit on irregular series: B = {batch}, {int(counts.min())}–{int(counts.max())} "
          f"times per series ({int(counts.sum())} in all, {series.union.numel()} distinct), t ∈ [0, {LATENT_T:g}], "
          f"field MLP 8-64-64-8, dopri5 rtol {LATENT_RTOL:g} / atol {LATENT_ATOL:g}, float32, {device.type}, "
          f"{pretrained}, median of {repeats} iterations\n")
    reference = {k: results[k].get("seconds") for k in results if k.startswith("torchode")}
    columns = " | ".join(f"vs {k}" for k in reference)
    print(f"| method | ms / iteration | {columns} | vs union, same backend | forward NFE | steps per entry (mean) "
          f"| loss first → last | drift warnings |\n|---|---|{'---|' * len(reference)}---|---|---|---|---|")
    for name, r in results.items():
        if "failure" in r:
            print(f"| {name} | {r['failure']} |{' |' * len(reference)} | | | | |")
            continue
        s = r["seconds"]
        versus = " | ".join(ratio(s, ref) if ref else "n/a" for ref in reference.values())
        union = results.get(name.replace("per-sample", "union"), {}).get("seconds") if "per-sample" in name else None
        print(f"| {name} | {s * 1e3:.1f} | {versus} | {ratio(s, union) if union else ''} | "
              f"{stats_of(name, r['model'], series)} | {r['losses'][0]:.4f} → {r['losses'][-1]:.4f} | "
              f"{r['drift']} in {len(r['losses'])} iterations |")
    autodiff = reference.get("torchode AutoDiffAdjoint")
    per = {k: r["seconds"] for k, r in results.items() if "per-sample" in k and "seconds" in r}
    if autodiff and per:
        slowest = max(per, key=per.get)
        verdict = "met" if per[slowest] < autodiff else "missed"
        print(f"\nGoal every per-sample backend faster than torchode AutoDiffAdjoint: {verdict} "
              f"(slowest: {slowest}, {ratio(per[slowest], autodiff)})")
    print(flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 64 / 32 and fewer repeats (~2 minutes)")
    parser.add_argument("--only", choices=("vdp", "latent"), help="run one part only")
    parser.add_argument("--vdp-batch", type=int, help="default 256 (quick: 64)")
    parser.add_argument("--latent-batch", type=int, help="default 128 (quick: 32)")
    parser.add_argument("--repeats", type=int, help="timed repeats / iterations (default 7, quick: 3)")
    parser.add_argument("--pretrain", type=int, help="latent model pretraining iterations (default 300, quick: 100)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="odegrad per-sample backends")
    parser.add_argument("--union-backends", default=None,
                        help="odegrad union backends (default: all; quick: direct,gq)")
    parser.add_argument("--torchode-adjoints", default="autodiff,backsolve")
    parser.add_argument("--compiled-backends", default="direct,backsolve,gq,interp",
                        help="odegrad per-sample backends also timed under torch.compile(fullgraph=True)")
    parser.add_argument("--cpp-wrapper-backends", default="backsolve,gq,interp",
                        help="odegrad per-sample backends also timed compiled with inductor's C++ wrapper "
                             "(options={'cpp_wrapper': True}; direct cannot use it: inductor has none for "
                             "while_loop's autograd)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    union = args.union_backends if args.union_backends is not None else (
        "direct,gq" if args.quick else ",".join(BACKENDS))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    support = per_sample_support(device)
    print(f"per-sample benchmark on {name}, torch {torch.__version__}, torchode {torchode.__version__}"
          + (f"; odegrad per-sample unavailable ({support})" if support else "") + "\n")
    if args.only != "latent":
        vdp(args.vdp_batch or (64 if args.quick else 256), repeats, device, support)
    if args.only != "vdp":
        split = lambda s: [x for x in s.split(",") if x]
        pretrain = args.pretrain if args.pretrain is not None else (100 if args.quick else 300)
        latent(args.latent_batch or (32 if args.quick else 128), repeats, pretrain, device, support,
               split(args.backends), split(union), split(args.torchode_adjoints), split(args.compiled_backends),
               split(args.cpp_wrapper_backends))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
