"""Token scores in Captum's text shape and the one-call VisualizationDataRecord."""

import pytest
import torch

from captum_cd import AgglomerativeCD, ContextualDecomposition, token_scores, visualization_record
from experiments.models import LSTMSentiment


@pytest.fixture
def text():
    torch.manual_seed(0)
    return LSTMSentiment(30, embed_dim=6, hidden=5).eval(), torch.randint(1, 30, (2, 7))


def test_token_scores_are_each_tokens_cd_not_e_times_it(text):
    model, ids = text
    cd = ContextualDecomposition(model, layer=model.embed)
    attr = cd.attribute(ids, target=1, feature_mask=torch.arange(7).view(1, 7, 1))
    scores = token_scores(attr)
    assert attr.shape == (2, 7, 6) and scores.shape == (2, 7)
    relevant, _ = cd.decompose(ids, torch.eye(7))  # token t alone: mask (G=7, T) over (B, T, E)
    torch.testing.assert_close(scores, relevant[:, :, 1].t())
    torch.testing.assert_close(attr.sum(-1), 6 * scores)  # what the usual sum(-1) would give
    with pytest.raises(ValueError, match="not one group"):
        token_scores(cd.attribute(ids, target=1))  # every (token, dim) its own group


def test_visualization_record(text):
    model, ids = text
    words = "a film that never quite works".split() + ["."]
    scores = AgglomerativeCD(model, layer=model.embed).attribute(ids[:1], target=0, level=0, score="difference")
    assert scores.shape == (1, 7)
    logits = model(ids[:1])[0]
    record = visualization_record(scores, words, logits, target=0, true_class=1)
    probabilities = torch.softmax(logits, 0)
    assert record.pred_class == int(probabilities.argmax()) and record.pred_prob == pytest.approx(float(probabilities.max()))
    assert record.attr_class == 0 and record.true_class == 1 and record.raw_input_ids == words
    assert record.attr_score == pytest.approx(float(scores.sum()))
    torch.testing.assert_close(record.word_attributions, scores[0] / scores.abs().max())
    # (T, E) group attributions go through token_scores.
    attr = ContextualDecomposition(model, layer=model.embed).attribute(ids[:1], target=0, feature_mask=torch.arange(7).view(1, 7, 1))
    record = visualization_record(attr, words, logits, normalize=False)
    torch.testing.assert_close(record.word_attributions, token_scores(attr)[0])
    with pytest.raises(ValueError, match="7 token scores for 3 tokens"):
        visualization_record(scores, words[:3], logits)
