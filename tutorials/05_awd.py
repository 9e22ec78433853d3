# %% [markdown]
# # Adaptive wavelet distillation: learn a wavelet from a model, then replace the model
#
# AWD (Ha et al., NeurIPS 2021) adapts an orthogonal wavelet so that a trained model's
# attributions concentrate on few wavelet coefficients, then distils the model into a
# linear model on the largest coefficients of each scale. Here, on the paper's
# simulation (the answer is known: the target depends on three db5 coefficients):
#
# 1. `AdaptiveWavelet`: a DWT identical to PyWavelets whose filter is a parameter;
# 2. `AWDLoss` in your own training loop, or `fit_wavelet` with early stopping;
# 3. the learned wavelet as a picture, as a `pywt.Wavelet`, and inside `TRIM`;
# 4. `WaveletDistilledRegressor`, a scikit-learn estimator, inside `GridSearchCV`.
#
# Run it in Jupyter, or as a script (`python 05_awd.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).
# `benchmarks/awd_simulation.py` runs the full simulation, mnist1d and the speed table.

# %%
import json
import os
import warnings

import numpy as np
import pywt
import torch
from sklearn.model_selection import GridSearchCV
from torch import nn

from captum_cd import ContextualDecomposition, TRIM
from captum_cd.wavelets import AdaptiveWavelet, AWDLoss, fit_wavelet, wavelet_distance, WaveletDistilledRegressor

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")  # pywt's boundary-effect advice at 3 levels of 64 samples
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## The simulation and the teacher
# White-noise signals of length 64; the target is twice the sum of three adjacent db5
# level-3 detail coefficients, plus noise. An MLP learns it.

# %%
n = 3000 if QUICK else 5000
rng = np.random.RandomState(0)
X = rng.randn(n, 64).astype(np.float32)
detail = pywt.wavedec(X, "db5", mode="zero", level=3, axis=-1)[1]  # cD_3: 15 coefficients
y = (2 * detail[:, 6:9].sum(1) + 0.1 * rng.randn(n)).astype(np.float32)
split = int(0.8 * n)
x_train, x_test = torch.tensor(X[:split]), torch.tensor(X[split:])

teacher = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
for _ in range(30 if QUICK else 60):
    for index in torch.randperm(split).split(100):
        optimizer.zero_grad()
        ((teacher(x_train[index]).squeeze(1) - torch.tensor(y[index.numpy()])) ** 2).mean().backward()
        optimizer.step()
teacher.eval()
with torch.no_grad():
    prediction = teacher(x_test).squeeze(1).numpy()
print(f"teacher test R^2: {1 - ((prediction - y[split:]) ** 2).mean() / y[split:].var():.3f}")

# %% [markdown]
# ## A learnable wavelet
# With its initial filter, `AdaptiveWavelet` is `pywt.wavedec` (any mode, any leading
# dimensions); its lowpass filter `h` is an `nn.Parameter`.

# %%
wavelet = AdaptiveWavelet("db5", levels=3, mode="zero")
coefficients = wavelet.coefficients(x_test[:4].double())
equals_pywt = all(
    np.allclose(ours.detach().numpy(), theirs)
    for ours, theirs in zip(coefficients, pywt.wavedec(X[split:split + 4].astype(np.float64), "db5", mode="zero", level=3))
)
print("equals pywt.wavedec:", equals_pywt)

# %% [markdown]
# ## AWDLoss in your own loop
# Start from db5 plus noise. Each term comes back separately; `total` backpropagates into
# the filter only (the teacher is not a parameter of the loss). The interpretation term
# is the L1 norm of the teacher's attributions to the coefficients: `method="saliency"` as
# in the paper, `"input_x_gradient"`, or `"cd"` (contextual decomposition).

# %%
wavelet = AdaptiveWavelet("db5", levels=3, init_noise=0.3, generator=torch.Generator().manual_seed(1))
initial = wavelet_distance(wavelet, "db5")
loss_fn = AWDLoss(teacher, wavelet, lam_l1=0.1, lam_interp=0.1, method="saliency")
optimizer = torch.optim.Adam(wavelet.parameters(), lr=1e-2)
for epoch in range(2 if QUICK else 10):
    for index in torch.randperm(split).split(100):
        terms = loss_fn(x_train[index])
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    print(f"epoch {epoch}: " + ", ".join(f"{k} {float(v):.3g}" for k, v in terms.items()))
print(f"distance to db5: {initial:.2f} -> {wavelet_distance(wavelet, 'db5'):.2f}")

# %% [markdown]
# ## Or `fit_wavelet`: mini-batches, a progress bar, early stopping
# It keeps going from where the loop above stopped, and restores the filter with the
# lowest validation loss.

# %%
wavelet, history = fit_wavelet(
    teacher, x_train, wavelet, lam_l1=0.1, lam_interp=0.1, lr=1e-2, epochs=3 if QUICK else 30,
    validation=x_test, patience=5, progress=False,
)
print(f"after fit_wavelet: distance to db5 {wavelet_distance(wavelet, 'db5'):.2f}, "
      f"reconstruction error {history['reconstruction'][-1]:.4f}, epochs run {len(history['total'])}")

# %% [markdown]
# ## The learned wavelet: a picture, a PyWavelets wavelet, a TRIM transform

# %%
print("picture:", wavelet.plot(os.path.join(OUT, "tutorial05_wavelet.png")))
learned = wavelet.to_pywt()
print("pywt.wavedec with the learned wavelet, coefficient lengths:",
      [c.shape[-1] for c in pywt.wavedec(X[0], learned, mode="zero", level=3)])

# CD scores of each scale for the teacher's output, through the learned wavelet
transform = wavelet.transform()
scales = transform.scale_ids(64)
with torch.no_grad():
    scores = TRIM(ContextualDecomposition(teacher), transform).attribute(x_test[:200], feature_mask=scales)
by_scale = [float(scores[:, scales[0] == s].mean(1).abs().mean()) for s in range(4)]
print("mean |CD score| per scale [cA_3, cD_3, cD_2, cD_1]:", [round(v, 3) for v in by_scale])

# %% [markdown]
# ## The distilled model
# `WaveletDistilledRegressor` keeps the 6 largest coefficients of each scale and fits a linear
# model on them: a scikit-learn estimator. Given the teacher, `fit` adapts the wavelet
# first, so `GridSearchCV` chooses the interpretation weight by cross-validation.

# %%
fixed = WaveletDistilledRegressor("db5", levels=3, m=6).fit(X[:split], y[:split])
search = GridSearchCV(
    WaveletDistilledRegressor("db5", levels=3, m=6, teacher=teacher, lam_l1=0.1, init_noise=0.3, lr=1e-2,
                              epochs=2 if QUICK else 15, random_state=0),
    {"lam_interp": [0.01, 0.1] if QUICK else [0.01, 0.1, 1.0]}, cv=2 if QUICK else 3,
)
search.fit(X[:split], y[:split])
results = {
    "equals_pywt": equals_pywt,
    "scale_scores": by_scale,  # [cA_3, cD_3, cD_2, cD_1]
    "distilled_r2": {"fixed db5": fixed.score(X[split:], y[split:]), "AWD": search.score(X[split:], y[split:])},
    "lam_interp": search.best_params_["lam_interp"],
}
print(f"distilled R^2 on the test split: fixed db5 {results['distilled_r2']['fixed db5']:.3f}, "
      f"AWD {results['distilled_r2']['AWD']:.3f} (lam_interp {results['lam_interp']})")
with open(os.path.join(OUT, "tutorial05_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks
