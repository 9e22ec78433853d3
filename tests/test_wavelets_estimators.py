"""captum_cd.wavelets.estimators: top_coefficients by hand, the distilled regressor and
classifier, grid search over their hyper-parameters, and scikit-learn's estimator checks."""

import warnings

import numpy as np
import pytest
import pywt
import torch
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from captum_cd.wavelets import top_coefficients, WaveletDistilledRegressor, WaveletDistilledClassifier


pytestmark = pytest.mark.usefixtures("one_thread")


def test_top_coefficients_by_hand():
    coeffs = [np.array([[1.0, -3.0], [0.5, 0.2]]), np.array([[2.0, -1.0, 4.0], [-5.0, 0.0, 1.0]])]
    np.testing.assert_array_equal(top_coefficients(coeffs, 2), [[-3.0, 1.0, 4.0, 2.0], [0.5, 0.2, -5.0, 1.0]])
    np.testing.assert_array_equal(top_coefficients(coeffs, 1), [[-3.0, 4.0], [0.5, -5.0]])
    # a scale with fewer than m coefficients keeps all of them
    np.testing.assert_array_equal(top_coefficients(coeffs, 3), [[-3.0, 1.0, 4.0, 2.0, -1.0], [0.5, 0.2, -5.0, 1.0, 0.0]])
    # ties keep their order
    np.testing.assert_array_equal(top_coefficients([np.array([[1.0, -1.0, 0.5]])], 2), [[1.0, -1.0]])


def _planted(n_samples=200, n=64, seed=0):
    """Signals with one large db5 coefficient per detail scale at a random position (and
    small ones elsewhere), built by the orthogonal (periodization) inverse DWT; y is a
    linear function of the planted coefficients."""
    rng = np.random.default_rng(seed)
    template = pywt.wavedec(np.zeros(n), "db5", mode="periodization", level=2)
    X, amplitudes = [], []
    for _ in range(n_samples):
        coeffs = [0.05 * rng.standard_normal(len(c)) for c in template]
        planted = 3 + rng.standard_normal(len(template) - 1)  # |a| > ~1, far above the rest
        for j, a in enumerate(planted, start=1):
            coeffs[j][rng.integers(len(coeffs[j]))] = a * rng.choice([-1, 1])
        X.append(pywt.waverec(coeffs, "db5", mode="periodization"))
        amplitudes.append([max(c, key=abs) for c in coeffs[1:]])
    amplitudes = np.array(amplitudes)
    y = 2.0 * amplitudes[:, 0] - 1.5 * amplitudes[:, 1] + 0.05 * rng.standard_normal(n_samples)
    return np.array(X), y


def test_distilled_regressor_and_classifier_fit_predict_and_attributes():
    X, y = _planted()
    model = WaveletDistilledRegressor("db5", levels=2, mode="periodization", m=1)
    assert model.fit(X, y) is model
    assert model.n_features_in_ == 64 and isinstance(model.wavelet_, pywt.Wavelet)
    assert not hasattr(model, "history_")
    fitted = {k for k in vars(model) if k.endswith("_") and not k.startswith("_")}
    assert {"wavelet_", "estimator_", "n_features_in_"} <= fitted
    assert model.score(X, y) > 0.9  # R^2: y is linear in the top coefficient of each detail scale
    expected = top_coefficients(pywt.wavedec(X, "db5", mode="periodization", level=2, axis=-1), 1)
    np.testing.assert_allclose(model.transform(X), expected)
    assert model.predict(X[:5]).shape == (5,)
    classifier = WaveletDistilledClassifier("db5", levels=2, mode="periodization", m=1)
    labels = np.where(y > 0, "up", "down")
    assert classifier.fit(X, labels) is classifier
    assert sorted(classifier.classes_) == ["down", "up"]
    assert classifier.score(X, labels) > 0.9
    assert classifier.predict_proba(X[:3]).shape == (3, 2)


def test_grid_search_over_m_and_over_lam_interp_with_a_teacher():
    X, y = _planted(n_samples=90)
    search = GridSearchCV(WaveletDistilledRegressor("db5", levels=2, mode="periodization"), {"m": [1, 2]}, cv=3).fit(X, y)
    assert search.best_params_["m"] in (1, 2) and search.best_score_ > 0.8
    assert len(search.cv_results_["params"]) == 2
    teacher = nn.Linear(64, 1).double().eval()
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor(LinearRegression().fit(X, y).coef_).view(1, 64))
    before = teacher.weight.detach().clone()
    distilled = WaveletDistilledRegressor("db5", levels=2, mode="periodization", m=1, teacher=teacher, epochs=1, batch_size=30, random_state=0)
    search = GridSearchCV(distilled, {"lam_interp": [0.0, 0.1]}, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    assert len(best.history_["total"]) == 1 and isinstance(best.wavelet_, pywt.Wavelet)
    # the adapted wavelet moved away from db5, and the teacher did not
    assert np.abs(np.array(best.wavelet_.rec_lo) - pywt.Wavelet("db5").rec_lo).max() > 0
    assert torch.equal(teacher.weight.detach(), before)


def test_distilled_with_a_teacher_is_reproducible():
    X, y = _planted(n_samples=40)
    teacher = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    make = lambda: WaveletDistilledClassifier("db5", levels=2, m=2, teacher=teacher, init_noise=0.05, epochs=1, random_state=3)  # noqa: E731
    a, b = make().fit(X, y > 0), make().fit(X, y > 0)
    np.testing.assert_array_equal(a.wavelet_.rec_lo, b.wavelet_.rec_lo)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


class _TanhSum(nn.Module):
    """A teacher for any signal length (scikit-learn's checks vary the features)."""

    def forward(self, x):
        return torch.tanh(x).sum(-1)


class _TwoClasses(nn.Module):
    def forward(self, x):
        t = torch.tanh(x).sum(-1, keepdim=True)
        return torch.cat([t, -t], -1)


# pandas (in the test extra) lets the dataframe checks run; scikit-learn skips its 4
# array-API checks itself unless SCIPY_ARRAY_API=1 (these estimators take numpy only).
@parametrize_with_checks(
    [
        WaveletDistilledRegressor(m=2),
        WaveletDistilledClassifier(m=2),
        WaveletDistilledRegressor(wavelet="haar", m=2, teacher=_TanhSum().eval(), epochs=1),
        WaveletDistilledClassifier(wavelet="haar", m=2, teacher=_TwoClasses().eval(), epochs=1),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
