"""The demo and the benchmarks run end to end (quick modes); the tutorials are
tests/test_notebooks.py."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=900, tables=None):
    """Runs a script from the repository root; with ``tables`` (a path), the tables it prints
    are also recorded there (benchmarks/_timing.print_table)."""
    # (timeout: a guard against a hang only; a quick run takes seconds to a minute, ten times
    # that on a machine other jobs keep busy)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ROOT}
    if tables is not None:
        env["CAPTUM_CD_TABLES"] = str(tables)
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def read_tables(path):
    """The tables a script recorded: title -> rows as dicts keyed by the headers."""
    tables = {}
    for line in path.read_text().splitlines():
        table = json.loads(line)
        tables[table["title"]] = [dict(zip(table["headers"], row)) for row in table["rows"]]
    return tables


def number(cell):
    """A table cell such as "12.30", "4.20x" or "3.5e-03" as a float."""
    return float(cell.rstrip("x%"))


def ratio_fits_rounding(ratio, num, den, half_num, half_den, half_ratio):
    """Whether a printed ratio of two unrounded numbers fits their printed values: each
    cell may be off by half its last digit (an exact interval, small denominators too)."""
    low = (num - half_num) / (den + half_den)
    high = (num + half_num) / (den - half_den) if den > half_den else float("inf")
    return low - half_ratio - 1e-9 <= ratio <= high + half_ratio + 1e-9


def check_timing_table(rows, reference, time_column="median ms", ratio_column="ratio to forward"):
    """Every time positive, every ratio the row's time over the reference row's time."""
    base = number(next(r for r in rows if r["method"] == reference)[time_column])
    for row in rows:
        assert number(row[time_column]) > 0, row
        assert abs(number(row[ratio_column]) - number(row[time_column]) / base) <= 0.01 * number(row[ratio_column]) + 0.006, row


def test_demo(tmp_path):
    run("examples/demo.py", "--out", str(tmp_path))
    results = json.loads((tmp_path / "demo_results.json").read_text())
    assert results["test accuracy"] > 0.8  # digits: the model learned something to explain
    methods = results["methods"]
    assert sorted(methods) == ["CD", "DeepLift", "FeatureAblation", "IntegratedGradients"]
    assert abs(methods["CD"]["corr. with CD"] - 1) < 1e-6 and all(-1 <= m["corr. with CD"] <= 1 for m in methods.values())
    assert all(m["seconds"] > 0 for m in methods.values())
    assert (tmp_path / "demo.png").stat().st_size > 0
    differ = results["where they differ"]
    assert 0 < differ["inked regions"] <= 16 * 32
    for name in ("IntegratedGradients", "DeepLift"):
        d = differ[name]
        assert 50 < d["same sign %"] <= 100  # the methods mostly agree on the direction
        # counting the regions' interactions brings CD closer to the gradient methods, which share them out
        assert abs(d["mean CD with interactions - it"]) < abs(d["mean CD - it"]) and d["corr. CD with interactions"] > d["corr. CD"]


def test_speed_benchmark_quick(tmp_path):
    run("benchmarks/cd_speed.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    for title, reference in (("A: 1 group, batch 64", "forward"), ("B: 64 groups, 1 image", "forward (batch 65)")):
        rows = tables[title]
        methods = {r["method"] for r in rows}
        assert {reference, "CD", "CD, eager elementwise", "DeepLift", "FeatureAblation"} <= methods
        check_timing_table(rows, reference)


def test_trim_table2_quick_cd_finds_the_bin():
    out = run("benchmarks/trim_table2.py", "--quick")
    cd_error = float(next(line for line in out.splitlines() if line.startswith("CD ")).split()[1])
    assert cd_error < 5.0  # chance of picking bin 12 among 51 bins is 2%: an error of 98%


def test_acd_speed_quick(tmp_path):
    run("benchmarks/acd_speed.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    whole = next(rows for title, rows in tables.items() if title.startswith("AgglomerativeCD, whole hierarchy"))
    assert [r["case"] for r in whole] == ["28x28, untrained, 4x4 blocks", "28x28, trained, 4x4 blocks", "64x64, untrained, 8x8 blocks"]
    for r in whole:
        units, passes, groups, steps = (int(r[k]) for k in ("units", "passes", "groups", "iterations"))
        assert units == 49 if r["case"].startswith("28") else units == 64, r
        assert 0 < number(r["CD s"]) <= number(r["median s"]) and number(r["own s"]) >= 0, r
        # every unit alone and the whole input are scored; a pass per 512 units, then at
        # most one per iteration and one per final merge; no pass is empty or over 512
        assert units + steps + 1 <= groups <= 512 * passes, r
        assert 2 <= passes <= -(-units // 512) + steps + int(r["merges"]) + 1, r
    (original,) = (rows for title, rows in tables.items() if title.startswith("AgglomerativeCD against the original"))
    for r in original:
        assert int(r["levels"]) == int(r["iterations"]) and int(r["groups"]) <= int(r["CD calls"]) + 1, r
        assert ratio_fits_rounding(number(r["speed-up"]), number(r["acd 0.0.2 s"]), number(r["captum-cd s"]), 0.005, 0.0005, 0.5), r


def test_text_speed_quick(tmp_path):
    run("benchmarks/text_speed.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    assert len(tables) == 2  # the LSTM and the transformer
    for rows in tables.values():
        assert "CD, 64 phrases" in {r["method"] for r in rows}
        check_timing_table(rows, "forward (batch 65)")



def test_sst_reality_quick(tmp_path):
    from experiments.datasets.sst import load_sst

    run("benchmarks/sst_reality.py", "--quick", "--out", str(tmp_path))
    results = json.loads((tmp_path / "sst_reality_results.json").read_text())
    sentences = load_sst("test")[: results["test sentences"]]
    phrases = sum(p.label is not None and p.stop - p.start >= 2 for e in sentences for p in e.phrases)
    assert sorted(results["models"]) == ["LSTM", "Transformer"]
    for name, model in results["models"].items():
        assert 0 <= model["test accuracy"] <= 1 and model["training seconds"] > 0, name
        assert model["phrases"] == phrases > 0, name  # every labelled phrase of two or more words
        methods = model["methods"]
        assert sorted(methods) == ["CD", "LayerDeepLift", "LayerIntegratedGradients", "leave phrase out"], name
        assert all(math.isfinite(m["corr. with phrase label"]) and -1 <= m["corr. with phrase label"] <= 1 for m in methods.values()), name
        assert len({m["negations"] for m in methods.values()}) == 1, name  # the same negation nodes for every method
        for m in methods.values():
            assert (m["negations flipped %"] is None) == (m["negations"] == 0), name
            assert m["negations flipped %"] is None or 0 <= m["negations flipped %"] <= 100, name
    acd = results["AgglomerativeCD"]
    assert acd["seconds"] > 0 and 1 <= acd["levels"] <= acd["tokens"] == 50


def test_cdep_experiments_quick(tmp_path):
    out = run("benchmarks/cdep_experiments.py", "--quick", "--out", str(tmp_path))
    image_tasks = ("Fashion-MNIST decoy", "MNIST decoy", "Fashion-MNIST colour", "MNIST colour")
    records = json.loads((tmp_path / "cdep_sweeps.json").read_text())["records"]
    assert {r["task"] for r in records} == {*image_tasks, "SST decoy"}
    for task in image_tasks:
        assert {r["method"] for r in records if r["task"] == task} == {"vanilla", "CDEP", "RRR", "Expected Gradients"}
    sst_methods = {r["method"] for r in records if r["task"] == "SST decoy"}
    assert sst_methods == {"vanilla", "CDEP", "CDEP, decoy only", "CDEP, interactions"}
    for r in records:  # each training: accuracies, its own time and epochs, the decoy's effect
        assert all(0 <= r[k] <= 100 for k in ("test", "valid", "decor")), r
        assert r["seconds"] > 0 and r["epochs"] >= 1 and math.isfinite(r["decoy effect"]), r
        assert ("decoy CD" in r) == (r["task"] != "Fashion-MNIST colour" and r["task"] != "MNIST colour"), r
    summary = out.split("Summary:")[1].split("Sweeps")[0]
    for task in (*image_tasks, "SST decoy"):
        assert f"| {task} | vanilla |" in summary and f"| {task} | CDEP |" in summary
    again = run("benchmarks/cdep_experiments.py", "--from-json", str(tmp_path / "cdep_sweeps.json"))
    assert again.split("Summary:")[1] == out.split("Summary:")[1]  # the same tables from the records
    resumed = run("benchmarks/cdep_experiments.py", "--quick", "--resume", "--out", str(tmp_path))
    assert resumed.startswith("0 trainings to run")  # every training is in the records


def test_cdep_pages_show_the_records():
    """The CDEP pages' tables are what the script prints from docs/cdep_sweeps.json."""
    out = run("benchmarks/cdep_experiments.py", "--from-json", "docs/cdep_sweeps.json")
    printed = ["\n".join(line for line in block.splitlines() if line.startswith("|")) for block in out.split("Sweeps")]
    for page, names in (("README.md", ["summary"]), ("docs/cdep.md", ["summary"]), ("docs/cdep_evidence.md", ["summary", "sweeps"])):
        text = open(os.path.join(ROOT, page)).read()
        for name in names:
            shown = text.split(f"<!-- {name} -->\n")[1].split(f"\n<!-- /{name} -->")[0]
            assert shown == printed[name == "sweeps"], (page, name)


def test_cdep_tables_fill_empty_markers(tmp_path):
    """--update-docs fills a marker pair with nothing between them (a new page)."""
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- summary -->\n<!-- /summary -->\nafter\n")
    run("benchmarks/cdep_experiments.py", "--from-json", "docs/cdep_sweeps.json", "--update-docs", str(page))
    head, rest = page.read_text().split("<!-- summary -->\n")
    table, tail = rest.split("\n<!-- /summary -->")
    assert head == "before\n" and tail == "\nafter\n"
    assert table.startswith("| task | method | published |") and "| MNIST colour | CDEP |" in table


def test_cdep_cost_quick(tmp_path):
    run("benchmarks/cdep_cost.py", "--quick", "--runs", "2", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    steps = [rows for title, rows in tables.items() if title.startswith("Training step")]
    assert len(steps) == 2  # one table a run
    for rows in steps:
        methods = {r["method"] for r in rows}
        assert {"vanilla", "CDEP, 8 regions", "CDEP, 8 regions, shared pass", "RRR", "Expected Gradients (50 refs)"} <= methods
        check_timing_table(rows, "vanilla", ratio_column="time ratio")
        vanilla = next(r for r in rows if r["method"] == "vanilla")
        assert number(vanilla["saved-for-backward ratio"]) == 1.0
        assert all(number(r["saved-for-backward ratio"]) > 0 for r in rows)
    (goals,) = (rows for title, rows in tables.items() if title.startswith("CDEP against"))
    assert [r["case"] for r in goals] == ["CDEP, 1 region", "CDEP, 1 region, shared pass", "CDEP, 8 regions", "CDEP, 8 regions, shared pass"]
    for r in goals:  # each run's ratio is its table's, and the worst is their largest
        runs = [number(next(row for row in rows if row["method"] == r["case"])["time ratio"]) for rows in steps]
        assert [number(r["run 1"]), number(r["run 2"])] == runs and number(r["worst"]) == max(runs), r



def test_cd_memory_quick(tmp_path):
    run("benchmarks/cd_memory.py", "--quick", tables=tmp_path / "tables.jsonl")
    ((title, rows),) = read_tables(tmp_path / "tables.jsonl").items()
    assert [r["model"].split(",")[0] for r in rows] == ["LeNet", "LSTM (128)", "Transformer (2 layers", "ResNet-18 (1 block a stage)"]
    for r in rows:  # every call holds memory of its own, and the ratio is the row's
        forward, cd = number(r["forward (batch 65) MiB"]), number(r["CD, 64 groups MiB"])
        assert forward > 0 and cd > 0, r
        assert abs(number(r["CD / forward"]) - cd / forward) <= 0.01 * cd / forward + 0.006, r
    if "high-water mark" in title:  # exact, not sampled: the peak holds at least LeNet's first conv output at batch 65
        assert number(rows[0]["forward (batch 65) MiB"]) >= 65 * 32 * 24 * 24 * 4 / 2**20, rows[0]




def test_awd_benchmark_quick(tmp_path):
    run("benchmarks/awd_simulation.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    epoch, simulation, mnist = (next(rows for title, rows in tables.items() if title.startswith(start))
                                for start in ("AWD epoch", "AWD simulation", "mnist1d"))
    assert {"captum-cd, saliency", "captum-cd, input_x_gradient", "captum-cd, cd"} <= {r["implementation"] for r in epoch}
    assert all(number(r["seconds"]) > 0 for r in epoch)
    for row in simulation:
        assert all(number(row[k]) >= 0 for k in ("distance before", "after", "reconstruction", "validity")), row
        assert number(row["distilled R^2"]) <= 1
    noisy = next(r for r in simulation if r["start"] == "db5 + noise 0.3")
    assert number(noisy["after"]) < number(noisy["distance before"])  # fitting moves the wavelet towards db5
    assert {r["model"] for r in mnist} == {"CNN teacher", "AWD distilled", "db5 distilled"}
    assert all(0 <= number(r["test accuracy"]) <= 1 for r in mnist)



def test_scale_speed_quick(tmp_path):
    run("benchmarks/scale_speed.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    assert [title.split(" ")[0] for title in tables] == ["resnet18", "resnet50", "BERT-base-size", "GPT-2-small-size"]
    for title, rows in tables.items():
        methods = {row["method"]: row for row in rows}
        expected = {"forward", "CD (attribute, 16 groups)", "FeatureAblation (16 groups)", "DeepLift"}
        if title.startswith("resnet"):  # windows apply to images only
            expected.add("CD without windows (16 groups)")
        assert expected <= set(methods), (title, sorted(methods))
        base = number(methods["forward"]["median ms"])
        for name, row in methods.items():
            if row["median ms"] == "-":  # a method that cannot run on the model says why
                assert name == "DeepLift" and row[""].startswith("failed"), row
                continue
            seconds, ratio = number(row["median ms"]), number(row["time / forward"])
            # the cells are rounded: ms to 0.1 (both times), the ratio to 0.1
            assert seconds > 0 and ratio_fits_rounding(ratio, seconds, base, 0.05, 0.05, 0.05), row


def test_locality_bound_quick():
    out = run("benchmarks/locality_bound.py", "--quick")
    share = float(out.split("conv work inside the boxes:")[1].split("%")[0])
    assert 0 < share <= 100  # a share of the work, measured from the relevant parts' supports
    dense, boxes = (float(out.split(f"{kind} ")[1].split(" GFLOP")[0]) for kind in ("dense", "in windows"))
    assert 0 < boxes < dense  # the windows' convolutions are counted by the profiler, not assumed


def test_attribute_passes_quick():
    out = run("benchmarks/attribute_passes.py", "--quick")
    assert float(out.split("largest difference between the two:")[1].split()[0]) < 1e-5
    assert "passes of whole examples" in out


def test_llm_speed_quick(tmp_path):
    run("benchmarks/llm_speed.py", "--quick", tables=tmp_path / "tables.jsonl")
    tables = read_tables(tmp_path / "tables.jsonl")
    titles = [title.split(" (")[0] for title in tables]
    assert titles == ["GPT-2-small-size", "GPT-2-small-size", "Llama-style", "Llama-style"], titles
    for title, rows in tables.items():
        if "peak memory" in title:
            (row,) = rows
            forward, cd = number(row["forward (batch G + 1) MiB"]), number(row["CD MiB"])
            # (MiB rounded to 0.1: a quick model's CD may hold less than that)
            assert forward > 0 and cd >= 0 and abs(number(row["CD / forward"]) - cd / forward) <= 0.005 + 0.05 * (1 + cd / forward) / forward
            continue
        cells = {(row["prompt"], row["target"]) for row in rows}
        assert {target for _, target in cells} == {"1", "4"}
        for cell in cells:
            here = [row for row in rows if (row["prompt"], row["target"]) == cell]
            methods = {(row["features"], row["method"]) for row in here}
            assert {("every token", m) for m in ("CD", "FeatureAblation", "KernelShap", "LayerIntegratedGradients")} <= methods
            assert {("8 spans", m) for m in ("CD", "FeatureAblation", "KernelShap")} <= methods  # IG: token inputs only
            base = number(next(r for r in here if r["method"] == "forward")["median ms"])
            for row in here:  # ms rounded to 0.1 (both times), the ratio to 0.1
                seconds, ratio = number(row["median ms"]), number(row["time / forward"])
                assert seconds > 0 and ratio_fits_rounding(ratio, seconds, base, 0.05, 0.05, 0.05), row



def test_precision_quick():
    """float32 against float64 on three zoo models: a row each, the ratios the quotients."""
    rows = [line.split("|")[1:-1] for line in run("benchmarks/precision.py", "--quick").splitlines() if line.startswith("| torchvision")]
    assert [r[0].strip() for r in rows] == ["torchvision resnet18", "torchvision mobilenet_v2", "torchvision vit (2 layers, width 64)"]
    for name, model, cd, ratio, l2, moved in rows:
        assert abs(number(ratio) - number(cd) / max(number(model), 2.0**-24)) <= 0.06 * number(ratio) + 1, name
        assert number(cd) <= 1e5 * max(number(model), 2.0**-24)  # the bound the zoo tests hold
