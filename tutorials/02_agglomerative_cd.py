# %% [markdown]
# # Hierarchical interpretations with AgglomerativeCD
#
# Agglomerative contextual decomposition (ACD) builds, for one prediction, a hierarchy of
# feature groups: which words join into phrases, which pixels into regions, with a CD
# score at every node. This tutorial builds hierarchies for
#
# 1. sentences of the Stanford Sentiment Treebank with an LSTM trained on it, and
# 2. digits with a small CNN,
#
# saves the pictures, and plugs a level of the hierarchy into Captum's visualisation.
# Run it as a script: `python tutorials/02_agglomerative_cd.py` (`--quick` trains less;
# the test suite runs that). Pictures go to `outputs/tutorial02_*.png`.

# %%
import argparse
import json
import os
import time
import warnings

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from captum.attr import visualization  # noqa: E402

from captum_cd import AgglomerativeCD  # noqa: E402
from _notebook import options, show  # noqa: E402  (tutorials/_notebook.py; puts the repository root on sys.path)
from experiments.datasets import encode, load_digits, load_sst, SSTExample, Vocab  # noqa: E402
from experiments.models import accuracy, lenet, LSTMSentiment, train_classifier  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="outputs")
args = options(parser)  # CAPTUM_CD_QUICK=1 sets --quick in a notebook
os.makedirs(args.out, exist_ok=True)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. Text: an LSTM on SST
# Trained on the training sentences and their labelled phrases (a minute or two; the quick
# version uses 2,000 sentences).

# %%
train, test = load_sst("train"), load_sst("test")
vocab = Vocab(e.tokens for e in train)
if args.quick:
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:2000]
    data = [train[i] for i in pick]
else:
    data = [SSTExample(e.tokens[p.start : p.stop], p.label, []) for e in train for p in e.phrases if p.label is not None and p.stop - p.start >= 2]
x, lengths, y = encode(data, vocab)
lstm = train_classifier(LSTMSentiment(len(vocab)), x, y, epochs=1, batch_size=128, lengths=lengths)
test_ids, test_lengths, test_labels = encode(test, vocab)
print(f"LSTM test accuracy: {100 * accuracy(lstm, test_ids, test_labels, test_lengths):.1f}%")

# %% [markdown]
# Before the hierarchy: CD of phrases directly. `token_masks` turns spans into groups;
# all of them go through the LSTM in one batched pass. A negation shows what a group
# score has that a sum of word scores does not: the interaction of "not" and "bad".

# %%
from captum_cd import ContextualDecomposition, token_masks  # noqa: E402

sentence = "the acting is not bad at all".split()
ids = torch.tensor([vocab.encode(sentence)])
cd_text = ContextualDecomposition(lstm, layer=lstm.embed)
spans = [(3, 4), (4, 5), (3, 5), (0, 7)]  # "not", "bad", "not bad", everything
with torch.no_grad():
    rel, _ = cd_text.decompose(ids, token_masks(spans, len(sentence)))
    inter = cd_text.interactions(ids, token_masks([(3, 4)], 7), token_masks([(4, 5)], 7))
for (start, stop), r in zip(spans, rel[:, 0]):
    print(f"  CD of {' '.join(sentence[start:stop])!r:<32} positive - negative = {(r[1] - r[0]).item():+.2f}")
print(f"  interaction of 'not' and 'bad': {(inter[0, 0, 1] - inter[0, 0, 0]).item():+.2f}")

# %% [markdown]
# `AgglomerativeCD(model, layer=model.embed)` decomposes from the embedding (token ids are
# not decomposed). For a binary model the score can be the difference of the two class
# scores, as the original code does. Each level is one batched CD pass.

# %%
acd_text = AgglomerativeCD(lstm, layer=lstm.embed)
sentences = ["the acting is not bad at all , but the plot is a mess", "a gorgeous , witty , seductive movie ."]
for i, sentence in enumerate(sentences):
    tokens = sentence.split()
    ids = torch.tensor([vocab.encode(tokens)])
    label = int(lstm(ids).argmax(1))
    start = time.perf_counter()
    h = acd_text.hierarchy(ids, label, score="difference", tokens=[tokens])
    print(f"'{sentence}': predicted {'positive' if label else 'negative'}, {len(h.levels)} levels in {time.perf_counter() - start:.2f} s")
    for level in h.levels[:4]:
        print("   ", [(" ".join(tokens[u] for u in c.units), round(c.score, 2)) for c in level])
    show(h.plot(), os.path.join(args.out, f"tutorial02_text{i}.png"), dpi=110, bbox_inches="tight")
with open(os.path.join(args.out, "tutorial02_text0.json"), "w") as f:
    json.dump(acd_text.hierarchy(torch.tensor([vocab.encode(sentences[0].split())]), 1).to_dict(), f)

# %% [markdown]
# ## 2. Images: a CNN on digits
# scikit-learn's 8x8 digits, upsampled to 28x28, and a LeNet-sized CNN. Base units are
# 2x2 blocks here (`block_size=1` is pixels; `superpixels=n` uses scikit-image's SLIC).

# %%
x_train, y_train, x_test, y_test = load_digits()
up = lambda images: F.interpolate(images, size=28, mode="bilinear")  # noqa: E731
cnn = train_classifier(lenet(), up(x_train), y_train, epochs=1 if args.quick else 3)
print(f"CNN test accuracy: {100 * accuracy(cnn, up(x_test), y_test):.1f}%")

acd_image = AgglomerativeCD(cnn)
images = up(x_test[:2])
targets = cnn(images).argmax(1)
start = time.perf_counter()
hierarchies = acd_image.hierarchy(images, targets, percentile=95, block_size=2)
print(f"two image hierarchies in {time.perf_counter() - start:.2f} s; levels: {[len(h.levels) for h in hierarchies]}")
for i, h in enumerate(hierarchies):
    show(h.plot(), os.path.join(args.out, f"tutorial02_image{i}.png"), dpi=110, bbox_inches="tight")
superpixel_h = acd_image.hierarchy(images[:1], targets[:1], superpixels=30, percentile=90)
show(superpixel_h.plot(), os.path.join(args.out, "tutorial02_superpixels.png"), dpi=110, bbox_inches="tight")

# %% [markdown]
# ## 3. A level of the hierarchy in Captum's shape
# `attribute` gives every feature the score of its component at a chosen level, shaped
# like the input, so Captum's visualisation and metrics take it as they are.

# %%
attr = acd_image.attribute(images[:1], target=targets[:1], level=3, percentile=95, block_size=2)
figure, _ = visualization.visualize_image_attr(
    attr[0].permute(1, 2, 0).numpy(), images[0].permute(1, 2, 0).numpy(), method="blended_heat_map", sign="all", use_pyplot=False
)
show(figure, os.path.join(args.out, "tutorial02_captum_view.png"))
print("pictures written to", args.out)
