"""A real fast tokenizer and a small causal language model, made offline from SST's text,
for the language-model tutorial, benchmark and tests (nothing is downloaded).

- :func:`sst_text`: the sentences of an SST split as plain text.
- :func:`bpe_tokenizer`: a byte-level BPE tokenizer (GPT-2's kind) trained on some text,
  wrapped as a ``transformers.PreTrainedTokenizerFast`` that adds a ``<s>`` in front, as
  Llama's does; saved to and loaded from a folder when one is given.
- :func:`train_language_model`: next-token training of any causal LM on tokenized text.
"""

import os
import time
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
    model: nn.Module, tokenizer, texts: List[str], epochs: int = 1, batch_size: int = 32, lr: float = 3e-3, seconds: Optional[float] = None
) -> float:
    """Trains ``model`` (a Hugging Face causal LM) to predict the next token of ``texts``
    (each ending with ``</s>``), padded batches, AdamW; stops after ``seconds`` if given.
    Returns the last batch's loss. The model is left in eval mode."""
    batch = tokenizer([t + tokenizer.eos_token for t in texts], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(texts)).split(batch_size):
            loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if seconds is not None and time.perf_counter() - start > seconds:
                break
    model.eval()
    return float(loss)
