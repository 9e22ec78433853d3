"""Adaptive wavelet distillation (docs/methods.md, "Adaptive wavelet distillation"): the paper's simulation, mnist1d,
and the cost of an epoch against the released reference code.

Simulation: white-noise signals of length 64, the target 2 x (the sum of three adjacent
db5 level-3 detail coefficients) + 0.1 noise; an MLP teacher (64-32-32-1). Starting from
db5 + noise (std 0.3) and from sym5, AWD learns a wavelet from the teacher; we report the
distance between wavelet functions (``wavelet_distance``) before and after, the
reconstruction error and the validity terms, and the R^2 of the distilled linear model
(6 coefficients per scale) beside a fixed db5 distillation and the teacher.

mnist1d (``mnist1d.data.make_dataset``, generated in code): a small CNN teacher, the AWD
distilled classifier and the fixed-db5 one: accuracy and prediction time per example.

Epoch cost: one epoch of the simulation (n = 5,000, batch 100, with the interpretation
term, 2 threads) here and in ``awave`` 0.1 (when installed), medians side by side.

    python benchmarks/awd_simulation.py            # n = 5,000; about 2 minutes
    python benchmarks/awd_simulation.py --quick    # small, for the test suite
"""

import argparse
import time
import warnings

import numpy as np
import pywt
import torch
from torch import nn

from captum_cd.wavelets import (
    AdaptiveWavelet,
    AWDLoss,
    fit_wavelet,
    validity_terms,
    wavelet_distance,
    WaveletDistilledClassifier,
    WaveletDistilledRegressor,
)

try:
    from benchmarks._timing import median_times, print_table, progress
except ImportError:
    from _timing import median_times, print_table, progress

LENGTH, LEVELS = 64, 3
PUBLISHED_R2 = {"AWD": 0.262, "db5": 0.197, "teacher (LSTM)": 0.237}  # cell biology, not reproducible here


def simulate(n: int, seed: int = 0):
    """Signals and targets; the target is linear in three db5 level-3 detail coefficients."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, LENGTH)
    detail = pywt.wavedec(x, "db5", mode="zero", level=LEVELS, axis=-1)[1]  # cD_3
    middle = detail.shape[1] // 2
    y = 2 * detail[:, middle - 1 : middle + 2].sum(1) + 0.1 * rng.randn(n)
    return x.astype(np.float32), y.astype(np.float32)


def train(model: nn.Module, x, y, loss_fn, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(100):
            optimizer.zero_grad()
            loss_fn(model(x[index]), y[index]).backward()
            optimizer.step()
    return model.eval()


def r2(prediction, y) -> float:
    return float(1 - ((prediction - y) ** 2).mean() / y.var())


def mlp_teacher(x, y, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(LENGTH, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    return train(model, x, y, lambda out, t: ((out.squeeze(1) - t) ** 2).mean(), epochs)


def simulation(quick: bool) -> None:
    n, teacher_epochs, epochs = (600, 10, 3) if quick else (5000, 60, 30)
    lams = [0.1] if quick else [0.01, 0.1, 1.0, 10.0]
    x, y = simulate(n)
    split = int(0.8 * n)
    x_train, y_train, x_test, y_test = torch.tensor(x[:split]), y[:split], torch.tensor(x[split:]), y[split:]
    teacher = mlp_teacher(x_train, torch.tensor(y_train), teacher_epochs)
    with torch.no_grad():
        teacher_r2 = r2(teacher(x_test).squeeze(1).numpy(), y_test)
    db5_r2 = WaveletDistilledRegressor("db5", levels=LEVELS, m=6).fit(x[:split], y_train).score(x[split:], y_test)

    rows = []
    starts = [("db5 + noise 0.3", "db5", 0.3, lam, epochs) for lam in lams] + [("sym5", "sym5", 0.0, 0.1, epochs)]
    if not quick:  # does it settle? the same starts trained longer
        starts += [("db5 + noise 0.3", "db5", 0.3, lam, 100) for lam in (0.01, 0.1)]
    for name, wave, noise, lam, epochs in starts:
        progress(f"simulation: fitting from {name}, lam_interp {lam}, {epochs} epochs")
        wavelet = AdaptiveWavelet(wave, levels=LEVELS, init_noise=noise, generator=torch.Generator().manual_seed(1))
        before = wavelet_distance(wavelet, "db5")
        start = time.perf_counter()
        wavelet, history = fit_wavelet(
            teacher, x_train, wavelet, lam_l1=0.1, lam_interp=lam, lr=1e-2, epochs=epochs, progress=False,
            generator=torch.Generator().manual_seed(2),
        )
        seconds = time.perf_counter() - start
        validity = sum(float(v) for v in validity_terms(wavelet.lowpass().detach()).values())
        distilled = WaveletDistilledRegressor(wavelet.to_pywt(), levels=LEVELS, m=6).fit(x[:split], y_train)
        rows.append(
            (name, lam, epochs, f"{before:.2f}", f"{wavelet_distance(wavelet, 'db5'):.2f}", f"{history['reconstruction'][-1]:.4f}",
             f"{validity:.1e}", f"{distilled.score(x[split:], y_test):.3f}", f"{seconds:.1f}")
        )
    print_table(
        f"AWD simulation (n = {n}, lam_l1 = 0.1, lr = 0.01; distance to db5 before -> after)",
        rows, ["start", "lam_interp", "epochs", "distance before", "after", "reconstruction", "validity", "distilled R^2", "fit s"],
    )
    print(f"fixed db5 distilled R^2 {db5_r2:.3f}; MLP teacher R^2 {teacher_r2:.3f}")
    print("published (cell biology, R^2): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_R2.items()))


def epoch_cost(quick: bool) -> None:
    n, repeats = (500, 2) if quick else (5000, 5)
    torch.manual_seed(0)
    x = torch.randn(n, LENGTH)
    teacher = nn.Sequential(nn.Linear(LENGTH, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)).eval()
    cases = {}
    for method in ("saliency", "input_x_gradient", "cd"):
        wavelet = AdaptiveWavelet("db5", levels=LEVELS, init_noise=0.3)
        loss_fn = AWDLoss(teacher, wavelet, lam_l1=0.1, lam_interp=0.1, method=method)
        cases[f"captum-cd, {method}"] = _epoch(loss_fn, wavelet.parameters(), x)
    reference = _reference_epoch(teacher, x)
    if reference is not None:
        cases["awave 0.1, saliency (no CMF term: it fails)"] = reference
    times = median_times(cases, repeats)
    base = times.get("awave 0.1, saliency (no CMF term: it fails)")
    rows = [(k, f"{v:.3f}", f"{v / base:.2f}" if base else "-") for k, v in times.items()]
    print_table(f"AWD epoch (n = {n}, batch 100, interpretation term on, 2 threads), median of {repeats}",
                rows, ["implementation", "seconds", "ratio to awave"])
    if reference is None:
        print("awave is not installed (pip install --no-deps awave==0.1): no reference timing")


def _epoch(loss_fn, parameters, x):
    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def run():
        for index in torch.randperm(len(x)).split(100):
            optimizer.zero_grad()
            loss_fn(x[index])["total"].backward(inputs=parameters)
            optimizer.step()

    return run


def _reference_epoch(teacher: nn.Module, x):
    """An epoch of awave 0.1's own trainer (its CMF term raises on current torch: off)."""
    try:
        from awave.losses import Loss
        from awave.transform1d import DWT1d
        from awave.utils.train import Trainer
    except ImportError:
        return None
    from torch.utils.data import DataLoader, TensorDataset

    class Flat(nn.Module):  # awave feeds (N, 1, L)
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, signals):
            return self.model(signals.squeeze(1))

    wavelet = DWT1d(wave="db5", mode="zero", J=LEVELS, noise_factor=0.3)
    loss = Loss(lamlSum=1, lamhSum=1, lamL2norm=1, lamCMF=0, lamConv=1, lamL1wave=0.1, lamL1attr=0.1)
    trainer = Trainer(Flat(teacher), wavelet, torch.optim.Adam(wavelet.parameters(), lr=1e-3), loss, target=0,
                      device=torch.device("cpu"), use_residuals=True, attr_methods="Saliency", n_print=10**9)
    loader = DataLoader(TensorDataset(x.unsqueeze(1), torch.zeros(len(x))), batch_size=100, shuffle=True)
    return lambda: trainer._train_epoch(loader, 1)


def mnist1d(quick: bool) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 1000 if quick else 5000
    data = make_dataset(args)
    x, y, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Unflatten(1, (1, -1)), nn.Conv1d(1, 25, 5, padding=2), nn.ReLU(), nn.Conv1d(25, 25, 5, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(25 * x.shape[1], 10),
    )
    teacher = train(teacher, torch.tensor(x, dtype=torch.float32), torch.tensor(y), nn.functional.cross_entropy,
                    epochs=3 if quick else 60)
    x_test_t = torch.tensor(x_test, dtype=torch.float32)
    with torch.no_grad():
        teacher_accuracy = float((teacher(x_test_t).argmax(1).numpy() == y_test).mean())
    db5 = WaveletDistilledClassifier("db5", levels=LEVELS, mode="zero", m=6).fit(x, y)
    awd = WaveletDistilledClassifier(
        "db5", levels=LEVELS, mode="zero", m=6, teacher=teacher, lam_l1=0.1, lam_interp=0.1, init_noise=0.0, lr=1e-2,
        epochs=2 if quick else 20, random_state=0,
    ).fit(x, y)

    def teacher_predict():
        with torch.no_grad():
            return teacher(x_test_t).argmax(1)

    times = median_times(
        {"teacher": teacher_predict, "AWD": lambda: awd.predict(x_test), "db5": lambda: db5.predict(x_test)},
        repeats=3 if quick else 7,
    )
    rows = [
        ("CNN teacher", f"{teacher_accuracy:.3f}", f"{1e6 * times['teacher'] / len(x_test):.1f}"),
        ("AWD distilled", f"{awd.score(x_test, y_test):.3f}", f"{1e6 * times['AWD'] / len(x_test):.1f}"),
        ("db5 distilled", f"{db5.score(x_test, y_test):.3f}", f"{1e6 * times['db5'] / len(x_test):.1f}"),
    ]
    print_table(f"mnist1d ({len(x)} train, {len(x_test)} test; 6 coefficients per scale, {LEVELS} levels)", rows,
                ["model", "test accuracy", "microseconds per example"])
    print(f"AWD wavelet's distance from db5 after fitting: {wavelet_distance(awd.wavelet_, 'db5'):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test suite")
    quick = parser.parse_args().quick
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")  # pywt's boundary-effect advice at level 3 of 64 samples
    progress("cost of an epoch")
    epoch_cost(quick)
    progress("the paper's simulation")
    simulation(quick)
    progress("mnist1d")
    mnist1d(quick)


if __name__ == "__main__":
    main()
