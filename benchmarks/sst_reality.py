"""Reality checks of CD on the Stanford Sentiment Treebank (binary task), side by side
with Captum's methods.

1. Train a small LSTM and a small transformer on the training split (sentences and their
   labelled phrases), report test accuracy.
2. Phrase check (the CD paper's): for every labelled, non-neutral phrase of two or more
   words in the test trees, the correlation between the phrase's score and its treebank
   label (0-4). Scores of the positive-minus-negative logit: CD of the phrase as a group
   (all phrases of a sentence in one batched pass); LayerIntegratedGradients and
   LayerDeepLift on the embedding, summed over the phrase's words; and leaving the phrase
   out (the drop in the score when its words are deleted).
3. Negation check: for nodes "not/n't/never/no + phrase" whose phrase is non-neutral,
   how often the score of the negated phrase has the opposite sign to the score of the
   phrase alone (where the treebank says the polarity flips). A sum of word scores
   flips only if the negation word alone outweighs the phrase.
4. AgglomerativeCD on a 50-token sentence with the LSTM: time.

    python benchmarks/sst_reality.py            # the full run (several minutes)
    python benchmarks/sst_reality.py --quick    # small models, 30 test sentences

The tables are printed and written, with the counts behind them, to
``<out>/sst_reality_results.json`` (``--out``, default ``outputs``).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from captum.attr import LayerDeepLift, LayerIntegratedGradients
from torch import nn

from captum_cd import AgglomerativeCD, ContextualDecomposition, token_masks

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets.sst import NEGATIONS  # noqa: E402
from experiments.models import accuracy, LSTMSentiment, train_classifier, TransformerSentiment  # noqa: E402
from experiments.sst_phrases import is_scored, PositiveMinusNegative, sst_data  # noqa: E402

try:
    from benchmarks._timing import progress
except ImportError:
    from _timing import progress


def phrase_scores(score_model, embed, ids, spans):
    """Scores of the given spans of one sentence (1, T) by each method."""
    masks = token_masks(spans, ids.shape[1])
    with torch.no_grad():
        rel, _ = ContextualDecomposition(score_model, layer=embed).decompose(ids, masks)
    words_ig = LayerIntegratedGradients(score_model, embed).attribute(ids, baselines=torch.zeros_like(ids), n_steps=50)
    words_dl = LayerDeepLift(score_model, embed).attribute(ids, baselines=torch.zeros_like(ids))
    per_word = {name: w.sum(-1)[0].detach() for name, w in (("LayerIntegratedGradients", words_ig), ("LayerDeepLift", words_dl))}
    with torch.no_grad():
        full = score_model(ids)[0]
        # an emptied sentence becomes one unknown token (all padding would leave nothing to attend to)
        kept = [torch.cat([ids[0, :s], ids[0, e:]]) if e - s < ids.shape[1] else ids.new_ones(1) for s, e in spans]
        lengths = torch.tensor([len(k) for k in kept])
        deleted = torch.stack([nn.functional.pad(k, (0, int(lengths.max()) - len(k))) for k in kept])
        occlusion = full - score_model.model(deleted, lengths).diff(dim=1)[:, 0]
    scores = {"CD": rel[:, 0].numpy(), "leave phrase out": occlusion.numpy()}
    for name, w in per_word.items():
        scores[name] = np.array([w[s:e].sum().item() for s, e in spans])
    return scores


def evaluate(model, test, vocab, limit):
    score_model = PositiveMinusNegative(model).eval()
    labels, negations = [], []
    scores = {}
    for done, example in enumerate(test[:limit]):
        if done % 200 == 0:
            progress(f"scoring phrases: sentence {done} of {limit}")
        ids = torch.tensor([vocab.encode(example.tokens)])
        spans, fine, negated = [], [], []
        for p in example.phrases:
            if is_scored(p):
                spans.append((p.start, p.stop))
                fine.append(p.fine_label)
            if len(p.children) == 2 and p.children[0][1] - p.children[0][0] == 1 and example.tokens[p.children[0][0]] in NEGATIONS:
                child = next((c for c in example.phrases if (c.start, c.stop) == p.children[1]), None)
                if child is not None and child.label is not None and p.label is not None:
                    negated.append(((p.start, p.stop), p.children[1], p.label != child.label))
        extra = [span for pair in negated for span in pair[:2]]
        if not spans and not extra:
            continue
        result = phrase_scores(score_model, model.embed, ids, spans + extra)
        for name, values in result.items():
            scores.setdefault(name, []).extend(values[: len(spans)])
            rest = values[len(spans) :]
            for i, (_, _, flips) in enumerate(negated):
                negations.append((name, rest[2 * i], rest[2 * i + 1], flips))
        labels.extend(fine)
    correlations = {name: float(np.corrcoef(values, labels)[0, 1]) for name, values in scores.items()}
    flip_rates = {}
    for name in scores:
        rows = [(node, child) for n, node, child, flips in negations if n == name and flips]
        flip_rates[name] = (100.0 * np.mean([np.sign(a) != np.sign(b) for a, b in rows]) if rows else float("nan"), len(rows))
    return correlations, flip_rates, len(labels)


def acd_time(model, vocab, test):
    long_tokens = [t for e in sorted(test, key=lambda e: -len(e.tokens))[:3] for t in e.tokens][:50]
    ids = torch.tensor([vocab.encode(long_tokens)])
    agg = AgglomerativeCD(model, layer=model.embed)
    target = int(model(ids).argmax(1))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        h = agg.hierarchy(ids, target, score="difference")
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(h.levels)


def main(quick: bool, out_dir: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    # quick: the first 1,500 training sentences; the full run: their labelled phrases
    data = sst_data(sentences=1500 if quick else None, phrases=not quick)
    test, vocab = data.test, data.vocab
    (x, lengths, y), (x_test, l_test, y_test) = data.train_tensors, data.test_tensors
    epochs = 1 if quick else 2
    models = {"LSTM": LSTMSentiment(len(vocab)), "Transformer": TransformerSentiment(len(vocab))}
    limit = 30 if quick else len(test)
    results = {"test sentences": limit, "models": {}}
    for name, model in models.items():
        progress(f"training the {name}")
        start = time.perf_counter()
        train_classifier(model, x, y, epochs=epochs, batch_size=128, lengths=lengths)
        seconds = time.perf_counter() - start
        test_accuracy = accuracy(model, x_test, y_test, l_test)
        print(f"\n{name}: test accuracy {100 * test_accuracy:.1f}% (trained in {seconds:.0f} s)")
        correlations, flips, count = evaluate(model, test, vocab, limit)
        print(f"  {'method':<26}{'corr. with phrase label':>24}{'negations flipped':>20}")
        for method, corr in correlations.items():
            rate, n = flips[method]
            print(f"  {method:<26}{corr:>24.3f}{rate:>15.1f}% of {n}")
        print(f"  ({count} phrases of {limit} test sentences)")
        results["models"][name] = {
            "test accuracy": test_accuracy,
            "training seconds": seconds,
            "phrases": count,
            "methods": {
                method: {
                    "corr. with phrase label": corr,
                    "negations flipped %": None if math.isnan(flips[method][0]) else flips[method][0],
                    "negations": flips[method][1],
                }
                for method, corr in correlations.items()
            },
        }
    seconds, levels = acd_time(models["LSTM"], vocab, test)
    print(f"\nAgglomerativeCD, 50-token sentence, LSTM: {seconds:.2f} s ({levels} levels)")
    results["AgglomerativeCD"] = {"model": "LSTM", "tokens": 50, "seconds": seconds, "levels": levels}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "sst_reality_results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="outputs", help="folder for sst_reality_results.json (default: outputs)")
    arguments = parser.parse_args()
    main(arguments.quick, arguments.out)
