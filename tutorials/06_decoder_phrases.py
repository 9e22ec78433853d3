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
# Run it as a script (`python tutorials/06_decoder_phrases.py`; `--quick` for a smaller
# version, which the test suite runs). Nothing is downloaded: the model starts from
# random weights; SST comes from the data folder that `experiments.datasets.sst` finds.

# %%
import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

from captum_cd.compat import declare_missing_torchvision_ops

declare_missing_torchvision_ops()  # PyPI's torchvision (CUDA) beside the CPU torch: see captum_cd.compat
import transformers  # noqa: E402
from captum.attr import FeatureAblation, LayerIntegratedGradients  # noqa: E402
from torch import nn  # noqa: E402

from captum_cd import ContextualDecomposition, token_masks  # noqa: E402
from _notebook import options  # noqa: E402  (tutorials/_notebook.py; puts the repository root on sys.path)
from experiments.datasets.sst import Vocab  # noqa: E402
from experiments.models import accuracy, train_classifier  # noqa: E402
from experiments.sst_phrases import is_scored, PositiveMinusNegative, sst_data  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="less training, fewer sentences (the test suite)")
parser.add_argument("--out", default="outputs", help="folder for tutorial06_results.json")
args = options(parser)  # CAPTUM_CD_QUICK=1 sets --quick in a notebook
warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
torch.set_num_threads(2)


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


data = sst_data(sentences=2000 if args.quick else None, max_len=64)  # whole sentences (experiments/sst_phrases.py)
test, vocab = data.test, data.vocab
(x, lengths, y), (x_test, l_test, y_test) = data.train_tensors, data.test_tensors
model = DecoderSentiment(len(vocab))
start = time.perf_counter()
train_classifier(model, x, y, epochs=2 if args.quick else 4, batch_size=32, lr=2e-3, lengths=lengths)
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


sentences = test[:20] if args.quick else test
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
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "tutorial06_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks
