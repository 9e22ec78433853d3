"""The Stanford Sentiment Treebank (Socher et al. 2013) from its PTB tree files.

Read from a local copy (``train.txt``, ``dev.txt``, ``test.txt``: one binarised tree a
line, a sentiment label 0-4 at every node); nothing is downloaded. The parser is a few
lines of Python (no nltk): CD is checked against the treebank's phrase labels, so the
loader keeps every node's span, label and children.

Labels: 0-1 negative, 2 neutral, 3-4 positive. A :class:`Phrase` keeps both the fine
label (``fine_label``, 0-4) and the binary one (``label``: 0, 1, or None when neutral),
whatever ``binary`` is, so one loaded split serves both tasks' phrase checks.
"""

from __future__ import annotations

import gc
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "NEGATIONS",
    "Phrase",
    "SPLITS",
    "SSTExample",
    "Tree",
    "Vocab",
    "binary_label",
    "encode",
    "find_sst_root",
    "load_sst",
    "negations",
    "parse_tree",
]

SPLITS = ("train", "dev", "test")
REPOSITORY = Path(__file__).resolve().parent.parent.parent  # experiments/datasets/sst.py -> the repository
# PTB escapes: brackets are spelled out so that they cannot be confused with the tree's.
_UNESCAPE = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
# Single tokens that negate the phrase next to them (the CD paper's negation check).
_PARTS = re.compile(r"[()]|[^ \t\r\n()]+")
NEGATIONS = ("not", "n't", "never", "no", "nothing", "neither", "nor", "none")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(slots=True)
class Tree:
    """A node of a parsed tree: tokens ``start <= t < stop``, its label 0-4, its children;
    a leaf has no children and holds its ``word``."""

    label: int
    start: int
    stop: int
    children: List["Tree"] = field(default_factory=list)
    word: Optional[str] = None

    @property
    def tokens(self) -> List[str]:
        """The words under this node, left to right."""
        return [node.word for node in self.nodes() if node.word is not None]

    def nodes(self) -> Iterator["Tree"]:
        """Every node of the subtree, this one first (pre-order)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


@dataclass(slots=True)
class Phrase:
    """A node of a sentence's tree, flattened: tokens ``start <= t < stop``, its fine label
    0-4, its binary label (0 negative, 1 positive, None neutral) and its children's spans."""

    start: int
    stop: int
    fine_label: int
    label: Optional[int]
    children: List[Tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class SSTExample:
    """A sentence: its tokens, its label (0/1 for the binary task, 0-4 for the fine one) and
    every node of its tree as a :class:`Phrase`, the root first, then pre-order."""

    tokens: List[str]
    label: int
    phrases: List[Phrase] = field(default_factory=list)


def binary_label(fine: int) -> Optional[int]:
    """0 for a negative fine label (0, 1), 1 for a positive one (3, 4), None for neutral (2)."""
    return None if fine == 2 else int(fine > 2)


def find_sst_root(root: Optional[PathLike] = None) -> Path:
    """The folder that holds ``train.txt``, ``dev.txt``, ``test.txt``.

    ``root`` if given, else ``$CAPTUM_CD_SST``, else the first of ``shared/data/sst`` and
    ``../shared/data/sst`` relative to the working directory, then to the repository's root
    (the folder that holds ``experiments/``), that holds a split. An explicit ``root`` or
    environment variable is never silently replaced by a default.
    """
    if root is not None:
        candidates, given = [Path(root)], "root="
    elif os.environ.get("CAPTUM_CD_SST"):
        candidates, given = [Path(os.environ["CAPTUM_CD_SST"])], "$CAPTUM_CD_SST="
    else:
        bases = [Path.cwd(), REPOSITORY]
        candidates = [base / rel for base in bases for rel in ("shared/data/sst", "../shared/data/sst")]
        given = ""
    for candidate in candidates:
        if any((candidate / f"{split}.txt").is_file() for split in SPLITS):
            return candidate.resolve()
    looked = ", ".join(str(c.resolve()) for c in candidates)
    where = f"the folder given by {given}{candidates[0]}" if given else f"the default places ({looked})"
    raise FileNotFoundError(
        f"The Stanford Sentiment Treebank (train.txt, dev.txt, test.txt in PTB tree format) is not in "
        f"{where}. Pass root='/path/to/sst' or set the environment variable CAPTUM_CD_SST to a folder "
        "that holds those files."
    )


def _parts(line: str) -> List[str]:
    # Brackets, and words between ASCII spaces: words never contain brackets (the treebank
    # escapes them), but three hold a no-break space ("8\xa01\\/2"), one token each.
    return _PARTS.findall(line)


def _word(part: str, lowercase: bool) -> str:
    word = _UNESCAPE.get(part)
    if word is None:
        word = part.replace("\\/", "/").replace("\\*", "*") if "\\" in part else part
        if lowercase:
            word = word.lower()
    return word


class _Malformed(ValueError):
    pass


def _malformed(line: str, why: str) -> ValueError:
    shown = line.strip()
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return _Malformed(f"Not a PTB tree with integer labels ({why}): {shown!r}")


def _flatten(line: str, lowercase: bool) -> Tuple[List[str], List[Phrase]]:
    """Tokens and phrases (pre-order) of one tree, without building :class:`Tree` nodes: the
    fast path of :func:`load_sst`."""
    tokens: List[str] = []
    phrases: List[Phrase] = []
    open_nodes: List[Phrase] = []
    parts = _parts(line)
    i, n = 0, len(parts)
    try:
        while i < n:
            part = parts[i]
            if part == "(":
                if open_nodes and not open_nodes[-1].children and len(tokens) > open_nodes[-1].start:
                    raise _malformed(line, "a node holds both a word and subtrees")
                fine = int(parts[i + 1])
                if not 0 <= fine <= 4:
                    raise _malformed(line, f"the label {fine} is not one of 0-4")
                phrase = Phrase(len(tokens), -1, fine, None if fine == 2 else int(fine > 2), [])
                phrases.append(phrase)
                open_nodes.append(phrase)
                i += 2
            elif part == ")":
                phrase = open_nodes.pop()
                phrase.stop = len(tokens)
                if phrase.stop == phrase.start:
                    raise _malformed(line, "a node without words")
                if open_nodes:
                    open_nodes[-1].children.append((phrase.start, phrase.stop))
                elif i != n - 1:
                    raise _malformed(line, "text after the root's closing bracket")
                i += 1
            else:
                if not open_nodes:
                    raise _malformed(line, f"the word {part!r} is outside the tree")
                if open_nodes[-1].children or len(tokens) > open_nodes[-1].start:
                    raise _malformed(line, f"the word {part!r} shares a node with other words or subtrees")
                tokens.append(_word(part, lowercase))
                i += 1
    except _Malformed:
        raise
    except (IndexError, ValueError):
        raise _malformed(line, "a bracket without a label, or unbalanced brackets") from None
    if open_nodes or not phrases:
        raise _malformed(line, "unbalanced brackets" if open_nodes else "empty")
    return tokens, phrases


def parse_tree(line: str, lowercase: bool = False) -> Tree:
    """The tree of one line of the treebank, e.g. ``(3 (2 not) (3 (2 too) (3 bad)))``.

    Every node gets its label (int), its token span ``start``/``stop`` (stop exclusive) and
    its children; leaves hold the words, with the PTB escapes undone (``-LRB-`` -> ``(``,
    ``-RRB-`` -> ``)``, ``\\/`` -> ``/``, ...). Raises ValueError on a malformed line.
    """
    tokens, phrases = _flatten(line, lowercase)
    # Rebuild the nesting from the pre-order phrases: a node's children follow it in order.
    nodes = [Tree(p.fine_label, p.start, p.stop) for p in phrases]
    open_nodes: List[Tree] = []
    for node in nodes:
        while open_nodes and node.start >= open_nodes[-1].stop:
            open_nodes.pop()
        if open_nodes:
            open_nodes[-1].children.append(node)
        open_nodes.append(node)
    for node, phrase in zip(nodes, phrases):
        if not phrase.children and phrase.stop - phrase.start == 1:
            node.word = tokens[phrase.start]
    return nodes[0]


def load_sst(
    split: str, root: Optional[PathLike] = None, binary: bool = True, lowercase: bool = True
) -> List[SSTExample]:
    """One split (``"train"``, ``"dev"`` or ``"test"``) as a list of :class:`SSTExample`.

    ``binary=True`` (the usual task) drops the neutral sentences and labels the others 0
    (negative) / 1 (positive); ``binary=False`` keeps every sentence with its fine label 0-4.
    Phrases are never dropped: each keeps ``fine_label`` and a binary ``label`` that is None
    for a neutral phrase (filter on ``label is not None`` to train on phrases).
    ``lowercase`` lowercases the words (not the bracket tokens, which have no case).
    See :func:`find_sst_root` for where the files are looked for.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    path = find_sst_root(root) / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the SST folder {path.parent} lacks the {split!r} split.")
    examples: List[SSTExample] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects, no cycles: the collector only slows this
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    tokens, phrases = _flatten(line, lowercase)
                except ValueError as error:
                    raise ValueError(f"{path}, line {number}: {error}") from None
                fine = phrases[0].fine_label
                if binary:
                    if fine == 2:
                        continue
                    examples.append(SSTExample(tokens, int(fine > 2), phrases))
                else:
                    examples.append(SSTExample(tokens, fine, phrases))
    finally:
        if gc_was_enabled:
            gc.enable()
    return examples


def negations(example: SSTExample) -> List[Tuple[Phrase, Phrase]]:
    """``(node, negated)`` pairs: nodes whose first child is a single token of
    :data:`NEGATIONS` and whose second (last) child is the phrase ``negated`` -- where a
    phrase's label flipping, or not, tests how a method scores an interaction."""
    by_span: Dict[Tuple[int, int], Phrase] = {}
    for phrase in example.phrases:
        by_span.setdefault((phrase.start, phrase.stop), phrase)
    pairs = []
    for phrase in example.phrases:
        if len(phrase.children) != 2:
            continue
        (first_start, first_stop), second = phrase.children
        if first_stop - first_start == 1 and example.tokens[first_start].lower() in NEGATIONS and second in by_span:
            pairs.append((phrase, by_span[second]))
    return pairs


class Vocab:
    """Token ids: ``<pad>`` = 0, ``<unk>`` = 1, then the tokens seen at least ``min_freq``
    times, in alphabetical order (so the ids do not depend on the order of the data).

    Built from token lists or :class:`SSTExample` objects, usually of the training split
    only, so that words first seen at test time map to ``<unk>``.
    """

    PAD, UNK = 0, 1

    def __init__(self, sentences: Iterable[Union[Sequence[str], SSTExample]], min_freq: int = 1) -> None:
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1; got {min_freq!r}.")
        counts: Counter = Counter()
        for sentence in sentences:
            tokens = sentence.tokens if isinstance(sentence, SSTExample) else sentence
            if isinstance(tokens, str):
                raise TypeError(
                    "Vocab takes a list of tokens per sentence (or SSTExample objects), not strings; "
                    f"got {tokens[:40]!r}. Split the sentence first, e.g. sentence.split()."
                )
            counts.update(tokens)
        kept = sorted(t for t, c in counts.items() if c >= min_freq)
        self.itos: List[str] = ["<pad>", "<unk>"] + kept
        self.stoi: Dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def encode(self, tokens: Sequence[str]) -> List[int]:
        """The ids of ``tokens``; unknown tokens get ``<unk>`` (1)."""
        stoi, unk = self.stoi, self.UNK
        return [stoi.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> List[str]:
        """The tokens of ``ids`` (a list or a 1-D tensor), padding included."""
        return [self.itos[int(i)] for i in ids]


def encode(
    examples: Sequence[SSTExample], vocab: Vocab, max_len: Optional[int] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(ids, lengths, labels)`` for a batch-first model: ``ids`` (N, T) int64 padded at
    the end with ``<pad>`` = 0, where T is the longest (truncated) sentence; ``lengths``
    (N,) the unpadded lengths (for ``pack_padded_sequence``); ``labels`` (N,) int64.
    ``max_len`` truncates longer sentences (keeping their start)."""
    if len(examples) == 0:
        raise ValueError("encode got no examples; pass a non-empty list of SSTExample.")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len must be None or an integer >= 1; got {max_len!r}.")
    rows = [vocab.encode(e.tokens[:max_len]) for e in examples]
    lengths = [len(r) for r in rows]
    if 0 in lengths:
        raise ValueError(
            f"example {lengths.index(0)} has no tokens; an empty sentence cannot be packed or scored. Drop it first."
        )
    labels = [e.label for e in examples]
    if None in labels:
        raise ValueError(
            f"example {labels.index(None)} has label None (a neutral phrase in the binary task); "
            "keep only phrases with `label is not None`."
        )
    width = max(lengths)
    ids = torch.tensor([r + [Vocab.PAD] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, torch.tensor(lengths, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
