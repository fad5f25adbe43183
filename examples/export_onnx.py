"""Export a trained neural ODE to ONNX and check onnxruntime against PyTorch.

A ``NeuralODE`` block learns the flow of a damped oscillator, x' = v, v' = −x − 0.3·v, over
t ∈ [0, 1] from random states. Two copies of the trained field are exported with
``odegrad.export.to_onnx``: a fixed-step rk4 block (the steps unroll into one static graph) and an
adaptive dopri5 block (its step-size control becomes an ONNX ``Loop``). Both files are served by
onnxruntime (``OnnxModel``) on fresh inputs of a batch size the export never saw; the script
prints the largest difference from PyTorch and plots onnxruntime's outputs against PyTorch's.

    python examples/export_onnx.py            # ~10 seconds
    python examples/export_onnx.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _harness import save_figure
from odegrad.export import MLPField, OnnxModel, to_onnx
from torch import Tensor

from odegrad.models import NeuralODE

DAMPING = 0.3


class Oscillator(torch.nn.Module):
    """The true field, y = (x, v), as an ``nn.Module`` (``NeuralODE`` takes modules)."""

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x, v = y.unbind(-1)
        return torch.stack([v, -x - DAMPING * v], dim=-1)


def train(iterations: int, seed: int) -> MLPField:
    """Fit an MLP field so that a dopri5 ``NeuralODE`` maps y(0) to the oscillator's y(1)."""
    torch.manual_seed(seed)
    field = MLPField(2, hidden=32)
    model = NeuralODE(field, (0.0, 1.0), method="dopri5", rtol=1e-5, atol=1e-7)
    truth = NeuralODE(Oscillator(), (0.0, 1.0), method="dopri5", rtol=1e-7, atol=1e-9)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    for iteration in range(iterations):
        y0 = 2 * torch.rand(64, 2) - 1
        with torch.no_grad():
            target = truth(y0)
        loss = (model(y0) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % max(1, iterations // 5) == 0 or iteration == iterations - 1:
            print(f"iteration {iteration:4d}: training MSE {loss.item():.2e}")
    return field


def parity(field: MLPField, out: Path) -> dict[str, tuple[Tensor, Tensor]]:
    """Export the rk4 and the dopri5 block, run both files on 1000 fresh states, and return
    (PyTorch, onnxruntime) outputs per block."""
    blocks = {"rk4, h = 0.1 (unrolled graph)": NeuralODE(field, (0.0, 1.0), method="rk4", options={"step_size": 0.1}),
              "dopri5 (ONNX Loop)": NeuralODE(field, (0.0, 1.0), method="dopri5", rtol=1e-5, atol=1e-7)}
    x = 2 * torch.rand(1000, 2, generator=torch.Generator().manual_seed(1)) - 1
    outputs = {}
    for index, (name, block) in enumerate(blocks.items()):
        path = out / f"export_onnx_{index}.onnx"
        result = to_onnx(block.eval(), torch.randn(8, 2), path)  # checked against PyTorch before it is written
        with torch.no_grad():
            reference = block(x)
        served = OnnxModel(path)(x)
        print(f"{name}: {result.metadata['odegrad.kind']} graph, batch 1000 served by onnxruntime, "
              f"max |onnxruntime - PyTorch| = {float((served - reference).abs().max()):.1e}")
        outputs[name] = (reference, served)
    return outputs


def plot(outputs: dict[str, tuple[Tensor, Tensor]], out: Path) -> Path:
    import matplotlib.pyplot as plt  # after _harness chose the Agg backend

    fig, axes = plt.subplots(1, len(outputs) + 1, figsize=(5 * (len(outputs) + 1), 4.2))
    for ax, (index, (name, (reference, served))) in zip(axes, enumerate(outputs.items())):
        ax.scatter(reference.flatten(), served.flatten(), s=3, color=f"C{index}")
        low, high = float(reference.min()), float(reference.max())
        ax.plot([low, high], [low, high], "k--", lw=0.8, label="y = x")
        ax.set(title=name, xlabel="PyTorch y(1)", ylabel="onnxruntime y(1)")
        ax.legend()
    ax = axes[-1]
    for index, (name, (reference, served)) in enumerate(outputs.items()):
        difference = (served - reference).abs().flatten().clamp_min(1e-12)
        ax.hist(difference.log10(), bins=40, alpha=0.6, color=f"C{index}", label=name)
    ax.set(title="|onnxruntime − PyTorch|, float32", xlabel="log10 absolute difference (identical: −12)",
           ylabel="outputs")
    ax.legend(fontsize="small")
    return save_figure(fig, out / "export_onnx.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("examples_out"))
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    field = train(5 if args.quick else args.iterations, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = parity(field, args.out)
    print(f"\nsaved {plot(outputs, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
