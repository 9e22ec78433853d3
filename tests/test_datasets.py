"""The offline data helpers."""

import pytest
import torch

from captum_cd.datasets import (
    COLOR_PALETTE,
    color_region_masks,
    decoy_corner_masks,
    encode,
    load_fashion_mnist,
    load_sst,
    make_color_mnist,
    make_decoy_mnist,
    parse_tree,
    Vocab,
)


def test_parse_tree():
    tokens, phrases = parse_tree("(1 (2 not) (3 (2 very) (4 -LRB-good-RRB- )))".replace("-LRB-good-RRB- ", "good"))
    assert tokens == ["not", "very", "good"]
    root = phrases[0]
    assert (root.start, root.stop, root.fine_label, root.label) == (0, 3, 1, 0)
    assert root.children == [(0, 1), (1, 3)]
    assert {(p.start, p.stop, p.fine_label) for p in phrases} == {(0, 3, 1), (0, 1, 2), (1, 3, 3), (1, 2, 2), (2, 3, 4)}
    tokens, _ = parse_tree("(2 (2 -LRB-) (2 x) (2 -RRB-))")
    assert tokens == ["(", "x", ")"]


def test_sst_splits_have_the_standard_binary_counts():
    counts = [len(load_sst(split)) for split in ("train", "dev", "test")]
    assert counts == [6920, 872, 1821]
    fine = load_sst("dev", binary=False)
    assert len(fine) == 1101 and {e.label for e in fine} == {0, 1, 2, 3, 4}


def test_vocab_and_encode():
    train = load_sst("dev")[:5]
    vocab = Vocab(e.tokens for e in train)
    ids, lengths, labels = encode(train, vocab)
    assert ids.shape == (5, int(lengths.max())) and (ids[torch.arange(5), lengths - 1] > 1).all()
    assert (ids[0, lengths[0] :] == 0).all() and vocab.encode(["never-seen-word"]) == [1]


def test_missing_sst_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="CAPTUM_CD_SST"):
        load_sst("train", root=str(tmp_path))


def test_fashion_mnist(tmp_path):
    try:
        images, labels = load_fashion_mnist("test")
    except FileNotFoundError:
        pytest.fail("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (the README's test command does it)")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert set(labels.unique().tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=str(tmp_path))


def test_color_and_decoy_constructions():
    images = torch.full((10, 28, 28), 255, dtype=torch.uint8)
    labels = torch.arange(10)
    train, test = make_color_mnist(images, labels, True), make_color_mnist(images, labels, False)
    assert torch.allclose(train[:, :, 0, 0], COLOR_PALETTE) and torch.allclose(test[:, :, 0, 0], COLOR_PALETTE.flip(0))
    g = torch.Generator().manual_seed(0)
    decoy = make_decoy_mnist(torch.zeros(10, 28, 28, dtype=torch.uint8), labels, True, g)
    corners = decoy_corner_masks()
    patch = (decoy * decoy_corner_masks(True)).flatten(1)
    assert torch.allclose(patch.amax(1), (255 - 25 * labels) / 255.0)
    assert (decoy * (1 - decoy_corner_masks(True))).abs().sum() == 0  # nothing outside the corners
    assert torch.equal(decoy, make_decoy_mnist(torch.zeros(10, 28, 28, dtype=torch.uint8), labels, True, torch.Generator().manual_seed(0)))
    assert corners.shape == (4, 1, 28, 28) and corners.sum() == 100 and decoy_corner_masks(True).shape == (1, 1, 28, 28)
    masks = color_region_masks(torch.rand(50, 28, 28), 8, torch.Generator().manual_seed(1))
    assert masks.shape == (8, 1, 28, 28) and masks.sum() == 8
