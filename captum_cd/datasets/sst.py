"""The Stanford Sentiment Treebank (Socher et al. 2013) from its PTB tree files.

Read from a local copy (``train.txt``, ``dev.txt``, ``test.txt``, one tree a line,
labels 0-4 at every node); nothing is downloaded.
"""

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
NEGATIONS = ("not", "n't", "never", "no", "nothing", "neither", "nor", "none")


@dataclass
class Phrase:
    """A node of the tree: tokens ``start <= t < stop``, its label, and its children."""

    start: int
    stop: int
    fine_label: int  # 0-4
    label: Optional[int]  # binary: 0 negative, 1 positive, None neutral
    children: List[Tuple[int, int]] = field(default_factory=list)


@dataclass
class SSTExample:
    tokens: List[str]
    label: int  # binary 0/1, or fine-grained 0-4
    phrases: List[Phrase]


def find_sst_root(root: Optional[str] = None) -> Path:
    """The folder with the treebank: ``root``, else ``$CAPTUM_CD_SST``, else
    ``shared/data/sst`` next to or above the working directory or the repository."""
    repository = Path(__file__).resolve().parents[2]
    candidates = [root] if root is not None else [os.environ.get("CAPTUM_CD_SST")]
    if root is None:
        candidates += [Path.cwd() / "shared/data/sst", Path.cwd() / "../shared/data/sst", repository / "../shared/data/sst", repository / "shared/data/sst"]
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / "train.txt").exists():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        "the Stanford Sentiment Treebank (train.txt, dev.txt, test.txt in PTB format) was not "
        f"found; looked in {[str(c) for c in candidates if c is not None]}. Pass root=... or set "
        "CAPTUM_CD_SST to the folder that holds it."
    )


def binary_label(fine: int) -> Optional[int]:
    return None if fine == 2 else int(fine > 2)


def parse_tree(line: str, lowercase: bool = False) -> Tuple[List[str], List[Phrase]]:
    """Tokens and phrases (every node, root first) of one PTB-format tree."""
    tokens: List[str] = []
    phrases: List[Phrase] = []
    stack: List[Tuple[int, int, List[Tuple[int, int]]]] = []  # (label, start, children)
    parts = _TOKEN.findall(line)
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "(":
            stack.append((int(parts[i + 1]), len(tokens), []))
            i += 2
            continue
        if part == ")":
            fine, start, children = stack.pop()
            phrases.append(Phrase(start, len(tokens), fine, binary_label(fine), children))
            if stack:
                stack[-1][2].append((start, len(tokens)))
        else:
            word = _BRACKETS.get(part, part)
            tokens.append(word.lower() if lowercase else word)
        i += 1
    phrases.reverse()  # the root first
    return tokens, phrases


def load_sst(split: str, root: Optional[str] = None, binary: bool = True, lowercase: bool = True) -> List[SSTExample]:
    """One split (``"train"``, ``"dev"``, ``"test"``). With ``binary`` (the usual task),
    neutral sentences are dropped and labels are 0 (negative) / 1 (positive); every
    phrase keeps its fine label, and its binary label is None when it is neutral."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test'; got {split!r}.")
    examples = []
    with open(find_sst_root(root) / f"{split}.txt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            tokens, phrases = parse_tree(line, lowercase)
            fine = phrases[0].fine_label
            if binary and fine == 2:
                continue
            examples.append(SSTExample(tokens, binary_label(fine) if binary else fine, phrases))
    return examples


class Vocab:
    """Token ids: ``<pad>`` = 0, ``<unk>`` = 1, then the words seen ``min_freq`` times."""

    PAD, UNK = 0, 1

    def __init__(self, sentences: Iterable[Sequence[str]], min_freq: int = 1) -> None:
        counts = Counter(token for sentence in sentences for token in sentence)
        self.itos = ["<pad>", "<unk>"] + sorted(t for t, c in counts.items() if c >= min_freq)
        self.stoi: Dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        return [self.stoi.get(t, self.UNK) for t in tokens]


def encode(examples: Sequence[SSTExample], vocab: Vocab, max_len: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``(ids (N, T) padded with 0 at the end, lengths (N,), labels (N,))``, batch first."""
    rows = [vocab.encode(e.tokens)[:max_len] for e in examples]
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, torch.tensor([len(r) for r in rows]), torch.tensor([e.label for e in examples])
