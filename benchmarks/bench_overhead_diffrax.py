"""The diffrax side of ``bench_overhead.py``: a w50 spiral training iteration (dopri5, direct
backprop through the solver) jitted with JAX. Needs jax, diffrax, equinox and optax, which are
not odegrad dependencies: run it with an interpreter that has them, e.g.

    python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install jax diffrax equinox optax
    /tmp/jaxvenv/bin/python benchmarks/bench_overhead_diffrax.py

Same task as ``bench_spiral.py``: y' = (y³)A, y0 = [2, 0], t ∈ [0, 25] at 1000 points, batches of
20 random 10-point segments (one shared step size per batch, as odegrad and torchdiffeq step a
batched state), field MLP 2-50-2 tanh on y³, Adam pretraining, then the median time of a jitted
``value_and_grad`` + Adam update: with diffrax's default ``RecursiveCheckpointAdjoint`` (backprop
through the solver) and with its ``BacksolveAdjoint`` (one row each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--pretrain", type=int, default=300)
    parser.add_argument("--rtol", type=float, default=1e-7)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={args.threads}")
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    true_a = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])
    t = jnp.linspace(0.0, 25.0, 1000)
    truth = diffrax.diffeqsolve(diffrax.ODETerm(lambda s, y, _: (y ** 3) @ true_a), diffrax.Dopri5(), 0.0, 25.0,
                                None, jnp.array([[2.0, 0.0]]), saveat=diffrax.SaveAt(ts=t),
                                stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-9),
                                max_steps=100_000).ys[:, 0]
    key = jax.random.PRNGKey(0)
    batches = []
    for _ in range(32):
        key, sub = jax.random.split(key)
        starts = jax.random.randint(sub, (20,), 0, len(t) - 10)
        batches.append((truth[starts], t[:10], jnp.stack([truth[starts + i] for i in range(10)])))

    class Field(eqx.Module):
        net: eqx.nn.MLP

        def __call__(self, s, y, _):
            return jax.vmap(self.net)(y ** 3)

    key, sub = jax.random.split(key)
    field = Field(eqx.nn.MLP(2, 2, 50, 1, activation=jnp.tanh, key=sub))

    def loss(model, y0, ts, target, rtol, atol, adjoint):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(model), diffrax.Dopri5(), ts[0], ts[-1], None, y0,
                                  saveat=diffrax.SaveAt(ts=ts),
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                                  max_steps=4096, adjoint=adjoint)
        return jnp.abs(sol.ys - target).mean(), sol.stats["num_steps"]

    optimizer = optax.adam(1e-3)

    def make_step(rtol, atol, adjoint):
        @eqx.filter_jit
        def step(model, state, y0, ts, target):
            (value, steps), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, y0, ts, target, rtol, atol,
                                                                                  adjoint)
            updates, state = optimizer.update(grads, state)
            return eqx.apply_updates(model, updates), state, value, steps
        return step

    state = optimizer.init(eqx.filter(field, eqx.is_array))
    backprop = diffrax.RecursiveCheckpointAdjoint()
    pretrain = make_step(1e-5, 1e-7, backprop)
    for i in range(args.pretrain):
        field, state, value, _ = pretrain(field, state, *batches[i % len(batches)])
    for name, adjoint in (("", backprop), (", BacksolveAdjoint", diffrax.BacksolveAdjoint())):
        step = make_step(args.rtol, args.atol, adjoint)
        out = step(field, state, *batches[0])
        jax.block_until_ready(out[2])
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            out = step(field, state, *batches[i % len(batches)])
            jax.block_until_ready(out[2])
            times.append(time.perf_counter() - start)
        print(f"| jitted diffrax {diffrax.__version__} (jax {jax.__version__}, "
              f"{jax.devices()[0].platform}){name} | {statistics.median(times) * 1e3:.2f} ms | | | {int(out[3])} steps "
              f"({args.pretrain} pretraining iterations, median of {args.repeats}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
