"""Inference latency and throughput of exported fixed-cost models, measured in one run:
onnxruntime (CPU) vs eager PyTorch (odegrad) vs TorchScript, with torchdiffeq's eager fixed-step
solver as the reference for the NeuralODE rows, at batch 1 and 256.

Timings are interleaved (a, b, c, a, b, c, ...) medians, so background load hits every runtime
alike; all runtimes get the same thread count (--threads, default 1: on a small shared machine
extra intra-op threads mostly measure contention). The goal of the export issue is onnxruntime
<= 0.2x eager latency at batch 1.

    python benchmarks/bench_export.py            # ~1-2 minutes on 2 cores
    python benchmarks/bench_export.py --quick    # smoke run (numbers meaningless)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchdiffeq
from odegrad.export import MLPField, OnnxModel, load_torchscript, to_onnx, to_torchscript

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired_median_times  # noqa: E402

from odegrad.models import TLNODE, NeuralODE  # noqa: E402
from odegrad.solvers import LearnedMidpoint  # noqa: E402


def models(quick: bool) -> list[tuple[str, torch.nn.Module, int]]:
    hidden = 16 if quick else 64
    torch.manual_seed(0)
    midpoint = LearnedMidpoint(2, hidden=32)
    torch.nn.init.normal_(midpoint.net[-1].weight, std=0.1)
    return [
        ("TL-NODE p=1, 2 steps, learned rem.", TLNODE(MLPField(2, hidden, 2), order=1, steps=2,
                                                          remainder=midpoint, mode="taylor"), 2),
        ("TL-NODE p=2, 4 steps", TLNODE(MLPField(2, hidden, 2), order=2, steps=4, mode="taylor"), 2),
        ("NeuralODE rk4, 10 steps", NeuralODE(MLPField(2, hidden, 2), method="rk4", options={"step_size": 0.1}), 2),
        ("NeuralODE euler, 20 steps, dim 32", NeuralODE(MLPField(32, 2 * hidden, 2), method="euler",
                                                        options={"step_size": 0.05}), 32),
    ]


def torchdiffeq_call(model: torch.nn.Module, x: torch.Tensor):
    if not isinstance(model, NeuralODE):
        return None
    t = torch.tensor(model.times, dtype=x.dtype)

    def run():
        with torch.no_grad():
            return torchdiffeq.odeint(model.func, x, t, method=model.method, options=model.options)[-1]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per runtime (default 100)")
    parser.add_argument("--batches", default="1,256", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 100)
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)

    header = (f"{'model':<38} {'batch':>5} {'eager ms':>9} {'tdiffeq ms':>10} {'tscript ms':>10} "
              f"{'onnxrt ms':>9} {'ort/eager':>9} {'ts/eager':>8} {'ort samples/s':>13} {'max|diff|':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, dim in models(args.quick):
            model.eval()
            example = torch.randn(4, dim)
            to_onnx(model, example, Path(tmp) / "m.onnx")
            to_torchscript(model, example, Path(tmp) / "m.ts")
            served = OnnxModel(Path(tmp) / "m.onnx", providers="cpu", threads=args.threads)
            scripted = load_torchscript(Path(tmp) / "m.ts")[0]
            for batch in batches:
                x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(batch))
                x_np = x.numpy()

                def eager(x=x, model=model):
                    with torch.no_grad():
                        return model(x)

                def script(x=x, scripted=scripted):
                    with torch.no_grad():
                        return scripted(x)

                def ort(x_np=x_np, served=served):
                    return served.run(x_np)

                fns = [eager, script, ort]
                reference = torchdiffeq_call(model, x)
                if reference is not None:
                    fns.append(reference)
                times = paired_median_times(fns, repeats)
                t_eager, t_script, t_ort = times[:3]
                t_tdq = f"{times[3] * 1e3:>10.3f}" if reference is not None else f"{'-':>10}"
                diff = float(np.abs(ort()[0] - eager().numpy()).max())
                rows.append(f"{name:<38} {batch:>5} {t_eager * 1e3:>9.3f} {t_tdq} {t_script * 1e3:>10.3f} "
                            f"{t_ort * 1e3:>9.3f} {t_ort / t_eager:>8.3f}x {t_script / t_eager:>7.3f}x "
                            f"{batch / t_ort:>13.0f} {diff:>9.2g}")
                print(rows[-1], flush=True)
    print()
    print(f"onnxruntime {__import__('onnxruntime').__version__} CPU vs torch {torch.__version__}, "
          f"{args.threads} thread(s), median of {repeats} interleaved calls")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
