"""Packaging: a light import, a licence, type information."""

import configparser
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_does_not_load_scikit_learn_or_pandas():
    code = "import sys, captum_cd; print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_distilled_estimators_still_import_on_use():
    from captum_cd.wavelets import WaveletDistilledRegressor
    from captum_cd.wavelets import top_coefficients, WaveletDistilledClassifier

    assert WaveletDistilledRegressor.__module__ == "captum_cd.wavelets.estimators"
    assert callable(top_coefficients) and WaveletDistilledClassifier.__name__ == "WaveletDistilledClassifier"


def test_licence_and_typing_marker_are_shipped():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert f.readline().strip() == "BSD 3-Clause License"
    assert os.path.exists(os.path.join(ROOT, "captum_cd", "py.typed"))
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    assert config["metadata"]["license"] == "BSD-3-Clause"
    assert "License :: OSI Approved :: BSD License" in config["metadata"]["classifiers"]
    assert "py.typed" in config["options.package_data"]["captum_cd"]


def test_documentation_cites_only_what_ships():
    # Docstrings and the README point to docs/methods.md, which is in the repository.
    assert os.path.exists(os.path.join(ROOT, "docs", "methods.md"))
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "captum_cd")):
        offenders += [os.path.join(folder, f) for f in files if f.endswith(".py") and "METHODS.md" in open(os.path.join(folder, f)).read()]
    with open(os.path.join(ROOT, "README.md")) as f:
        offenders += ["README.md"] if "METHODS.md" in f.read() else []
    assert offenders == []
