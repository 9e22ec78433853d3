# %% [markdown]
# # Which phrases drive a decoder's prediction
#
# A small decoder-only transformer in the Llama style (Hugging Face `transformers`:
# RMSNorm, rotary positions, grouped-query attention, SiLU-gated MLP) is trained here
# on the Stanford Sentiment Treebank (binary task) and reads its sentence left to right;
# the prediction is taken at the last token. For every labelled phrase of two or more
# words in test sentences, three methods score the phrase for the positive-minus-negative
# logit, on the same spans:
#
# - **CD** (`ContextualDecomposition(model, layer=embedding)`): the phrase as a group,
#   all phrases of a sentence in one batched pass;
# - **LayerIntegratedGradients** on the embedding, summed over the phrase's tokens;
# - **FeatureAblation**: the drop in the score when the phrase's tokens are replaced by
#   the padding token (one group per phrase, all phrases of a sentence in one call).
#
# The treebank labels every phrase (0 very negative ... 4 very positive); the closer a
# method's phrase scores follow those labels, the better it tells which phrases carry the
# sentiment (the check of the CD paper). Finally the highest-scoring phrases of one
# sentence, by each method.
#
# Run it in Jupyter, or as a script (`python 06_decoder_phrases.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).
# Nothing is downloaded: the model starts from random weights.

# %%
import collections
import json
import os
import re
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from captum_cd.compat import declare_missing_torchvision_ops

declare_missing_torchvision_ops()  # PyPI's torchvision (CUDA) beside the CPU torch: see captum_cd.compat
import transformers
from captum.attr import FeatureAblation, LayerIntegratedGradients
from torch import nn

from captum_cd import ContextualDecomposition, token_masks

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
torch.set_num_threads(2)




# %% [markdown]
# ## Data and a training loop
# Plain PyTorch, written out here so that the notebook runs from any folder.

# %%
# The treebank's train.txt and test.txt: CAPTUM_CD_SST, else ../shared/data/sst seen from
# the repository's root or from tutorials/.
SST = os.environ.get("CAPTUM_CD_SST") or next((p for p in ("../shared/data/sst", "../../shared/data/sst") if os.path.isdir(p)), "sst")
Phrase = collections.namedtuple("Phrase", "start stop fine_label label")  # label: 0 or 1, None for neutral
Sentence = collections.namedtuple("Sentence", "tokens label phrases")
ESCAPED = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def read_sst(split):
    """The binary task: every non-neutral sentence of a split, lowercased, with every node
    of its tree as a Phrase (the root first). A line is a tree in the PTB format, a label
    0-4 (very negative ... very positive) at every node: ``(3 (2 not) (3 (2 too) (3 bad)))``."""
    sentences = []
    with open(os.path.join(SST, f"{split}.txt"), encoding="utf-8") as f:
        for line in f:
            parts = re.findall(r"[()]|[^ \t\r\n()]+", line)
            tokens, phrases, open_nodes, i = [], [], [], 0
            while i < len(parts):
                if parts[i] == "(":  # a node: its label follows
                    open_nodes.append((len(tokens), int(parts[i + 1]), len(phrases)))
                    phrases.append(None)
                    i += 2
                    continue
                if parts[i] == ")":
                    start, fine, index = open_nodes.pop()
                    phrases[index] = Phrase(start, len(tokens), fine, None if fine == 2 else int(fine > 2))
                else:
                    word = parts[i]
                    tokens.append(ESCAPED.get(word) or word.replace("\\/", "/").replace("\\*", "*").lower())
                i += 1
            if phrases and phrases[0].label is not None:
                sentences.append(Sentence(tokens, phrases[0].label, phrases))
    return sentences


class Vocab:
    """Token ids: 0 padding, 1 unknown, then the words of ``sentences`` in alphabetical order."""

    PAD, UNK = 0, 1

    def __init__(self, sentences):
        self.itos = ["<pad>", "<unk>"] + sorted({t for s in sentences for t in s.tokens})
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens):
        return [self.stoi.get(t, self.UNK) for t in tokens]


def encode(sentences, vocab, max_len=None):
    """``(ids, lengths, labels)``, batch first, padded at the end."""
    rows = [vocab.encode(s.tokens[:max_len]) for s in sentences]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [Vocab.PAD] * (width - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows]), torch.tensor([s.label for s in sentences])


def train_classifier(model, inputs, labels, epochs, batch_size=64, lr=1e-3, lengths=None):
    """Adam on cross-entropy, shuffled mini-batches; returns the model in eval mode. With
    ``lengths`` (padded sentences) a batch is cut to its longest sentence and the model
    is called as ``model(tokens, lengths)``."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(forward(model, inputs, lengths, batch), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def forward(model, inputs, lengths, batch):
    if lengths is None:
        return model(inputs[batch])
    return model(inputs[batch, : int(lengths[batch].max())], lengths[batch])


def accuracy(model, inputs, labels, lengths=None):
    """Accuracy in batches of 1,000."""
    with torch.no_grad():
        predictions = [forward(model, inputs, lengths, b).argmax(1) for b in torch.arange(len(labels)).split(1000)]
    return (torch.cat(predictions) == labels).float().mean().item()




def is_scored(phrase):
    """A phrase of the phrase check: labelled, non-neutral, two or more words."""
    return phrase.label is not None and phrase.stop - phrase.start >= 2


class PositiveMinusNegative(nn.Module):
    """The score every method explains: logit(positive) - logit(negative)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        logits = self.model(tokens)
        return logits[:, 1] - logits[:, 0]


# %% [markdown]
# ## The model: a Llama-style decoder with a sentiment head on the last real token

# %%
class DecoderSentiment(nn.Module):
    """``LlamaModel`` (2 layers, width 64) and a linear head on the last real token.
    ``forward(tokens, lengths=None)``: padded batches for training, one sentence to explain."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=Vocab.PAD,
        )
        self.decoder = transformers.LlamaModel(config)
        self.head = nn.Linear(64, 2)

    @property
    def embed(self) -> nn.Module:
        return self.decoder.get_input_embeddings()

    def forward(self, tokens, lengths=None):
        if lengths is None:
            return self.head(self.decoder(input_ids=tokens).last_hidden_state[:, -1])
        mask = torch.arange(tokens.shape[1]) < lengths[:, None]
        states = self.decoder(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return self.head(states[torch.arange(tokens.shape[0]), lengths - 1])


train, test = read_sst("train"), read_sst("test")
vocab = Vocab(train)
x, lengths, y = encode(train[: 2000 if QUICK else None], vocab, max_len=64)  # whole sentences
x_test, l_test, y_test = encode(test, vocab, max_len=64)
model = DecoderSentiment(len(vocab))
start = time.perf_counter()
train_classifier(model, x, y, epochs=2 if QUICK else 4, batch_size=32, lr=2e-3, lengths=lengths)
results = {"test accuracy": accuracy(model, x_test, y_test, l_test), "training seconds": time.perf_counter() - start}
print(f"decoder: test accuracy {100 * results['test accuracy']:.1f}% (trained in {results['training seconds']:.0f} s)")


# %% [markdown]
# ## Phrase scores by the three methods, on the same spans

# %%
score_model = PositiveMinusNegative(model).eval()


def phrase_scores(ids, spans):
    """Scores of the spans of one sentence ``ids`` (1, T) by each method."""
    masks = token_masks(spans, ids.shape[1])
    with torch.no_grad():
        cd, _ = ContextualDecomposition(score_model, layer=model.embed).decompose(ids, masks)
    ig = LayerIntegratedGradients(score_model, model.embed).attribute(ids, baselines=torch.zeros_like(ids), n_steps=32)
    per_token = ig.sum(-1)[0].detach()
    group_ids = masks.long()  # one row per phrase: 1 on the phrase, 0 elsewhere
    ablation = FeatureAblation(score_model).attribute(ids.expand(len(spans), -1), baselines=Vocab.PAD, feature_mask=group_ids)
    return {
        "CD": cd[:, 0].numpy(),
        "LayerIntegratedGradients": np.array([per_token[s:e].sum().item() for s, e in spans]),
        "FeatureAblation": np.array([ablation[g, s].item() for g, (s, e) in enumerate(spans)]),
    }


sentences = test[:20] if QUICK else test
scores, labels, seconds = {}, [], {}
for example in sentences:
    spans = [(p.start, p.stop) for p in example.phrases if is_scored(p)]
    if not spans:
        continue
    ids = torch.tensor([vocab.encode(example.tokens)])
    for name, values in phrase_scores(ids, spans).items():
        scores.setdefault(name, []).extend(values)
    labels.extend(p.fine_label for p in example.phrases if is_scored(p))
print(f"\n{len(labels)} phrases of {len(sentences)} test sentences")
print(f"  {'method':<26}{'corr. with phrase label':>24}")
results.update(sentences=len(sentences), phrases=len(labels), correlations={})
for name, values in scores.items():
    results["correlations"][name] = float(np.corrcoef(values, labels)[0, 1])
    print(f"  {name:<26}{results['correlations'][name]:>24.3f}")


# %% [markdown]
# ## The phrases that drive one prediction

# %%
example = max(sentences[:50], key=lambda e: sum(is_scored(p) for p in e.phrases))
spans = [(p.start, p.stop) for p in example.phrases if p.label is not None and 2 <= p.stop - p.start < len(example.tokens)]
ids = torch.tensor([vocab.encode(example.tokens)])
with torch.no_grad():
    score = score_model(ids).item()
print(f"\nsentence: {' '.join(example.tokens)}")
print(f"positive-minus-negative logit: {score:+.2f} (treebank: {'positive' if example.label else 'negative'})")
results["example"] = {"tokens": example.tokens, "score": score, "top phrases": {}}
for name, values in phrase_scores(ids, spans).items():
    top = np.argsort(-np.abs(values))[:3]
    print(f"  {name}: " + "; ".join(f"'{' '.join(example.tokens[spans[i][0]:spans[i][1]])}' {values[i]:+.2f}" for i in top))
    results["example"]["top phrases"][name] = [[*spans[i], float(values[i])] for i in top]
with open(os.path.join(OUT, "tutorial06_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks
