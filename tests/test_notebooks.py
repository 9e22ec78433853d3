"""The tutorials are notebooks (tutorials/*.ipynb, paired with the # %% scripts beside them)
that run from any folder: each is copied to an empty folder and executed there by a Jupyter
kernel, in its quick mode, with only the installed package importable (not the
repository's experiments/ or tests/), and what it computed is checked."""

import json
import math
import os
import shutil

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = sorted(name[:-6] for name in os.listdir(os.path.join(ROOT, "tutorials")) if name.endswith(".ipynb"))


def execute(name, tmp_path, monkeypatch):
    """Runs tutorials/<name>.ipynb in a folder of its own, its results written to
    ``tmp_path``; returns the executed notebook."""
    folder, package = tmp_path / "elsewhere", tmp_path / "package"
    folder.mkdir(), package.mkdir()
    shutil.copy(os.path.join(ROOT, "tutorials", f"{name}.ipynb"), folder)
    os.symlink(os.path.join(ROOT, "captum_cd"), package / "captum_cd")  # this checkout's package, and nothing else
    from experiments.datasets.sst import find_sst_root

    for key, value in {"CAPTUM_CD_QUICK": "1", "CAPTUM_CD_OUT": str(tmp_path), "CAPTUM_CD_SST": str(find_sst_root()), "PYTHONPATH": str(package)}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    notebook = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def inline_pictures(notebook):
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_is_its_script(name):
    """The notebook is generated from the script (jupytext --to ipynb tutorials/<name>.py)."""
    script = jupytext.read(os.path.join(ROOT, "tutorials", f"{name}.py"))
    notebook = nbformat.read(os.path.join(ROOT, "tutorials", f"{name}.ipynb"), as_version=4)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in script.cells], (
        f"tutorials/{name}.ipynb is out of date: run jupytext --to ipynb --set-kernel python3 tutorials/{name}.py"
    )
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # outputs come from the site's build


def test_every_tutorial_is_executed():
    executed = {line.split('execute("')[1].split('"')[0] for line in open(__file__) if 'execute("' in line and "def " not in line}
    assert executed == set(TUTORIALS)


def test_tutorial_cd_vs_captum(tmp_path, monkeypatch):
    notebook = execute("01_cd_vs_captum", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial01_results.json").read_text())
    assert sorted(results) == ["CD", "DeepLift", "FeatureAblation", "GradientShap", "IntegratedGradients"]
    for name, row in results.items():  # infidelity and sensitivity are non-negative by definition
        assert all(math.isfinite(v) and v >= 0 for v in row.values()), (name, row)
        assert row["seconds pixels"] > 0 and row["seconds blocks"] > 0
    assert (tmp_path / "tutorial01_pixels.png").exists() and (tmp_path / "tutorial01_groups.png").exists()
    assert inline_pictures(notebook) == 2  # each shown once, inline

def test_tutorial_agglomerative_cd(tmp_path, monkeypatch):
    notebook = execute("02_agglomerative_cd", tmp_path, monkeypatch)
    h = json.loads((tmp_path / "tutorial02_text0.json").read_text())  # "the acting is not bad at all , ..."
    words = 14
    assert h["kind"] == "1d" and h["unit_map"] == list(range(words)) and len(h["unit_scores"]) == words
    assert h["levels"] and all(math.isfinite(c["score"]) for level in h["levels"] for c in level)
    for level in h["levels"]:  # the components of a level are disjoint sets of the sentence's tokens
        units = [u for c in level for u in c["units"]]
        assert len(units) == len(set(units)) and set(units) <= set(range(words))
    for name in ("tutorial02_text0.png", "tutorial02_image0.png", "tutorial02_superpixels.png", "tutorial02_captum_view.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert inline_pictures(notebook) == 6  # two sentences, two digits, the superpixels, Captum's view

def test_tutorial_cdep(tmp_path, monkeypatch):
    execute("04_cdep", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial04_results.json").read_text())
    assert sorted(results) == ["0.0", "1.0"]
    for run_ in results.values():
        assert 0 <= run_["train accuracy"] <= 1 and 0 <= run_["test accuracy"] <= 1 and run_["seconds per epoch"] > 0
        assert 0 < run_["corner loss"] < 1  # a mean of sigmoids
    # the penalty trains the decoy corners' share of the logits away
    assert results["1.0"]["corner loss"] < 0.5 * results["0.0"]["corner loss"]

def test_tutorial_trim_images(tmp_path, monkeypatch):
    notebook = execute("03_trim_images", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial03_results.json").read_text())
    methods = set(results["seconds"])
    assert "CD" in methods and len(methods) > 1 and all(s > 0 for s in results["seconds"].values())
    for kind, groups in (("band scores", None), ("scale scores", 4)):  # scales: cA_3 and three detail levels
        assert set(results[kind]) == methods
        lengths = {len(scores) for scores in results[kind].values()}
        assert len(lengths) == 1 and (groups is None or lengths == {groups}), (kind, lengths)
        assert all(math.isfinite(v) for scores in results[kind].values() for v in scores)
    assert (tmp_path / "tutorial03_trim.png").stat().st_size > 0 and inline_pictures(notebook) == 1

def test_tutorial_awd(tmp_path, monkeypatch):
    execute("05_awd", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial05_results.json").read_text())
    assert results["equals_pywt"] is True
    scales = results["scale_scores"]  # [cA_3, cD_3, cD_2, cD_1]
    assert len(scales) == 4 and max(range(4), key=scales.__getitem__) == 1  # the target lives in cD_3
    assert all(r <= 1 for r in results["distilled_r2"].values()) and results["lam_interp"] in (0.01, 0.1)
    assert (tmp_path / "tutorial05_wavelet.png").stat().st_size > 0

def test_tutorial_decoder_phrases(tmp_path, monkeypatch):
    from experiments.datasets.sst import load_sst

    execute("06_decoder_phrases", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial06_results.json").read_text())
    assert 0 <= results["test accuracy"] <= 1 and results["training seconds"] > 0
    sentences = load_sst("test")[: results["sentences"]]
    assert results["phrases"] == sum(p.label is not None and p.stop - p.start >= 2 for e in sentences for p in e.phrases) > 0
    correlations = results["correlations"]
    assert sorted(correlations) == ["CD", "FeatureAblation", "LayerIntegratedGradients"]
    assert all(math.isfinite(c) and -1 <= c <= 1 for c in correlations.values())
    example = results["example"]
    assert math.isfinite(example["score"]) and sorted(example["top phrases"]) == sorted(correlations)
    for top in example["top phrases"].values():  # three phrases, largest magnitude first, inside the sentence
        assert len(top) == 3 and [abs(v) for _, _, v in top] == sorted((abs(v) for _, _, v in top), reverse=True)
        assert all(0 <= start and 2 <= stop - start < len(example["tokens"]) and stop <= len(example["tokens"]) for start, stop, _ in top)


def test_tutorial_language_models(tmp_path, monkeypatch):
    notebook = execute("07_language_models", tmp_path, monkeypatch)
    results = json.loads((tmp_path / "tutorial07_results.json").read_text())
    assert math.isfinite(results["training loss"]) and results["target"].strip()
    template = results["template"]
    assert len(template["CD"]) == len(template["FeatureAblation"]) == 3 and all(map(math.isfinite, template["CD"]))
    agreement = results["agreement"]
    assert agreement["prompts"] >= 3
    assert sorted(agreement["methods"]) == ["CD (log_prob)", "CD (logit)", "FeatureAblation", "LayerIntegratedGradients"]
    for name, row in agreement["methods"].items():
        assert row["seconds"] > 0 and -1 <= row["correlation with FeatureAblation"] <= 1 + 1e-9, name
    assert abs(agreement["methods"]["FeatureAblation"]["correlation with FeatureAblation"] - 1) < 1e-9
    for name in ("FeatureAblation", "CD", "LayerIntegratedGradients"):
        assert (tmp_path / f"tutorial07_tokens_{name}.png").stat().st_size > 0
    assert inline_pictures(notebook) == 5  # tokens by three methods, values by two
