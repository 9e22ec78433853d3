"""The recurrent rules (captum_cd/attr/rules/recurrent.py): LSTM, GRU and RNN layers and
cells against the original cd_text and a straight-line reference, initial states, packed
sequences, phrase interactions of an LSTM."""

import types

import numpy as np
import pytest
import torch
from torch import nn

from captum_cd import ContextualDecomposition, DecompositionError, token_masks
from reference_rnn import gru_direction, lstm_direction, recurrent_cd


class LSTMClassifier(nn.Module):
    """The original cd_text's model layout: embed, lstm (seq-first), hidden_to_label."""

    def __init__(self, vocab=30, emb=6, hidden=5):
        super().__init__()
        self.embed, self.lstm, self.hidden_to_label = nn.Embedding(vocab, emb), nn.LSTM(emb, hidden), nn.Linear(hidden, 2)
        self.hidden_dim = hidden

    def forward(self, text):  # (T, B)
        out, _ = self.lstm(self.embed(text))
        return self.hidden_to_label(out[-1])


def test_lstm_equals_original_cd_text():
    acd = pytest.importorskip("acd")
    model = LSTMClassifier().eval()
    model.hidden_to_label.bias.data.zero_()  # the original leaves this bias out of its scores
    text = torch.randint(0, 30, (9, 1))
    cd = ContextualDecomposition(model, layer=model.embed)
    spans = [(0, 0), (2, 4), (0, 8), (8, 8), (3, 3)]  # cd_text's start and stop are inclusive
    masks = token_masks([(start, stop + 1) for start, stop in spans], 9)[:, :, None, None]  # seq-first: (G, T, 1, 1)
    rel, irrel = cd.decompose(text, masks)
    for g, (start, stop) in enumerate(spans):
        with torch.no_grad():
            beta, gamma = acd.cd_text(types.SimpleNamespace(text=text), model, start, stop, return_irrel_scores=True)
        np.testing.assert_allclose(rel[g, 0].detach().numpy(), beta, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(irrel[g, 0].detach().numpy(), gamma, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
def test_recurrent_layers_equal_straight_line_reference(kind, layers, bidirectional):
    module = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, num_layers=layers, bidirectional=bidirectional).double().eval()
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    masks = (torch.rand(3, 6, 1, 1) > 0.5).double()  # token positions, seq-first
    rel, irrel = ContextualDecomposition(lambda inp: module(inp)[0]).decompose(x, masks)
    step = lstm_direction if kind == "lstm" else gru_direction
    for g in range(3):
        for b in range(2):
            xb = (masks[g, :, 0] * x[:, b]).numpy()
            beta, gamma = recurrent_cd(module, xb, x[:, b].numpy() - xb, step)
            np.testing.assert_allclose(rel[g, :, b].detach().numpy(), beta, atol=1e-10)
            np.testing.assert_allclose(irrel[g, :, b].detach().numpy(), gamma, atol=1e-10)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("options", [{}, {"batch_first": True}, {"num_layers": 2, "bidirectional": True, "batch_first": True}])
def test_complete_with_initial_states(cls, options):
    module = cls(4, 5, **options).eval()
    batch_first = options.get("batch_first", False)
    x = torch.randn(2, 7, 4) if batch_first else torch.randn(7, 2, 4)
    states = 2 * options.get("num_layers", 1) if options.get("bidirectional") else options.get("num_layers", 1)
    h0 = torch.randn(states, 2, 5)
    hx = (h0, torch.randn(states, 2, 5)) if cls is nn.LSTM else h0

    def model(inp):
        out, final = module(inp, hx)
        h_n = final[0] if cls is nn.LSTM else final
        return torch.cat([out.sum(1 if batch_first else 0), h_n.transpose(0, 1).flatten(1)], -1)

    token = (torch.rand(3, 7) > 0.5).float()
    masks = token[:, None, :, None] if batch_first else token[:, :, None, None]
    rel, irrel = ContextualDecomposition(model).decompose(x, masks)
    torch.testing.assert_close(rel + irrel, model(x).expand_as(rel), atol=1e-5, rtol=1e-5)
    empty, _ = ContextualDecomposition(model).decompose(x, torch.zeros_like(masks[:1]))
    assert empty.abs().max() < 1e-6  # initial states are constants: irrelevant


def test_lstm_projection_and_cells_in_a_users_loop_equal_the_layer():
    torch.manual_seed(1)
    layer = nn.LSTM(4, 5).double().eval()
    cell = nn.LSTMCell(4, 5).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    gru_layer, gru_cell = nn.GRU(4, 5).double().eval(), nn.GRUCell(4, 5).double()
    gru_cell.load_state_dict({k.replace("_l0", ""): v for k, v in gru_layer.state_dict().items()})

    def lstm_loop(x):
        h = c = torch.zeros(x.shape[1], 5, dtype=x.dtype)
        for t in range(x.shape[0]):
            h, c = cell(x[t], (h, c))
        return h

    def gru_loop(x):
        h = torch.zeros(x.shape[1], 5, dtype=x.dtype)
        for t in range(x.shape[0]):
            h = gru_cell(x[t], h)
        return h

    x = torch.randn(6, 3, 4, dtype=torch.float64)
    masks = (torch.rand(4, 6, 1, 1) > 0.5).double()
    for loop, module in ((lstm_loop, layer), (gru_loop, gru_layer)):
        rel_loop, _ = ContextualDecomposition(loop).decompose(x, masks)
        rel_layer, _ = ContextualDecomposition(lambda inp: module(inp)[0][-1]).decompose(x, masks)
        torch.testing.assert_close(rel_loop, rel_layer, atol=1e-12, rtol=1e-10)
    projected = nn.LSTM(4, 6, proj_size=3).eval()
    f = lambda inp: projected(inp)[0][-1]  # noqa: E731
    rel, irrel = ContextualDecomposition(f).decompose(x.float(), masks.float())
    torch.testing.assert_close(rel + irrel, f(x.float()).expand_as(rel))


def test_packed_sequences_say_to_pad():
    lstm = nn.LSTM(4, 5, batch_first=True)

    def model(x):
        packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 2]), batch_first=True)
        return lstm(packed)[1][0][-1]

    with pytest.raises(DecompositionError, match="pad"):
        ContextualDecomposition(model).decompose(torch.randn(2, 3, 4), torch.ones(1, 3, 1))


def test_phrase_interactions_in_one_call():
    model = LSTMClassifier().eval()
    text = torch.randint(0, 30, (8, 1))
    cd = ContextualDecomposition(model, layer=model.embed)
    a, b = token_masks([(0, 1), (2, 3)], 8), token_masks([(1, 2), (3, 5)], 8)
    inter = cd.interactions(text, a[:, :, None, None], b[:, :, None, None], target=1)
    for p in range(2):
        union = torch.maximum(a[p], b[p])
        rel, _ = cd.decompose(text, torch.stack([union, a[p], b[p]])[:, :, None, None])
        torch.testing.assert_close(inter[p], rel[0, :, 1] - rel[1, :, 1] - rel[2, :, 1])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_relevant_parts_differentiate(bidirectional):
    """The LSTM rule's in-place steps keep autograd right (CDEP trains through it):
    gradients of the relevant parts match finite differences, for the layer and the cell."""
    torch.manual_seed(0)
    layer = nn.LSTM(3, 2, num_layers=2, bidirectional=bidirectional).double()
    cell = nn.LSTMCell(3, 2).double()
    masks = (torch.rand(2, 4, 1, 1) > 0.5).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)

    def through_layer(inp, *weights):
        hx = (torch.zeros(layer.num_layers * (2 if bidirectional else 1), 2, 2, dtype=inp.dtype),) * 2
        run = lambda v: torch.lstm(v, hx, list(weights), True, 2, 0.0, False, bidirectional, False)[0]  # noqa: E731
        return ContextualDecomposition(run).decompose(inp, masks)[0]

    def through_cell(inp, w_ih, w_hh, b_ih, b_hh):
        def loop(v):
            h = c = torch.zeros(2, 2, dtype=v.dtype)
            for t in range(v.shape[0]):
                h, c = torch.lstm_cell(v[t], (h, c), w_ih, w_hh, b_ih, b_hh)
            return torch.cat([h, c], -1)

        return ContextualDecomposition(loop).decompose(inp, masks)[0]

    weights = [w.detach().requires_grad_() for w in layer._flat_weights]
    assert torch.autograd.gradcheck(through_layer, (x, *weights))
    assert torch.autograd.gradcheck(through_cell, (x, *(p.detach().requires_grad_() for p in cell.parameters())))
