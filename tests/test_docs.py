"""The documentation site builds with warnings as errors, and a browser shows its pages.

One Sphinx build (notebooks not executed: tests/test_notebooks.py runs them), then
Debian's chromium, headless, renders the home page and the API page of
ContextualDecomposition and we read the text it drew (the DOM after scripts ran).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-D", "nb_execution_mode=off", "docs", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def rendered_text(page, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (./run_tests.sh installs it: apt-get install chromium)"
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]
    result = subprocess.run([chromium, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_home_page_renders(site, tmp_path):
    dom = rendered_text(site / "index.html", tmp_path)
    assert "Contextual decomposition (CD) and its family as native" in dom
    for guide in ("Language models", "AgglomerativeCD", "CDEPRegularizer", "API reference"):
        assert guide in dom, guide


def test_api_page_renders_the_docstrings(site, tmp_path):
    dom = rendered_text(site / "api" / "contextual_decomposition.html", tmp_path)
    assert 'id="captum_cd.ContextualDecomposition"' in dom
    for name in ("decompose", "interactions", "stop_at_softmax", "feature_mask", "LayerContextualDecomposition"):
        assert name in dom, name
    assert "Decomposes the model’s output for G feature groups in one batched pass" in dom  # the docstring's own words


def load_conf():
    spec = importlib.util.spec_from_file_location("docs_conf", os.path.join(ROOT, "docs", "conf.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_an_undocumented_public_name_is_a_warning(monkeypatch):
    """What makes the build fail for a public name missing from the API pages."""
    conf = load_conf()
    warnings = []
    monkeypatch.setattr(conf.logging, "getLogger", lambda name: types.SimpleNamespace(warning=warnings.append))
    documented = {f"captum_cd.{name}": None for name in ("ContextualDecomposition", "TRIM")}
    env = types.SimpleNamespace(get_domain=lambda name: types.SimpleNamespace(objects=documented))
    conf.check_api_coverage(None, env)
    named = {w.split()[2] for w in warnings}
    assert "captum_cd.AgglomerativeCD" in named and "captum_cd.transforms.Fourier1d" in named
    assert not named & {"captum_cd.TRIM", "captum_cd.ContextualDecomposition"}
