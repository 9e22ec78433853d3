"""Token masks from character or word spans of a text, with a fast tokenizer's offsets
(a WordPiece tokenizer built here from a vocabulary written in the test)."""

import pytest
import torch

from captum_cd import text_span_masks, token_masks

tokenizers = pytest.importorskip("tokenizers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "was", "not", "good", "at", "all", "un", "##bear", "##able", "!"]


def _tokenizer():
    from tokenizers import models, normalizers, pre_tokenizers, processors

    tok = tokenizers.Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


TEXT = "The movie was not good at all, unbearable!"


def test_word_and_character_spans_select_their_tokens():
    enc = _tokenizer().encode(TEXT)
    assert enc.tokens == ["[CLS]", "the", "movie", "was", "not", "good", "at", "all", "[UNK]", "un", "##bear", "##able", "!", "[SEP]"]
    masks = text_span_masks(enc.offsets, ["not good", "unbearable", (0, 3)], text=TEXT)
    assert masks.shape == (3, len(enc.tokens))
    expected = token_masks([(4, 6), (9, 12), (1, 2)], len(enc.tokens))
    torch.testing.assert_close(masks, expected)


def test_a_span_that_cuts_a_word_takes_its_tokens_and_special_tokens_are_never_taken():
    enc = _tokenizer().encode(TEXT)
    start = TEXT.index("bear")
    masks = text_span_masks(torch.tensor([enc.offsets]), [(start, start + 2), (0, len(TEXT))])
    assert masks[0].nonzero().flatten().tolist() == [10]  # "##bear" only
    assert masks[1, 0] == 0 and masks[1, -1] == 0 and masks[1, 1:-1].all()


def test_transformers_fast_tokenizer_offsets():
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=_tokenizer(), unk_token="[UNK]", pad_token="[PAD]")
    enc = fast(TEXT, return_offsets_mapping=True, return_tensors="pt")
    masks = text_span_masks(enc["offset_mapping"], ["movie"], text=TEXT)
    assert masks[0].nonzero().flatten().tolist() == [2]


@pytest.mark.parametrize(
    "spans, text, message",
    [(["boring"], TEXT, "does not occur"), (["movi"], TEXT, "does not occur"), (["movie"], None, "pass text="), ([(5, 5)], None, "empty"), ([(1000, 1001)], None, "holds no token")],
)
def test_bad_spans_are_refused_by_name(spans, text, message):
    enc = _tokenizer().encode(TEXT)
    with pytest.raises(ValueError, match=message):
        text_span_masks(enc.offsets, spans, text=text)


def test_offsets_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="offsets has shape"):
        text_span_masks(torch.zeros(2, 5, 2), [(0, 1)])


def test_a_word_is_never_found_inside_another_and_a_repeated_one_is_refused():
    """"a" occurs inside "Dave" and "Palm": only the word "a" is its span."""
    text = "Dave lives in Palm Coast and likes a game"
    offsets, at = [], 0
    for word in text.split(" "):  # one token a word
        offsets.append((at, at + len(word)))
        at += len(word) + 1
    masks = text_span_masks(offsets, ["a", "Palm Coast", "in"], text=text)
    assert masks.nonzero().tolist() == [[0, 7], [1, 3], [1, 4], [2, 2]]
    with pytest.raises(ValueError, match=r"occurs 2 times in the text, at characters \(0, 3\), \(8, 11\)"):
        text_span_masks([(0, 3), (4, 7), (8, 11)], ["the"], text="the cat the")
    with pytest.raises(ValueError, match="does not occur in the text as a whole word"):
        text_span_masks(offsets, ["ave"], text=text)
