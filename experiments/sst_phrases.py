"""The SST phrase task that benchmarks/sst_reality.py and tutorials/06_decoder_phrases.py
share: the splits and the training split's vocabulary, the encoded tensors to train and
test a sentiment classifier on, the score every method explains, and the phrases it is
compared on (labelled, non-neutral, two or more words: the CD paper's phrase check).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import nn, Tensor

from experiments.datasets.sst import encode, load_sst, SSTExample, Vocab


@dataclass
class SSTData:
    """SST's train and test splits, the vocabulary of the training split, and the encoded
    ``(ids, lengths, labels)`` of the training examples and of the test sentences."""

    train: List[SSTExample]
    test: List[SSTExample]
    vocab: Vocab
    train_tensors: Tuple[Tensor, Tensor, Tensor]
    test_tensors: Tuple[Tensor, Tensor, Tensor]


def sst_data(sentences: Optional[int] = None, phrases: bool = False, max_len: Optional[int] = None) -> SSTData:
    """The data to train a sentiment classifier on SST's binary task and test it.

    Args:
        sentences (int, optional): train on the first ``sentences`` training sentences
            (all of them if None).
        phrases (bool): train on every labelled phrase of two or more words of the
            training sentences instead of on the sentences (the CD paper's training set).
        max_len (int, optional): truncate longer sentences, training and test alike.
    """
    train, test = load_sst("train"), load_sst("test")
    vocab = Vocab(e.tokens for e in train)
    if phrases:
        examples = [SSTExample(e.tokens[p.start : p.stop], p.label, []) for e in train for p in e.phrases if is_scored(p)]
    else:
        examples = train[:sentences]
    return SSTData(train, test, vocab, encode(examples, vocab, max_len=max_len), encode(test, vocab, max_len=max_len))


def is_scored(phrase) -> bool:
    """A phrase of the phrase check: labelled, non-neutral, two or more words."""
    return phrase.label is not None and phrase.stop - phrase.start >= 2


class PositiveMinusNegative(nn.Module):
    """The score every method explains: logit(positive) - logit(negative)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens):
        logits = self.model(tokens)
        return logits[:, 1] - logits[:, 0]
