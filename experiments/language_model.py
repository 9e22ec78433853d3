"""A real fast tokenizer and a small causal language model, made offline from SST's text,
for the language-model tutorial, benchmark and tests (nothing is downloaded).

- :func:`sst_text`: the sentences of an SST split as plain text.
- :func:`bpe_tokenizer`: a byte-level BPE tokenizer (GPT-2's kind) trained on some text,
  wrapped as a ``transformers.PreTrainedTokenizerFast`` that adds a ``<s>`` in front, as
  Llama's does; saved to and loaded from a folder when one is given.
- :func:`train_language_model`: next-token training of any causal LM on text.
"""

import os
from typing import Iterable, List, Optional

import torch
from torch import nn

from experiments.datasets.sst import load_sst

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>"]


def sst_text(split: str = "train", sentences: Optional[int] = None) -> List[str]:
    """The first ``sentences`` sentences of an SST split (all if None), words joined by
    spaces, in their original case."""
    return [" ".join(e.tokens) for e in load_sst(split, binary=False, lowercase=False)[:sentences]]


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1000, folder: Optional[str] = None):
    """A byte-level BPE tokenizer trained on ``texts``, as a fast Hugging Face tokenizer
    (character offsets) with ``<s>`` (beginning, added to every text), ``</s>`` and
    ``<pad>``. With ``folder``, loaded from there if it was saved before, else trained and
    saved there."""
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, processors, Tokenizer, trainers

    if folder is not None and os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=True), processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])]
    )
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if folder is not None:
        fast.save_pretrained(folder)
    return fast


def train_language_model(
    model: nn.Module, tokenizer, texts: List[str], steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0
) -> float:
    """Trains ``model`` (a Hugging Face causal LM) for ``steps`` steps of AdamW to predict
    the next token of ``texts`` (each ending with ``</s>``), random batches padded to
    their longest text. Returns the mean loss of the last 50 steps; the model is left in
    eval mode."""
    encoded = [torch.tensor(ids) for ids in tokenizer([t + tokenizer.eos_token for t in texts])["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
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
