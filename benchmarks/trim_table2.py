"""The TRIM chapter's Table 2: which frequency bin does the model use?

Simulation (docs/methods.md, "TRIM"): x ~ N(0, 1) in R^100, s = rfft(x) (51 bins), the
label is 1 when |s_12| is above its median. A two-layer ReLU network
(Linear(100, 100) - ReLU - Linear(100, 2)) learns it. For 500 test points every method
scores each frequency bin for class 1 through TRIM with the same Fourier transform (one
group per bin, real and imaginary parts together), and we count how often bin 12 is not
the top bin, the one with the largest score for class 1. Gradient methods report the
magnitude over (real, imag) per bin, as the paper does, so for them the largest score is
the largest magnitude; for the signed methods (CD, FeatureAblation) a column also gives
the error when the top bin is taken by absolute score.

    python benchmarks/trim_table2.py             # 5 seeds, n = 50,000, 500 test points
    python benchmarks/trim_table2.py --quick     # 1 seed, n = 5,000, 100 test points
"""

import argparse
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, FeatureAblation, GradientShap, IntegratedGradients, Saliency
from torch import nn

from captum_cd import ContextualDecomposition, TRIM
from captum_cd.transforms import Fourier1d, frequency_bins

try:
    from benchmarks._timing import progress
except ImportError:
    from _timing import progress

P, BIN = 100, 12
PUBLISHED = {"CD": 0.4, "DeepLift": 3.6, "GradientShap (SHAP)": 4.0, "IntegratedGradients": 4.2}


def simulate(n: int, generator: torch.Generator):
    x = torch.randn(n, P, generator=generator)
    magnitude = torch.fft.rfft(x).abs()[:, BIN]
    return x, (magnitude > magnitude.median()).long()


def train(x, y, generator, epochs=30):
    model = nn.Sequential(nn.Linear(P, 100), nn.ReLU(), nn.Linear(100, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(100):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def bin_scores(model, x):
    """(method -> (N, 51) scores for class 1)."""
    transform, bins = Fourier1d(P), frequency_bins(P)
    baselines = torch.zeros(1, P // 2 + 1, 2)
    methods = {
        "CD": (ContextualDecomposition(model), {}),
        "DeepLift": (DeepLift(model), {"complex_magnitude": True}),
        "GradientShap (SHAP)": (GradientShap(model), {"complex_magnitude": True, "baselines": baselines, "n_samples": 20}),
        "IntegratedGradients": (IntegratedGradients(model), {"complex_magnitude": True, "n_steps": 50}),
        "Saliency": (Saliency(model), {"complex_magnitude": True}),
        "FeatureAblation": (FeatureAblation(model), {"perturbations_per_eval": 51}),
    }
    scores, seconds = {}, {}
    for name, (method, kwargs) in methods.items():
        start = time.perf_counter()
        attr = TRIM(method, transform).attribute(x, target=1, feature_mask=bins, **kwargs)
        seconds[name] = time.perf_counter() - start
        scores[name] = attr[..., 0] if attr.ndim == 3 else attr  # one value per bin
    return scores, seconds


def run(seeds, n_train, n_test, epochs):
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    errors, by_abs, by_class, accuracies, seconds = {}, {}, {}, [], {}
    for seed in seeds:
        progress(f"seed {seed}: training the network")
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = simulate(n_train + 10_000, g)
        model = train(x[:n_train], y[:n_train], g, epochs)
        x_test, y_test = x[n_train:], y[n_train:]
        with torch.no_grad():
            accuracies.append((model(x_test).argmax(1) == y_test).float().mean().item())
        progress(f"seed {seed}: scoring the bins of {n_test} test points with every method")
        scores, times = bin_scores(model, x_test[:n_test])
        labels = y_test[:n_test]
        for name, s in scores.items():
            wrong = (s.argmax(1) != BIN).float()  # the top bin: the largest score for class 1
            errors.setdefault(name, []).append(100 * wrong.mean().item())
            by_abs.setdefault(name, []).append(100 * (s.abs().argmax(1) != BIN).float().mean().item())
            by_class.setdefault(name, []).append([100 * wrong[labels == k].mean().item() for k in (0, 1)])
            seconds.setdefault(name, []).append(times[name])
    return errors, by_abs, by_class, accuracies, seconds


def main(quick: bool) -> None:
    seeds, n_train, n_test, epochs = ([0], 5_000, 100, 30) if quick else (range(5), 50_000, 500, 15)
    errors, by_abs, by_class, accuracies, seconds = run(seeds, n_train, n_test, epochs)
    print(f"test accuracy of the network: {100 * np.mean(accuracies):.1f}% (mean of {len(accuracies)} seeds)")
    print(f"\nhow often bin {BIN} is not the top bin ({n_test} test points, {len(accuracies)} seeds):")
    print(f"{'method':<22}{'error % (mean ± sd)':>22}{'published':>11}{'label 0':>9}{'label 1':>9}{'by |score|':>12}{'seconds':>9}")
    for name, values in errors.items():
        published = f"{PUBLISHED[name]:.1f}" if name in PUBLISHED else "-"
        label0, label1 = np.mean(by_class[name], axis=0)
        print(f"{name:<22}{np.mean(values):>14.1f} ± {np.std(values):<5.1f}{published:>11}{label0:>9.1f}{label1:>9.1f}"
              f"{np.mean(by_abs[name]):>12.1f}{np.median(seconds[name]):>9.2f}")
    print("(label 0 / label 1: the error among points whose |s_12| is below / above the median;")
    print(" by |score|: the error when the top bin is the one of largest absolute score instead)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
