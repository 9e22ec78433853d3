"""What does a training step with an explanation penalty cost?

LeNet-style CNN (conv 32 - pool - conv 64 - pool - fc 128 - fc 10) on 3x28x28 inputs,
batch 64, Adam, 2 threads. Time of one step (forward, loss, backward, optimizer step)
divided by a vanilla step, medians of interleaved repeats; and the memory the step keeps
for backward (every tensor autograd saves, counted once) divided by vanilla's.

CDEP with 1 and 8 single-pixel regions, its penalty called separately (``model(x)`` and
``reg(x, ...)``: two passes) or sharing the ordinary pass (``output_and_penalty``), and
with ``subsample=16``; RRR and Expected Gradients (50 references); and like with like:
CDEP with all 8 pixels as one region against RRR on the same pixels. Expected Gradients,
about a hundred vanilla steps, is timed apart with a fifth of the repeats (interleaved
with vanilla steps of its own) to keep the run short.

Issue 14's goals hold for every run, not the best: ``--runs N`` measures N times and
ends with each run's CDEP ratios beside the goals (1 region at most 3x, 2x with the shared
pass; 8 regions at most 10x) and the worst of them.

    python benchmarks/cdep_cost.py [--quick] [--runs N]
"""

import argparse
import os
import sys
import warnings

import torch
import torch.nn.functional as F

from captum_cd import CDEPRegularizer
from captum_cd.penalties import ExpectedGradientsPenalty, RRRPenalty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.models import lenet  # noqa: E402

try:
    from benchmarks._timing import median_times, print_table
except ImportError:
    from _timing import median_times, print_table


def pixel_regions(count: int, generator: torch.Generator) -> torch.Tensor:
    masks = torch.zeros(count, 1, 28, 28)
    flat = torch.randperm(28 * 28, generator=generator)[:count]
    masks.view(count, -1)[torch.arange(count), flat] = 1
    return masks


def saved_bytes(step) -> int:
    """Bytes autograd saves for backward during one step (each storage counted once)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def main(quick: bool, runs: int = 1) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(0)
    model = lenet(in_channels=3).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(64, 3, 28, 28), torch.randint(0, 10, (64,))
    one, eight = pixel_regions(1, g), pixel_regions(8, g)
    together = eight.amax(0, keepdim=True)  # the 8 pixels as one region

    def step(loss_fn):
        def run():
            optimizer.zero_grad()
            loss_fn().backward()
            optimizer.step()

        return run

    def separate(reg, masks):
        return lambda: F.cross_entropy(model(x), y) + reg(x, masks, target=y)

    def shared(reg, masks):
        def loss():
            output, penalty = reg.output_and_penalty(x, masks, target=y)
            return F.cross_entropy(output, y) + penalty

        return loss

    cdep, cdep16 = CDEPRegularizer(model, weight=1.0), CDEPRegularizer(model, weight=1.0, subsample=16)
    rrr, eg = RRRPenalty(model), ExpectedGradientsPenalty(model, n_samples=50)
    cases = {
        "vanilla": step(lambda: F.cross_entropy(model(x), y)),
        "CDEP, 1 region": step(separate(cdep, one)),
        "CDEP, 1 region, shared pass": step(shared(cdep, one)),
        "CDEP, 8 regions": step(separate(cdep, eight)),
        "CDEP, 8 regions, shared pass": step(shared(cdep, eight)),
        "CDEP, 8 regions, subsample=16": step(shared(cdep16, eight)),
        "RRR": step(separate(rrr, eight)),
        "Expected Gradients (50 refs)": step(separate(eg, eight)),
        "CDEP, 8 pixels as 1 region, shared": step(shared(cdep, together)),
        "RRR, the same 8 pixels": step(separate(rrr, together)),
    }
    repeats, warmup = (1, 0) if quick else (20, 1)
    memory = {name: saved_bytes(run) for name, run in cases.items()}
    ratios = []
    for run in range(runs):
        times = timed(cases, repeats, warmup)
        ratios.append({name: t / times["vanilla"] for name, t in times.items()})
        rows = [(name, f"{t * 1e3:.1f}", f"{t / times['vanilla']:.2f}x", f"{memory[name] / memory['vanilla']:.2f}x") for name, t in times.items()]
        title = "Training step, LeNet on 3x28x28, batch 64 (2 threads)" + (f", run {run + 1} of {runs}" if runs > 1 else "")
        print_table(title, rows, ["method", "median ms", "time ratio", "saved-for-backward ratio"])
    report_goals(ratios)


SLOW = ("Expected Gradients (50 refs)",)  # about a hundred vanilla steps each


def timed(cases: dict, repeats: int, warmup: int) -> dict:
    """Medians of interleaved repeats; the slow cases apart, with a fifth of the repeats
    interleaved with vanilla steps of their own, scaled to the main run's vanilla step."""
    fast = {name: fn for name, fn in cases.items() if name not in SLOW}
    times = median_times(fast, repeats, warmup)
    apart = median_times({"vanilla": cases["vanilla"], **{n: cases[n] for n in SLOW}}, max(1, repeats // 5), warmup)
    return {name: times[name] if name in times else apart[name] * times["vanilla"] / apart["vanilla"] for name in cases}


GOALS = (("CDEP, 1 region", 3), ("CDEP, 1 region, shared pass", 2), ("CDEP, 8 regions", 10), ("CDEP, 8 regions, shared pass", 10))


def report_goals(ratios: list) -> None:
    """Every run's time ratio of the CDEP cases with a goal, the worst, and the goal."""
    rows = [(name, *(f"{r[name]:.2f}x" for r in ratios), f"{max(r[name] for r in ratios):.2f}x", f"{goal}x") for name, goal in GOALS]
    headers = ["case", *(f"run {i + 1}" for i in range(len(ratios))), "worst", "goal"]
    print_table(f"CDEP against issue 14's goals, time ratios of {len(ratios)} run(s)", rows, headers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="measure this many times; the last table gives every run's CDEP ratios and the worst")
    args = parser.parse_args()
    main(args.quick, args.runs)
