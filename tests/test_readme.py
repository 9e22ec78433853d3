"""Every Python block of the README and of the documentation's pages runs as written.

The README's blocks run in an empty namespace: they define what they use. The pages'
blocks each run in a fresh namespace (in a temporary directory, since some write
pictures) that holds the small stand-ins their prose assumes, the *preamble*:

- ``model``: a LeNet for 1x28x28 images (10 classes), ``images`` (2 of them),
  ``labels``, ``masks`` (3 groups), ``region_ids`` (the four quadrants);
- ``cnn``: a small CNN on 1x10x10 images (3 classes), ``image``, ``label``;
- ``lstm``: a batch-first LSTM sentiment model (binary) with ``.embed``, ``ids`` (one
  sentence of 7 tokens), ``words``, ``sentiment`` (a class);
- ``loader``: one batch of ``(images, labels)``;
- for the adaptive wavelet: ``teacher`` (an MLP on signals of length 64), ``x_batch``,
  ``x_train``, ``x_val``, ``X``, ``y``;
- for TRIM (blocks that use ``Fourier1d(100)``): ``model`` is an MLP on signals of length
  100 (2 classes) and ``x`` a batch of them;
- in blocks that use ``AgglomerativeCD(cnn)``, ``images`` and ``labels`` are two
  10x10 images for ``cnn`` and their classes;
- in blocks that use ``LLMContextualDecomposition(llm, tokenizer)``: ``llm``, a 2-layer
  Llama with random weights, and ``tokenizer``, a BPE tokenizer trained on SST's text.

No block is skipped: a new block that names something else needs it added here.
"""

import os
import re

import matplotlib
import pytest
import torch
from torch import nn

from experiments.models import lenet, LSTMSentiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PAGES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))


def python_blocks():
    """(page, block) for every Python block of every page."""
    blocks = []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            blocks += [(page, block) for block in re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)]
    return blocks


def preamble(block: str) -> dict:
    torch.manual_seed(0)
    quadrants = torch.arange(4).view(2, 2).repeat_interleave(14, 0).repeat_interleave(14, 1)[None, None]
    images = torch.randn(2, 1, 28, 28)
    signals = torch.randn(120, 64)
    scope = {
        "model": lenet().eval(),
        "images": images,
        "labels": torch.tensor([3, 7]),
        "masks": torch.stack([(quadrants[0] == k).float() for k in range(3)]),
        "region_ids": quadrants,
        "cnn": nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)).eval(),
        "image": torch.randn(1, 1, 10, 10),
        "label": 1,
        "lstm": LSTMSentiment(30, embed_dim=6, hidden=5).eval(),
        "ids": torch.randint(1, 30, (1, 7)),
        "words": "a film that never quite works .".split(),
        "sentiment": 1,
        "loader": [(images, torch.tensor([3, 7]))],
        "teacher": nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 1)).eval(),
        "x_batch": signals[:20],
        "x_train": signals[:100],
        "x_val": signals[100:],
        "X": signals.numpy(),
        "y": signals[:, 10].numpy(),
    }
    if "Fourier1d(100)" in block:
        scope["model"] = nn.Sequential(nn.Linear(100, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
        scope["x"] = torch.randn(3, 100)
    if "AgglomerativeCD(cnn)" in block:
        scope["images"], scope["labels"] = torch.randn(2, 1, 10, 10), torch.tensor([0, 2])
    if "LLMContextualDecomposition(llm, tokenizer)" in block:
        scope["llm"], scope["tokenizer"] = language_model()
    return scope


def language_model():
    """A 2-layer Llama with random weights and a BPE tokenizer trained on SST's text."""
    import transformers

    from experiments.language_model import bpe_tokenizer, sst_text

    tokenizer = bpe_tokenizer(sst_text("train", 500), vocab_size=300)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return transformers.LlamaForCausalLM(config).eval(), tokenizer


BLOCKS = python_blocks()


def test_the_pages_have_blocks():
    assert any(page == "README.md" for page, _ in BLOCKS) and len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{page}:{i}" for i, (page, _) in enumerate(BLOCKS)])
def test_block_runs(index, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # blocks write pictures
    page, block = BLOCKS[index]
    scope = {} if page == "README.md" else preamble(block)
    exec(compile(block, f"{page} python block {index}", "exec"), scope)
    check_results(block, scope, tmp_path)


def check_results(block: str, scope: dict, tmp_path) -> None:
    """What the blocks' comments promise, where a block computes it."""
    if "grid_ids(28, 28, 7)" in block:  # the ten lines
        assert scope["cd"].shape == scope["fa"].shape == (4, 1, 28, 28)
        torch.testing.assert_close(scope["relevant"] + scope["irrelevant"], scope["model"](scope["images"]).expand(16, 4, 10))
    if "cd.decompose(images, masks)" in block:
        assert scope["relevant"].shape == (3, 2, 10)
        torch.testing.assert_close(scope["relevant"] + scope["irrelevant"], scope["model"](scope["images"]).expand(3, 2, 10))
    if "sensitivity_max(" in block:
        assert scope["cd"].shape == (2, 1, 28, 28) and scope["sens"].shape == (2,)
    if "AgglomerativeCD(cnn)" in block:
        assert (tmp_path / "hierarchy.png").exists() and scope["attr"].shape == (2, 1, 10, 10)
        assert scope["words_attr"].shape == scope["ids"].shape
        assert scope["record"].raw_input_ids == scope["words"]
    if "LayerContextualDecomposition(model" in block:
        assert scope["units"].shape == (2, 64, 8, 8) and scope["before"].shape == (2, 32, 12, 12)
        assert scope["pixel_scores"].shape == (2, 1, 28, 28)
    if "AdaptiveWavelet(" in block:
        assert (tmp_path / "wavelet.png").exists() and len(scope["history"]["total"]) >= 1
        assert scope["model"].predict(scope["X"][:3]).shape == (3,)
    if "LLMContextualDecomposition(llm, tokenizer)" in block:
        target = scope["tokenizer"].encode("playing golf, hiking, and cooking.", add_special_tokens=False)
        assert scope["result"].token_attr.shape == (len(target), 3) and scope["result"].input_tokens == ["Dave", "Palm Coast", "golf"]
    if "CDEPRegularizer(model" in block:
        assert torch.isfinite(scope["loss"])


def test_the_readme_is_a_landing_page():
    """Short, and every page or picture it links to is in the repository."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(((?:docs|examples|tutorials)/[^)#]*)", text)
    assert links and [link for link in links if not os.path.exists(os.path.join(ROOT, link))] == []
