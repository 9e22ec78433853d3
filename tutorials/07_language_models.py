# %% [markdown]
# # Explaining what a language model says: CD in Captum's LLM API
#
# Captum's tutorial "Understanding Llama2 with Captum LLM Attribution" explains a
# Llama-2 chat model's answer with `LLMAttribution(FeatureAblation)` and
# `LLMGradientAttribution(LayerIntegratedGradients)`. This tutorial follows it step by
# step with `LLMContextualDecomposition` beside both, on the same kinds of inputs and
# returning the same `LLMAttributionResult`:
#
# 1. a language model and its tokenizer (here a small Llama trained on the text of the
#    Stanford Sentiment Treebank, with a byte-level BPE tokenizer trained on the same
#    text, since nothing is downloaded);
# 2. perturbation-based attribution of a generated answer to the prompt's tokens
#    (`TextTokenInput`);
# 3. interpretable features: the values of a template (`TextTemplateInput`);
# 4. baselines (FeatureAblation replaces a value by a reference; CD needs none);
# 5. values grouped by a mask;
# 6. gradient-based attribution (LayerIntegratedGradients);
# 7. what each method explains (CD: logits or log-probabilities), how far they agree
#    over several prompts, and what each costs.
#
# Run it in Jupyter, or as a script (`python 07_language_models.py`); `CAPTUM_CD_QUICK=1`
# makes a shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT`
# says where pictures and results go (default `outputs/`). Nothing is downloaded: the
# text is SST's (`CAPTUM_CD_SST`, else `../shared/data/sst`).

# %%
import json
import os
import re
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch

from captum_cd.compat import declare_missing_torchvision_ops

declare_missing_torchvision_ops()  # PyPI's torchvision (CUDA) beside the CPU torch: see captum_cd.compat
import transformers
from captum.attr import (
    FeatureAblation,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTemplateInput,
    TextTokenInput,
)
from IPython.display import display
from tokenizers import decoders, models, pre_tokenizers, processors, Tokenizer, trainers
from torch import nn

from captum_cd import LLMContextualDecomposition

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
torch.set_num_threads(1)  # small matrices: a second thread only waits on a busy machine
results = {}


def show(figure, name):
    """Writes the figure to OUT and shows it (inline in a notebook)."""
    figure.savefig(os.path.join(OUT, name), bbox_inches="tight")
    display(figure)
    plt.close(figure)  # shown once


# %% [markdown]
# ## Text, a tokenizer and a training loop
# Plain code, written out here so that the notebook runs from any folder.

# %%
# The treebank's train.txt and test.txt: CAPTUM_CD_SST, else ../shared/data/sst seen from
# the repository's root or from tutorials/.
SST = os.environ.get("CAPTUM_CD_SST") or next((p for p in ("../shared/data/sst", "../../shared/data/sst") if os.path.isdir(p)), "sst")
ESCAPED = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def sst_text(split):
    """The sentences of an SST split as text: the words of each tree (a line in the PTB
    format, ``(3 (2 not) (3 (2 too) (3 bad)))``), joined by spaces."""
    with open(os.path.join(SST, f"{split}.txt"), encoding="utf-8") as f:
        leaves = (re.findall(r"\(\d ([^()\s]+)\)", line) for line in f)
        return [" ".join(ESCAPED.get(w) or w.replace("\\/", "/").replace("\\*", "*") for w in words) for words in leaves if words]


def bpe_tokenizer(texts, vocab_size):
    """A byte-level BPE tokenizer (GPT-2's kind) trained on ``texts``, as a fast Hugging
    Face tokenizer that puts ``<s>`` in front of every text, as Llama's does."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=True), processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])]
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def train_language_model(model, tokenizer, texts, steps, batch_size=32, lr=3e-3):
    """AdamW on the next token of random batches of ``texts`` (each ending with ``</s>``),
    padded to their longest; returns the mean loss of the last 50 steps."""
    encoded = [torch.tensor(ids) for ids in tokenizer([t + tokenizer.eos_token for t in texts])["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(steps):
        rows = [encoded[i] for i in torch.randint(len(encoded), (batch_size,), generator=generator)]
        ids = nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)
        mask = nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return sum(losses[-50:]) / len(losses[-50:])


# %% [markdown]
# ## 1. The model and its tokenizer
#
# Captum's tutorial loads Llama-2-13b-chat. Here a Llama of the same design (RMSNorm,
# rotary positions, grouped-query attention, SiLU-gated MLP), 2 layers of width 128, is
# trained to predict the next token of SST's training sentences (movie reviews), with a
# byte-level BPE tokenizer of 1,000 tokens trained on the same sentences: a real fast
# tokenizer (character offsets, a `<s>` in front of every text, as Llama's).

# %%
texts = sst_text("train")
tokenizer = bpe_tokenizer(texts, vocab_size=1000)
config = transformers.LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=1, pad_token_id=2,
)
model = transformers.LlamaForCausalLM(config)
start = time.perf_counter()
results["training loss"] = train_language_model(model, tokenizer, texts, steps=60 if QUICK else 1200)
results["training seconds"] = time.perf_counter() - start
print(f"next-token loss {results['training loss']:.2f} after {results['training seconds']:.0f} s of training")


def generate(prompt: str, new_tokens: int = 12) -> str:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


eval_prompt = "The film , directed by Steven Spielberg , is a"
target = generate(eval_prompt)
print(f"{eval_prompt!r} -> {target!r}")
results["prompt"], results["target"] = eval_prompt, target


# %% [markdown]
# ## 2. Perturbation-based attribution: FeatureAblation, and CD beside it
#
# As in Captum's tutorial: the prompt's tokens are the features (`TextTokenInput`, the
# `<s>` token skipped), the generated answer is the target. FeatureAblation replaces one
# token at a time by a baseline token and measures the drop of each target token's
# log-probability (one forward pass per feature, the target teacher forced in it); CD
# splits every target token's logit into one part per prompt token, all of them in one
# pass.
#
# Captum decodes the target token by token with the key-value cache by default; with
# transformers 5 that path feeds the whole sequence again at every step on top of the
# cache, which changes the log-probabilities (and overflows GPT-2's positions on long
# prompts), so FeatureAblation runs here with `forward_in_tokens=False`: the target in
# the same pass as the prompt, which gives what the cache-free token-by-token path gives.

# %%
fa = LLMAttribution(FeatureAblation(model), tokenizer)
cd = LLMContextualDecomposition(model, tokenizer)
inp = TextTokenInput(eval_prompt, tokenizer, skip_tokens=["<s>"])
fa_tokens = fa.attribute(inp, target=target, forward_in_tokens=False)
cd_tokens = cd.attribute(inp, target=target)
print("prompt tokens:", cd_tokens.input_tokens)
print("answer tokens:", cd_tokens.output_tokens)
for name, result in (("FeatureAblation", fa_tokens), ("CD", cd_tokens)):
    print(f"{name:>16} seq_attr: " + " ".join(f"{v:+.2f}" for v in result.seq_attr.tolist()))
    figure, _ = result.plot_token_attr()
    show(figure, f"tutorial07_tokens_{name}.png")


# %% [markdown]
# ## 3. Interpretable features: the values of a template
#
# Single tokens are rarely what a reader thinks in. `TextTemplateInput` makes the values
# of a template the features: FeatureAblation removes a value (its baseline is the empty
# string by default); CD takes the tokens the template put the value in (wherever the
# template uses it) as one group.

# %%
template = "The film , directed by {} , is {} and {}"
values = ["Steven Spielberg", "a masterpiece", "it never quite works"]
template_inp = TextTemplateInput(template, values=values)
answer = generate(template_inp.to_model_input(), 8)
fa_values = fa.attribute(template_inp, target=answer, forward_in_tokens=False)
cd_values = cd.attribute(template_inp, target=answer)
print(f"{template_inp.to_model_input()!r} -> {answer!r}")
for name, result in (("FeatureAblation", fa_values), ("CD", cd_values)):
    print(f"{name:>16}: " + ", ".join(f"{v!r} {s:+.2f}" for v, s in zip(values, result.seq_attr.tolist())))
    figure, _ = result.plot_seq_attr()
    show(figure, f"tutorial07_values_{name}.png")
results["template"] = {"answer": answer, "FeatureAblation": fa_values.seq_attr.tolist(), "CD": cd_values.seq_attr.tolist()}


# %% [markdown]
# ## 4. Baselines
#
# FeatureAblation's score depends on what a value is replaced with: a removed value, or
# a reference value (Captum's tutorial swaps "Dave" for "Sarah"). CD needs no baseline:
# the rest of the prompt is the irrelevant part, nothing is replaced, and the template's
# `baselines` are not used, so its scores are those of step 3.

# %%
with_baselines = TextTemplateInput(template, values=values, baselines=["Woody Allen", "a film", "it works"])
fa_reference = fa.attribute(with_baselines, target=answer, forward_in_tokens=False)
print("FeatureAblation against reference values: " + ", ".join(f"{s:+.2f}" for s in fa_reference.seq_attr.tolist()))
print("CD (no baseline):                         " + ", ".join(f"{s:+.2f}" for s in cd.attribute(with_baselines, target=answer).seq_attr.tolist()))


# %% [markdown]
# ## 5. Values grouped by a mask
#
# Values with one mask id form one feature: both methods score the film's two
# judgements together here.

# %%
masked = TextTemplateInput(template, values=values, mask=[0, 1, 1])
for name, result in (("FeatureAblation", fa.attribute(masked, target=answer, forward_in_tokens=False)), ("CD", cd.attribute(masked, target=answer))):
    print(f"{name:>16}: " + ", ".join(f"{s:+.2f}" for s in result.seq_attr.tolist()))


# %% [markdown]
# ## 6. Gradient-based attribution: LayerIntegratedGradients
#
# `LLMGradientAttribution` integrates the gradient of each target token's
# log-probability along a path from a baseline embedding (zeros) to the prompt's
# embedding, one target token at a time, 50 steps each; token inputs only.

# %%
lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
lig_tokens = lig.attribute(inp, target=target)
print(f"{'IG':>16} seq_attr: " + " ".join(f"{v:+.2f}" for v in lig_tokens.seq_attr.tolist()))
figure, _ = lig_tokens.plot_token_attr()
show(figure, "tutorial07_tokens_LayerIntegratedGradients.png")


# %% [markdown]
# ## 7. What each method explains, how far they agree, and what it costs
#
# CD decomposes logits; FeatureAblation and IG explain log-probabilities, which also
# move with every other token's logit. `attr_target="log_prob"` makes CD decompose the
# log-probability (with the softmax's weights taken from the full pass: see
# `docs/language_models.md`). Over several SST test sentences cut after their first
# words, with the model's own continuation as the target, the token scores of each
# method are compared with FeatureAblation's (Pearson correlation over every target
# token and prompt token), and each method is timed.

# %%
cd_log_prob = LLMContextualDecomposition(model, tokenizer, attr_target="log_prob")
methods = {
    "CD (logit)": lambda inp, target: cd.attribute(inp, target=target),
    "CD (log_prob)": lambda inp, target: cd_log_prob.attribute(inp, target=target),
    "LayerIntegratedGradients": lambda inp, target: lig.attribute(inp, target=target),
    "FeatureAblation": lambda inp, target: fa.attribute(inp, target=target, forward_in_tokens=False),
}
prompts = [" ".join(s.split(" ")[:8]) for s in sst_text("test")[: 6 if QUICK else 40] if len(s.split(" ")) > 10]
scores = {name: [] for name in methods}
seconds = {name: 0.0 for name in methods}
for prompt in prompts:
    prompt_inp = TextTokenInput(prompt, tokenizer, skip_tokens=["<s>"])
    continuation = generate(prompt, 6)
    for name, attribute in methods.items():
        start = time.perf_counter()
        scores[name].append(attribute(prompt_inp, continuation).token_attr.flatten())
        seconds[name] += time.perf_counter() - start
reference = torch.cat(scores["FeatureAblation"]).numpy()
results["agreement"] = {"prompts": len(prompts), "methods": {}}
print(f"\n{len(prompts)} prompts, 6 generated target tokens each")
print(f"  {'method':<26}{'corr. with FeatureAblation':>28}{'seconds':>10}")
for name in methods:
    values = torch.cat(scores[name]).numpy()
    correlation = float(np.corrcoef(values, reference)[0, 1])
    results["agreement"]["methods"][name] = {"correlation with FeatureAblation": correlation, "seconds": seconds[name]}
    print(f"  {name:<26}{correlation:>28.3f}{seconds[name]:>10.2f}")
with open(os.path.join(OUT, "tutorial07_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks

# %% [markdown]
# CD's scores and FeatureAblation's measure different things (a share of the logit, and
# the drop of the log-probability when a token is swapped for another), and IG's a third
# (the gradient integrated from a zero embedding), so they agree only in part; the table
# above says how far, on this model. In the full run (`python 07_language_models.py`:
# 1,200 training steps, 31 prompts) CD's token scores correlate 0.79 with
# FeatureAblation's (0.72 with the log-probability target), IG's 0.83. CD needs one pass
# for all the target tokens and every prompt token, FeatureAblation one per prompt token,
# IG 50 per target token.
