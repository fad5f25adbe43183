"""(4) Semigroup property: solving [t0, t1] then [t1, t2] equals solving [t0, t2] — final values,
gradients with respect to y0, parameters, t0 and t2, and a zero gradient with respect to t1."""

from __future__ import annotations

import torch
from hypothesis import given

from odegrad import solve
from odegrad.testing import RandomProjectionLoss, expected_error, named_params, relative_disagreement
from odegrad.testing.strategies import ODECase, ode_cases, time_grids

from ._support import Check, check_pairs


def _last(ys):
    return ys[-1] if isinstance(ys, torch.Tensor) else tuple(y[-1] for y in ys)


def _flat(y):
    return y.reshape(-1) if isinstance(y, torch.Tensor) else torch.cat([v.reshape(-1) for v in y])


def _leaves(case: ODECase):
    if isinstance(case.y0, torch.Tensor):
        y0 = case.y0.detach().clone().requires_grad_(True)
        return y0, [y0]
    y0 = tuple(y.detach().clone().requires_grad_(True) for y in case.y0)
    return y0, list(y0)


@given(case=ode_cases(times=time_grids(min_points=3, max_points=3)))
def test_semigroup(case: ODECase):
    loss = RandomProjectionLoss(case.seed)
    params = named_params(case.func, None)

    def compare(method, gradient, settings):
        kwargs = dict(method=method, gradient=gradient, **settings.kwargs())
        results, steps = [], 0
        for split in (False, True):
            y0, y0_leaves = _leaves(case)
            t = case.t.detach().clone().requires_grad_(True)
            if split:
                first = solve(case.func, y0, t[0:2], **kwargs)
                second = solve(case.func, _last(first.ys), t[1:3], **kwargs)
                end, solutions = _last(second.ys), (first, second)
            else:
                whole = solve(case.func, y0, torch.stack([t[0], t[2]]), **kwargs)
                end, solutions = _last(whole.ys), (whole,)
            leaves = [*y0_leaves, *params.values(), t]
            grads = torch.autograd.grad(loss(end), leaves, allow_unused=True)
            grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]
            steps += sum(s.stats.steps_accepted or s.stats.nfe_forward for s in solutions)
            named = dict(zip([f"y0[{i}]" for i in range(len(y0_leaves))] + list(params), grads[:-1]))
            named["t0,t2"] = grads[-1][[0, 2]]
            results.append((_flat(end).detach(), named, grads[-1][1]))
        (end_w, grads_w, _), (end_s, grads_s, dt1) = results
        tolerance = 2 * expected_error(method, settings, case.span, case.scale, steps=2 * steps)
        value = float((end_w - end_s).abs().max() / end_w.abs().max().clamp_min(1e-300))
        disagreement, where = relative_disagreement(grads_w, grads_s)
        scale = max(float(g.abs().max()) for g in grads_w.values())
        return [Check("final value, split vs whole", value, tolerance, "y(t2)"),
                Check("gradients, split vs whole", disagreement, tolerance, where),
                Check("dL/dt1 of the split solve (exactly 0 for the flow)",
                      float(dt1.abs()) / max(scale, 1e-300), tolerance, "t1")]

    check_pairs("4 semigroup", case, compare)
