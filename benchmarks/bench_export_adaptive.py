"""Adaptive NeuralODEs (dopri5, tsit5, bosh3) exported with their step-size control as an ONNX
Loop: onnxruntime (CPU) vs odegrad's eager solve, latency at batch 1 and 256, with the accepted/
rejected steps each runtime took and the largest output difference.

Timings are interleaved medians (``common.paired_median_times``); both runtimes get the same
thread count (--threads, default 1).

    python benchmarks/bench_export_adaptive.py            # ~1-2 minutes on 2 cores
    python benchmarks/bench_export_adaptive.py --quick    # smoke run (numbers meaningless)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from odegrad.export import MLPField, OnnxModel, to_onnx
from odegrad.export._adaptive import AdaptiveNeuralODE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import paired_median_times  # noqa: E402

from odegrad import solve  # noqa: E402
from odegrad.models import NeuralODE  # noqa: E402

DIM, RTOL, ATOL, SPAN = 2, 1e-6, 1e-8, 10.0


def model(method: str, hidden: int, dtype: torch.dtype) -> NeuralODE:
    """A random MLP field on [0, SPAN] with the benchmark's tolerances."""
    torch.manual_seed(0)
    field = MLPField(DIM, hidden, 2).to(dtype)
    return NeuralODE(field, t=[0.0, SPAN], method=method, rtol=RTOL, atol=ATOL).eval()


def eager_steps(block: NeuralODE, x: torch.Tensor) -> tuple[int, int]:
    """(accepted, rejected) steps of odegrad's eager solve."""
    with torch.no_grad():
        times = torch.tensor(block.times, dtype=x.dtype)
        stats = solve(block.func, x, times, method=block.method, rtol=RTOL, atol=ATOL).stats
    return stats.steps_accepted, stats.steps_rejected


def onnx_steps(block: NeuralODE, x: torch.Tensor, folder: Path) -> tuple[int, int]:
    """(accepted, rejected) steps of the exported loop, from a graph that also outputs them."""
    path = folder / "counts.onnx"
    program = torch.export.export(AdaptiveNeuralODE(block, with_counts=True).eval(), (x,))
    torch.onnx.export(program, dynamo=True, optimize=True).save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, accepted, rejected = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return int(accepted), int(rejected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per runtime (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="model dtype")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 50)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    header = ("| method | batch | eager ms | onnxruntime ms | ort / eager | steps eager (acc/rej) | "
              "steps ONNX (acc/rej) | max abs diff |\n|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for method in ("dopri5", "tsit5", "bosh3"):
            block = model(method, 16 if args.quick else 64, dtype)
            to_onnx(block, torch.randn(4, DIM, dtype=dtype), folder / "m.onnx")
            served = OnnxModel(folder / "m.onnx", providers="cpu", threads=args.threads)
            for batch in (1, 256):
                x = torch.randn(batch, DIM, dtype=dtype, generator=torch.Generator().manual_seed(batch))

                def eager(x=x, block=block):
                    with torch.no_grad():
                        return block(x)

                x_np = x.numpy()

                def ort(x_np=x_np, served=served):
                    return served.run(x_np)

                t_eager, t_ort = paired_median_times([eager, ort], repeats)
                diff = float(np.abs(ort()[0] - eager().numpy()).max())
                acc, rej = eager_steps(block, x)
                onnx_acc, onnx_rej = onnx_steps(block, x, folder)
                rows.append(f"| {method} | {batch} | {t_eager * 1e3:.3f} | {t_ort * 1e3:.3f} | "
                            f"{t_ort / t_eager:.3f}x | {acc}/{rej} | {onnx_acc}/{onnx_rej} | {diff:.2g} |")
                print(rows[-1], flush=True)
    print()
    print(f"onnxruntime {onnxruntime.__version__} CPU vs torch {torch.__version__}, {args.threads} thread(s), "
          f"median of {repeats} interleaved calls, {args.dtype}, rtol={RTOL}, atol={ATOL}")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
