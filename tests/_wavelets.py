"""What the tests of captum_cd.wavelets share: tolerances, small teachers, generators."""


import numpy as np
import pywt
import torch
from torch import nn

from captum_cd.wavelets import AdaptiveWavelet

TOL = dict(rtol=1e-10, atol=1e-10)


F64 = torch.float64


METHODS = ["saliency", "input_x_gradient", "cd"]


TERMS = ["reconstruction", "lowpass_sum", "highpass_sum", "unit_norm", "cmf", "double_shift", "sparsity", "interpretation", "total"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _lowpass(name):
    return torch.tensor(pywt.Wavelet(name).rec_lo, dtype=F64)


def _close(ours, ref, **tol):
    ref = torch.as_tensor(np.asarray(ref))
    assert tuple(ours.shape) == tuple(ref.shape), (tuple(ours.shape), tuple(ref.shape))
    torch.testing.assert_close(ours.detach(), ref, **(tol or TOL))


def _teacher(n=12, outputs=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, 6), nn.Tanh(), nn.Linear(6, outputs)).double().eval()


def _noisy(wave="db2", levels=2, seed=0, **kwargs):
    return AdaptiveWavelet(wave, levels=levels, init_noise=0.05, generator=_gen(seed), dtype=F64, **kwargs)


def _stack(terms):
    return torch.stack([terms[k] for k in TERMS])


def _simulation(n_train=300, n=32, seed=0):
    """White-noise signals; the teacher is the linear map y = 1.0 cD_2[3] - 2.0 cD_1[5]
    of their db4 coefficients (its weights are those analysis rows, from pywt)."""
    rows = np.concatenate(pywt.wavedec(np.eye(n), "db4", mode="zero", level=2, axis=-1), axis=-1).T
    sizes = [len(c) for c in pywt.wavedec(np.zeros(n), "db4", mode="zero", level=2)]
    beta = np.zeros(rows.shape[0])
    beta[sizes[0] + 3], beta[sizes[0] + sizes[1] + 5] = 1.0, -2.0
    teacher = nn.Linear(n, 1, bias=False).double().eval()
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor(beta @ rows).view(1, n))
    x = torch.randn(n_train, n, dtype=F64, generator=_gen(seed))
    return teacher, x


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
