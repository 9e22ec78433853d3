"""A Hugging Face BERT (random weights, nothing downloaded) decomposes completely, and its
two attention code paths, hand-written (eager: matmul, mask, softmax) and
``F.scaled_dot_product_attention`` (sdpa), give the same CD scores: two different rules
of the engine checked against each other on a model we did not write."""

import pytest
import torch
from torch import nn

from captum_cd import ContextualDecomposition, token_masks

transformers = pytest.importorskip("transformers")  # in the test extra; optional for users


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, attention_mask=None):
        return self.model(input_ids=ids, attention_mask=attention_mask).logits


def _bert(implementation: str) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=3, attn_implementation=implementation,
    )
    return transformers.BertForSequenceClassification(config).double().eval()


def test_bert_eager_and_sdpa_attention_give_the_same_decomposition(monkeypatch):
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, 7:] = 0  # padding
    masks = token_masks([(0, 2), (3, 7), (0, 10)], 10)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))

    relevant = {}
    for implementation in ("eager", "sdpa"):
        bert = _bert(implementation)
        model = Logits(bert).eval()
        calls.clear()
        cd = ContextualDecomposition(model, layer=bert.bert.embeddings.word_embeddings)
        rel, irr = cd.decompose(ids, masks, additional_forward_args=(attention_mask,))
        assert (len(calls) > 0) == (implementation == "sdpa")  # the two paths really differ
        with torch.no_grad():
            torch.testing.assert_close(rel + irr, model(ids, attention_mask).expand_as(rel), rtol=0, atol=1e-10)
        assert rel.abs().max() > 1e-6  # the groups carry something through
        relevant[implementation] = rel
    torch.testing.assert_close(relevant["eager"], relevant["sdpa"], rtol=1e-9, atol=1e-12)


def test_bert_scores_differ_between_groups_and_follow_the_tokens():
    bert = _bert("eager")
    model = Logits(bert).eval()
    cd = ContextualDecomposition(model, layer=bert.bert.embeddings.word_embeddings)
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        rel, _ = cd.decompose(ids, token_masks([(1, 3), (4, 6)], 8))
        changed = ids.clone()
        changed[:, 4:6] = (changed[:, 4:6] + 1) % 50  # other words in the second span only
        rel_changed, _ = cd.decompose(changed, token_masks([(1, 3), (4, 6)], 8))
    assert not torch.allclose(rel[0], rel[1])
    assert not torch.allclose(rel[1], rel_changed[1])  # the span's own words matter to it
