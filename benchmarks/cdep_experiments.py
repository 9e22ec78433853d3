"""The CDEP paper's experiments, on Fashion-MNIST (MNIST is not available here) and SST.

- Colour task: each class coloured in training (the paper's palette), the colour of class
  9 - y at test. Regions: 8 single pixels per batch, drawn where training images are
  non-zero, penalised over all channels.
- Decoy task: a 5x5 patch in a random corner, grey value 255 - 25y in training and 25y
  at test. Regions: the four corners.
- SST decoy: a class-indicative word ("wug" for negative, "dax" for positive, nonce
  words absent from the treebank) inserted at a random position of every training
  sentence; at test every sentence gets one of the two words at random.

Methods: vanilla, CDEP, RRR and Expected Gradients (images); vanilla and CDEP (text).
Each penalty weight is chosen on a validation split drawn from the *training*
distribution (the test distribution is never seen while choosing), from a small grid,
on the first seed; then every method trains with its chosen weight on every seed.
Reported: test accuracy (mean and sd over seeds) and seconds per epoch.

Budget: to run on 2 CPU cores the image tasks train LeNet on a 12,000-image subset for
2 epochs (batch 64), Expected Gradients uses 5 references per example (50 in the paper).

    python benchmarks/cdep_experiments.py            # full: 3 seeds
    python benchmarks/cdep_experiments.py --quick    # tiny subsets, 1 seed, no grid
"""

import argparse
import time
import warnings
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from captum_cd import CDEPRegularizer
from captum_cd.datasets import (
    color_region_masks,
    decoy_corner_masks,
    encode,
    load_fashion_mnist,
    load_sst,
    make_color_mnist,
    make_decoy_mnist,
    SSTExample,
    Vocab,
)
from captum_cd.models import accuracy as model_accuracy, lenet, LSTMSentiment
from captum_cd.penalties import ExpectedGradientsPenalty, RRRPenalty

PUBLISHED = {  # MNIST in the paper
    "colour": {"vanilla": 0.2, "CDEP": 31.0, "RRR": 0.2, "Expected Gradients": 10.0},
    "decoy": {"vanilla": 60.1, "CDEP": 97.2, "RRR": 99.0, "Expected Gradients": 97.8},
    "SST decoy": {"vanilla": 56.6, "CDEP": 75.4},
}
GRIDS = {"CDEP": [1.0, 10.0, 100.0], "RRR": [1.0, 100.0, 10000.0], "Expected Gradients": [1.0, 10.0, 100.0]}


# ---------------------------------------------------------------------------- images


def image_task(name: str, size: int, quick: bool):
    g = torch.Generator().manual_seed(0)
    images, labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    order = torch.randperm(len(labels), generator=g)
    train, valid = order[:size], order[size : size + size // 5]
    test = torch.arange(1000 if quick else 10000)
    if name == "colour":
        make = lambda idx, imgs, labs, is_train: make_color_mnist(imgs[idx], labs[idx], is_train)  # noqa: E731
        regions = lambda gen: color_region_masks(images[train], 8, gen)  # noqa: E731
        channels = 3
    else:
        make = lambda idx, imgs, labs, is_train: make_decoy_mnist(imgs[idx], labs[idx], is_train, g)  # noqa: E731
        regions = lambda gen: decoy_corner_masks()  # noqa: E731
        channels = 1
    data = {
        "train": (make(train, images, labels, True), labels[train]),
        "valid": (make(valid, images, labels, True), labels[valid]),  # the training distribution
        "test": (make(test, test_images, test_labels, False), test_labels[test]),
    }
    return data, regions, channels


def train_image_model(method: str, weight: float, data, regions, channels: int, epochs: int, seed: int):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = lenet(in_channels=channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    penalty = {
        "CDEP": lambda: CDEPRegularizer(model, weight=weight),
        "RRR": lambda: RRRPenalty(model, weight=weight),
        "Expected Gradients": lambda: ExpectedGradientsPenalty(model, weight=weight, n_samples=5),
    }.get(method, lambda: None)()
    x, y = data["train"]
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(y), generator=g).split(64):
            optimizer.zero_grad()
            masks = regions(g)
            if isinstance(penalty, CDEPRegularizer):
                logits, extra = penalty.output_and_penalty(x[batch], masks, target=y[batch])
                loss = F.cross_entropy(logits, y[batch]) + extra
            else:
                loss = F.cross_entropy(model(x[batch]), y[batch])
                if penalty is not None:
                    loss = loss + penalty(x[batch], masks, y[batch])
            loss.backward()
            optimizer.step()
    seconds = (time.perf_counter() - start) / epochs
    return model.eval(), seconds


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (torch.cat([model(b).argmax(1) for b in x.split(1000)]) == y).float().mean().item()


def run_image(name: str, quick: bool, seeds: List[int]) -> Dict[str, dict]:
    data, regions, channels = image_task(name, 600 if quick else 12000, quick)
    epochs = 1 if quick else 2
    methods = ["vanilla", "CDEP", "RRR", "Expected Gradients"]
    weights = {"vanilla": 0.0}
    for method in methods[1:]:  # choose on the validation split of the training distribution
        grid = GRIDS[method][:1] if quick else GRIDS[method]
        scores = {w: accuracy(train_image_model(method, w, data, regions, channels, epochs, seeds[0])[0], *data["valid"]) for w in grid}
        weights[method] = max(scores, key=scores.get)
    results = {}
    for method in methods:
        accs, secs = [], []
        for seed in seeds:
            model, seconds = train_image_model(method, weights[method], data, regions, channels, epochs, seed)
            accs.append(accuracy(model, *data["test"]))
            secs.append(seconds)
        results[method] = {"accuracy": accs, "seconds": float(np.median(secs)), "weight": weights[method]}
    return results


# ---------------------------------------------------------------------------- text

DECOYS = ("wug", "dax")  # negative, positive; neither occurs in the treebank


def with_decoys(examples, generator, train: bool):
    out, positions = [], []
    for e in examples:
        word = DECOYS[e.label] if train else DECOYS[int(torch.randint(0, 2, (1,), generator=generator))]
        at = int(torch.randint(0, len(e.tokens) + 1, (1,), generator=generator))
        out.append(SSTExample(e.tokens[:at] + [word] + e.tokens[at:], e.label, []))
        positions.append(at)
    return out, torch.tensor(positions)


def run_text(quick: bool, seeds: List[int]) -> Dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    train, dev, test = load_sst("train"), load_sst("dev"), load_sst("test")
    if quick:  # the files are grouped by label: take random subsets
        pick = lambda items, n: [items[i] for i in torch.randperm(len(items), generator=g)[:n]]  # noqa: E731
        train, dev, test = pick(train, 600), pick(dev, 100), pick(test, 200)
    train_d, positions = with_decoys(train, g, True)
    dev_d, _ = with_decoys(dev, g, True)  # validation: the training distribution
    test_d, _ = with_decoys(test, g, False)
    vocab = Vocab(e.tokens for e in train_d)
    x, lengths, y = encode(train_d, vocab)
    decoy_masks = torch.zeros_like(x, dtype=torch.float32)
    decoy_masks[torch.arange(len(y)), positions] = 1.0
    splits = {"valid": encode(dev_d, vocab), "test": encode(test_d, vocab)}
    epochs = 1 if quick else 4

    def fit(weight: float, seed: int):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = LSTMSentiment(len(vocab))
        reg = CDEPRegularizer(model, weight=weight, layer=model.embed, form="text")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        start = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(y), generator=gen).split(64):
                width = int(lengths[batch].max())
                tokens, masks = x[batch, :width], decoy_masks[batch, :width]
                optimizer.zero_grad()
                if weight:
                    logits, penalty = reg.output_and_penalty(tokens, masks, target=y[batch], additional_forward_args=(lengths[batch],))
                    loss = F.cross_entropy(logits, y[batch]) + penalty
                else:
                    loss = F.cross_entropy(model(tokens, lengths[batch]), y[batch])
                loss.backward()
                optimizer.step()
        return model.eval(), (time.perf_counter() - start) / epochs

    grid = GRIDS["CDEP"][:1] if quick else GRIDS["CDEP"]
    def text_accuracy(model, split):
        ids, lens, labels = splits[split]
        return model_accuracy(model, ids, labels, lens)

    scores = {w: text_accuracy(fit(w, seeds[0])[0], "valid") for w in grid}
    weights = {"vanilla": 0.0, "CDEP": max(scores, key=scores.get)}
    results = {}
    for method, weight in weights.items():
        runs = [fit(weight, seed) for seed in seeds]
        results[method] = {
            "accuracy": [100 * text_accuracy(m, "test") for m, _ in runs],
            "seconds": float(np.median([s for _, s in runs])),
            "weight": weight,
        }
    return results


def report(task: str, results: Dict[str, dict]) -> None:
    print(f"\n{task}: test accuracy (%), mean ± sd over {len(next(iter(results.values()))['accuracy'])} seeds")
    print(f"  {'method':<20}{'accuracy':>16}{'published (MNIST)':>19}{'weight':>9}{'s / epoch':>11}")
    for method, r in results.items():
        published = PUBLISHED[task].get(method)
        print(
            f"  {method:<20}{np.mean(r['accuracy']):>9.1f} ± {np.std(r['accuracy']):<4.1f}"
            f"{(f'{published:.1f}' if published is not None else '-'):>19}{r['weight']:>9g}{r['seconds']:>11.1f}"
        )


def main(quick: bool) -> None:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    seeds = [0] if quick else [0, 1, 2]
    start = time.perf_counter()
    for task in ("colour", "decoy"):
        report(task, run_image(task, quick, seeds))
    report("SST decoy", run_text(quick, seeds))
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
