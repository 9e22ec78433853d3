"""The demo, the tutorials and the benchmarks run end to end (quick modes)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_demo(tmp_path):
    out = run("examples/demo.py", "--out", str(tmp_path))
    assert "test accuracy" in out and (tmp_path / "demo.png").stat().st_size > 0


def test_tutorial_cd_vs_captum(tmp_path):
    out = run("tutorials/01_cd_vs_captum.py", "--quick", "--out", str(tmp_path))
    for name in ("CD", "IntegratedGradients", "DeepLift", "GradientShap", "FeatureAblation"):
        assert name in out
    assert (tmp_path / "tutorial01_pixels.png").exists() and (tmp_path / "tutorial01_groups.png").exists()


def test_speed_benchmark_quick():
    out = run("benchmarks/cd_speed.py", "--quick")
    assert "A: 1 group, batch 64" in out and "B: 64 groups, 1 image" in out


def test_trim_table2_quick_cd_finds_the_bin():
    out = run("benchmarks/trim_table2.py", "--quick")
    cd_error = float(next(line for line in out.splitlines() if line.startswith("CD ")).split()[1])
    assert cd_error < 5.0  # chance of picking bin 12 among 51 bins is 2%: an error of 98%


def test_acd_speed_quick():
    out = run("benchmarks/acd_speed.py", "--quick")
    assert "iterations" in out


def test_text_speed_quick():
    out = run("benchmarks/text_speed.py", "--quick")
    assert "CD, 64 phrases" in out


def test_tutorial_agglomerative_cd(tmp_path):
    out = run("tutorials/02_agglomerative_cd.py", "--quick", "--out", str(tmp_path))
    assert "levels" in out
    for name in ("tutorial02_text0.png", "tutorial02_image0.png", "tutorial02_superpixels.png", "tutorial02_captum_view.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_sst_reality_quick():
    out = run("benchmarks/sst_reality.py", "--quick")
    assert "corr. with phrase label" in out and "AgglomerativeCD, 50-token sentence" in out


def test_cdep_experiments_quick(tmp_path):
    out = run("benchmarks/cdep_experiments.py", "--quick", "--out", str(tmp_path))
    tasks = ("MNIST colour", "MNIST decoy", "Fashion-MNIST colour", "Fashion-MNIST decoy", "SST decoy")
    summary, sweeps = out.split("Summary:")[1].split("Sweeps:")
    for task in tasks:
        assert f"| {task} | CDEP |" in summary and f"| {task} | CDEP |" in sweeps
    for method in ("RRR", "Expected Gradients"):
        assert f"| MNIST decoy | {method} |" in sweeps
    records = json.loads((tmp_path / "cdep_sweeps.json").read_text())
    assert sorted(records) == sorted(tasks)
    for name, runs in records.items():  # every run reports its accuracies and its own epoch time
        assert all(0 <= r["test"] <= 100 and r["seconds"] > 0 for r in runs), name
    assert {r["method"] for r in records["MNIST colour"]} == {"vanilla", "CDEP", "RRR", "Expected Gradients"}
    assert (tmp_path / "cdep_sweeps.png").stat().st_size > 0
    again = run("benchmarks/cdep_experiments.py", "--from-json", str(tmp_path / "cdep_sweeps.json"), "--out", str(tmp_path))
    assert again.split("Summary:")[1] == out.split("Summary:")[1].split("(total")[0]  # the same tables from the records


def test_cdep_cost_quick():
    out = run("benchmarks/cdep_cost.py", "--quick")
    assert "CDEP, 8 regions, shared pass" in out


def test_tutorial_cdep():
    out = run("tutorials/04_cdep.py", "--quick")
    assert "weight  0.0" in out and "weight  1.0" in out


def test_tutorial_trim_images(tmp_path):
    out = run("tutorials/03_trim_images.py", "--quick", "--out", str(tmp_path))
    assert "band scores" in out and "scale scores" in out
    assert (tmp_path / "tutorial03_trim.png").stat().st_size > 0


def test_tutorial_awd(tmp_path):
    out = run("tutorials/05_awd.py", "--quick", "--out", str(tmp_path))
    assert "equals pywt.wavedec: True" in out
    scales = eval(out.split("per scale [cA_3, cD_3, cD_2, cD_1]:")[1].splitlines()[0])
    assert max(range(4), key=scales.__getitem__) == 1  # the target lives in cD_3
    assert (tmp_path / "tutorial05_wavelet.png").stat().st_size > 0


def test_awd_benchmark_quick():
    out = run("benchmarks/awd_simulation.py", "--quick")
    for table in ("AWD epoch", "AWD simulation", "mnist1d"):
        assert table in out


def test_tutorial_decoder_phrases():
    out = run("tutorials/06_decoder_phrases.py", "--quick")
    assert "test accuracy" in out
    table = out.split("corr. with phrase label")[1]
    for name in ("CD", "LayerIntegratedGradients", "FeatureAblation"):
        assert -1 <= float(table.split(name)[1].split()[0]) <= 1


def test_scale_speed_quick():
    out = run("benchmarks/scale_speed.py", "--quick")
    for model in ("resnet18", "resnet50", "BERT-base-size encoder", "GPT-2-small-size decoder"):
        assert model in out
    assert out.count("CD (attribute, 16 groups)") == 4 and "time / forward" in out and "peak / forward" in out


def test_locality_bound_quick():
    out = run("benchmarks/locality_bound.py", "--quick")
    share = float(out.split("conv work inside the boxes:")[1].split("%")[0])
    assert 0 < share <= 100  # a share of the work, measured from the relevant parts' supports


def test_attribute_passes_quick():
    out = run("benchmarks/attribute_passes.py", "--quick")
    assert float(out.split("largest difference between the two:")[1].split()[0]) < 1e-5
    assert "passes of whole examples" in out
