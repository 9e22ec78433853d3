r"""Recurrent layers: LSTM (Murdoch et al. 2018), a GRU rule derived the same way, and
plain RNNs. ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (any number of layers, bidirectional,
``batch_first``, given initial states, ``proj_size``) and the cells used in a user's
own loop (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``).

**LSTM** (docs/methods.md, "Contextual decomposition"; the original ``acd.cd_text``). At step t each gate
pre-activation (input i, candidate g, forget f) has three players:
``rel = W_i x_beta + W_h h_beta``, ``irrel = W_i x_gamma + W_h h_gamma`` and
``bias = b_ih + b_hh``. A gate nonlinearity is linearised over them with the bias
first: ``L_rel = 1/2 [act(rel + bias) - act(bias) + act(rel + irrel + bias) -
act(irrel + bias)]``, ``L_irrel`` symmetric, ``L_bias = act(bias)``. Then::

    c_beta  = I_rel (G_rel + G_bias) + I_bias G_rel + p I_bias G_bias + (F_rel + F_bias) c_beta(t-1)
    c_gamma = everything else  (= c - c_beta)
    h_beta  = o * 1/2 [tanh(c_beta) + tanh(c) - tanh(c_gamma)],   o = sigmoid(full pre-activation)

The output gate is not decomposed. ``p`` is the share of step t's input that is
relevant, ``|x_beta| / (|x_beta| + |x_gamma|)`` (L1 over features): 1 for a word of the
phrase and 0 for any other word when the decomposition starts at the embedding, which is
``cd_text``'s rule with the bias-times-bias term going to beta for ``t <= stop`` (so CD of
the whole sentence equals the prediction); for deeper layers, whose inputs are mixed, the
term is shared in proportion. Initial states that are not decomposed are constants and
belong to gamma.

**GRU**, derived the same way. With ``r``, ``z`` gates split into three players like
the LSTM's (``R_*``, ``Z_*``), ``m = W_hn h + b_hn`` split into ``M_rel = W_hn h_beta``,
``M_irrel = W_hn h_gamma``, ``M_bias = b_hn``, and products assigned by the LSTM's
convention (rel x rel, rel x bias and bias x rel are relevant; anything with irrel is
irrelevant)::

    n_rel  = W_in x_beta + R_rel M_rel + R_rel M_bias + R_bias M_rel
    n_bias = b_in + R_bias M_bias,     n_irrel = the rest of n's pre-activation
    N_rel, N_irrel, N_bias = three-player linearisation of tanh, bias first
    h_beta = -Z_rel (N_rel + N_bias) + (1 - Z_bias) N_rel + p (1 - Z_bias) N_bias + (Z_rel + Z_bias) h_beta(t-1)

(``1 - z`` has players ``-Z_rel``, ``-Z_irrel``, ``1 - Z_bias``.) ``h_gamma = h - h_beta``.

**Plain RNN** (``tanh``/``relu``): the feed-forward rules, an affine map with its bias
split followed by the activation's rule.

Packed sequences are refused with a message to pad. Training-mode dropout between
layers is refused like dropout elsewhere.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_cd.attr.decomposition import current_context, Decomposition
from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.rules._util import fulls, is_dec, keep_zeros, split_bias
from captum_cd.attr.rules.registry import register_rule


class Parts(NamedTuple):
    """A decomposed value inside a recurrence: the full value and the relevant parts."""

    full: Tensor
    rel: Tensor  # (G, *full.shape)


def _parts(value, groups: int) -> Parts:
    if is_dec(value):
        return Parts(value.full, value.rel)
    return Parts(value, value.new_zeros(()).expand(groups, *value.shape))


def three_players(rel: Tensor, irrel: Tensor, bias, act) -> Tuple[Tensor, Tensor, Tensor]:
    """Linearises ``act(rel + irrel + bias)`` over three players, the bias first."""
    at_bias = act(bias)
    with_rel, with_irrel, with_all = act(rel + bias), act(irrel + bias), act(rel + irrel + bias)
    linearised_rel = keep_zeros(0.5 * (with_rel - at_bias + with_all - with_irrel), rel)
    return linearised_rel, 0.5 * (with_irrel - at_bias + with_all - with_rel), at_bias


def relevant_share(x: Parts) -> Tensor:
    """``p``: how much of a step's input is relevant, per group and example (0 where the
    whole input is 0, as a bias split gives nothing to a part that is 0)."""
    rel = x.rel.abs().sum(-1, keepdim=True)
    total = rel + (x.full - x.rel).abs_().sum(-1, keepdim=True)
    some = total > 0  # 0/0 would be NaN, and so would its gradient even where masked afterwards
    return torch.where(some, rel / torch.where(some, total, 1.0), 0.0)


def _bias(b_ih: Optional[Tensor], b_hh: Optional[Tensor], like: Tensor):
    if b_ih is None:
        return like.new_zeros(())
    return b_ih + b_hh


# ---------------------------------------------------------------- one step of each cell


class LSTMWeights(NamedTuple):
    """What every step of one LSTM direction reuses. One sigmoid serves all four gates,
    the candidate gate's pre-activation scaled by 2: ``tanh(x) = 2 sigmoid(2x) - 1``; the
    weights are not copied, the scale is applied to the products (by 2: exact). The output
    gate is not decomposed, so the relevant parts need only the i, f, g columns (``3H``):
    a quarter less of every product and elementwise step."""

    w_ih_t: Tensor  # (D, 4H), a view of the weight
    w_hh_t: Tensor  # (H_in, 4H)
    w_ih_rel: Tensor  # (D, 3H): the i, f, g columns, for the relevant parts
    w_hh_rel: Tensor  # (H_in, 3H)
    raw_bias: Tensor  # (4H,): b_ih + b_hh
    bias: Tensor  # (4H,), scaled
    scale: Tensor  # 1 on i, f, o; 2 on g
    hidden: int
    # Constants of every step, computed once.
    one_minus_scale: Tensor  # 1 - scale
    half_scale: Tensor  # 0.5 * scale on i, f, g
    i_bias: Tensor  # I_bias, the input gate at the bias, (H,)
    fg_bias: Tensor  # F_bias and G_bias, (2H,)
    ig_bias: Tensor  # I_bias * G_bias, (H,)
    gate_signs: Tensor  # (2, 1, 1, 3H): scale and -scale, the relevant part's factors in [rel + b, full - rel]
    cell_signs: Tensor  # (2, 1, 1, 1): 1 and -1

    @classmethod
    def of(cls, w_ih: Tensor, w_hh: Tensor, bias: Tensor) -> "LSTMWeights":
        hidden = w_hh.shape[0] // 4
        three = 3 * hidden
        scale = w_hh.new_ones(4 * hidden)
        scale[2 * hidden : three] = 2.0
        scaled = scale * bias
        one_minus_scale = 1.0 - scale
        at_bias = torch.addcmul(one_minus_scale, scale, torch.sigmoid(scaled))
        i_bias, _, g_bias, _ = at_bias.split(hidden, -1)
        cell_signs = w_hh.new_ones(2, 1, 1, 1)
        cell_signs[1] = -1.0  # written on the device: no copy from the host
        w_ih_t, w_hh_t = w_ih.t(), w_hh.t()
        return cls(
            w_ih_t, w_hh_t, w_ih_t[:, :three], w_hh_t[:, :three], bias, scaled, scale, hidden, one_minus_scale,
            0.5 * scale[:three], i_bias, at_bias[hidden:three], i_bias * g_bias, cell_signs * scale[:three], cell_signs,
        )  # fmt: skip

    def project(self, x: Tensor, h: Tensor) -> Tensor:
        """The full pass's scaled pre-activations of steps with inputs ``x`` and previous states ``h``."""
        return torch.addmm(torch.addmm(self.raw_bias, x.flatten(0, -2), self.w_ih_t), h.flatten(0, -2), self.w_hh_t) * self.scale


class LSTMSteps(NamedTuple):
    """Constants of the full pass, one per step (the first dimension): with them a step
    of the relevant parts is a few large operations. ``points`` and the relevant part times
    the signs (:class:`LSTMWeights`) give both arguments of a nonlinearity in one
    ``addcmul``, so one sigmoid serves both: ``[rel + b, full - rel]`` (scaled) and
    ``[2 c_rel, 2c - 2 c_rel]``."""

    gate_points: Tensor  # (T, 2, 1, B, 3H): the bias and the full pre-activation
    gate_offset: Tensor  # (T, B, 3H): (sigmoid(full) - sigmoid(bias)) * half_scale
    cell_points: Tensor  # (T, 2, 1, B, H): 0 and 2c
    o: Tensor  # (T, B, H): the output gate
    cell_offset: Tensor  # (T, B, H): o (sigmoid(2c) - 1/2)

    @classmethod
    def of(cls, pre: Tensor, c0: Tensor, w: LSTMWeights, order: Sequence[int]) -> "LSTMSteps":
        """From the full pass's scaled pre-activations ``pre`` (T, B, 4H) and first cell
        ``c0``: the gates of all steps at once, then the cells step by step."""
        three = 3 * w.hidden
        sigmoid_pre = torch.sigmoid(pre)
        i, f, g, o = torch.addcmul(w.one_minus_scale, w.scale, sigmoid_pre).split(w.hidden, -1)
        ig, cells, c = i * g, [c0] * len(order), c0
        for t in order:
            c = torch.addcmul(ig[t], f[t], c)
            cells[t] = c
        two_c = 2.0 * torch.stack(cells)
        return cls(
            torch.stack([w.bias[:three].expand_as(pre[..., :three]), pre[..., :three]], 1).unsqueeze(2),
            (sigmoid_pre[..., :three] - torch.sigmoid(w.bias[:three])) * w.half_scale,
            torch.stack([torch.zeros_like(two_c), two_c], 1).unsqueeze(2),
            o,
            (torch.sigmoid(two_c) - 0.5) * o,
        )


CHUNK_STEPS = 4  # steps whose relevant inputs are projected in one product


def lstm_relevant(x: Parts, h: Tensor, c: Tensor, w: LSTMWeights, steps: LSTMSteps, w_hr: Optional[Tensor], order: Sequence[int]):
    r"""The relevant parts through one LSTM direction, ``order`` giving the steps.

    ``x``: the direction's input, ``(T, B, D)`` and relevant parts ``(G, T, B, D)``;
    ``h``, ``c`` (G, B, \*): the first relevant states. Returns the relevant hidden state of
    every step (G, T, B, H_out) and the last relevant h and c. The relevant inputs are
    projected ``CHUNK_STEPS`` steps at a time: products of many rows, and memory for those
    steps only (all steps at once doubled the peak of CD through an LSTM).
    """
    groups, order = x.rel.shape[0], list(order)
    constants = [k.unbind(0) for k in (steps.gate_points, steps.gate_offset, steps.cell_points, steps.cell_offset, steps.o)]
    share = relevant_share(x).transpose(0, 1)  # (T, G, B, 1); its temporaries go before the loop's memory comes
    h, out = h.reshape(-1, h.shape[-1]), None
    for start in range(0, len(order), CHUNK_STEPS):
        chunk = order[start : start + CHUNK_STEPS]
        first, last = min(chunk), max(chunk) + 1
        bias_shares = (share[first:last] * w.ig_bias).unbind(0)  # p I_bias G_bias
        step_major = x.rel[:, first:last].transpose(0, 1).reshape(-1, x.rel.shape[-1])  # a step's rows contiguous
        projected = torch.mm(step_major, w.w_ih_rel).view(last - first, groups, -1, w.w_ih_rel.shape[1]).unbind(0)
        del step_major
        for t in chunk:
            h_rel, c = lstm_step(projected[t - first], bias_shares[t - first], h, c, w, [k[t] for k in constants])
            if w_hr is not None:
                h_rel = h_rel @ w_hr.t()
            if out is None:
                out = h_rel.new_empty(groups, x.rel.shape[1], *h_rel.shape[1:])
            out[:, t] = h_rel  # written in place: no list of steps to stack
            h = h_rel.view(-1, h_rel.shape[-1])
    return out, out[:, order[-1]], c


def lstm_step(xp: Tensor, bias_share: Tensor, h: Tensor, c: Tensor, w: LSTMWeights, constants: Sequence[Tensor]):
    """One step of the relevant parts, ``(G, B, *)``: ``xp`` the input's projection on the
    i, f, g rows, ``bias_share`` ``p I_bias G_bias``, ``h`` ``(G * B, H_in)``, ``constants``
    the step's entries of :class:`LSTMSteps`. With ``L`` the gates' three-player
    linearisation (bias first) and the cell's tanh through the sigmoid::

        L     = gate_offset + half_scale [sigmoid(rel + b) - sigmoid(full - rel)]
        c_rel = p I_bias G_bias + I_rel (G_rel + G_bias) + I_bias G_rel + (F_rel + F_bias) c_rel(t-1)
        h_rel = cell_offset + o [sigmoid(2 c_rel) - sigmoid(2c - 2 c_rel)]
    """
    gate_points, gate_offset, cell_points, cell_offset, o = constants
    hidden, groups, three = w.hidden, xp.shape[0], 3 * w.hidden
    rel = torch.addmm(xp.view(-1, three), h, w.w_hh_rel).view(groups, -1, three)
    gates = torch.addcmul(gate_points, w.gate_signs, rel).sigmoid_()  # sigmoid(rel + b), sigmoid(full - rel), scaled
    L = keep_zeros(torch.addcmul(gate_offset, gates[0] - gates[1], w.half_scale), rel)
    FG_all = L[..., hidden:] + w.fg_bias  # F_rel + F_bias, G_rel + G_bias
    c_rel = torch.addcmul(bias_share, L[..., :hidden], FG_all[..., hidden:])
    c_rel.addcmul_(L[..., 2 * hidden :], w.i_bias)
    c_rel.addcmul_(FG_all[..., :hidden], c)
    cells = torch.addcmul(cell_points, w.cell_signs, c_rel, value=2.0).sigmoid_()  # sigmoid(2 c_rel), sigmoid(2c - 2 c_rel)
    return keep_zeros(torch.addcmul(cell_offset, cells[0] - cells[1], o), c_rel), c_rel


def gru_step(xp: Parts, p: Tensor, h: Parts, w_hh: Tensor, b_ih, b_hh) -> Parts:
    """One GRU step from the input projection ``xp = W_ih x`` (bias excluded)."""
    hp = Parts(h.full @ w_hh.t(), h.rel @ w_hh.t())
    (xr_f, xz_f, xn_f), (xr_r, xz_r, xn_r) = xp.full.chunk(3, -1), xp.rel.chunk(3, -1)
    (hr_f, hz_f, hn_f), (hr_r, hz_r, hn_r) = hp.full.chunk(3, -1), hp.rel.chunk(3, -1)
    zero = xp.full.new_zeros(())
    b_ir, b_iz, b_in = b_ih.chunk(3, -1) if b_ih is not None else (zero,) * 3
    b_hr, b_hz, b_hn = b_hh.chunk(3, -1) if b_hh is not None else (zero,) * 3
    r_full, z_full = xr_f + hr_f, xz_f + hz_f
    R_rel, _, R_bias = three_players(xr_r + hr_r, r_full - xr_r - hr_r, b_ir + b_hr, torch.sigmoid)
    Z_rel, _, Z_bias = three_players(xz_r + hz_r, z_full - xz_r - hz_r, b_iz + b_hz, torch.sigmoid)
    r = torch.sigmoid(r_full + b_ir + b_hr)
    n_pre_full = xn_f + b_in + r * (hn_f + b_hn)
    n_rel = xn_r + R_rel * hn_r + R_rel * b_hn + R_bias * hn_r
    n_bias = b_in + R_bias * b_hn
    N_rel, _, N_bias = three_players(n_rel, n_pre_full - n_rel - n_bias, n_bias, torch.tanh)
    z = torch.sigmoid(z_full + b_iz + b_hz)
    h_full = (1 - z) * torch.tanh(n_pre_full) + z * h.full
    h_rel = -Z_rel * (N_rel + N_bias) + (1 - Z_bias) * N_rel + p * (1 - Z_bias) * N_bias + (Z_rel + Z_bias) * h.rel
    return Parts(h_full, h_rel)


def rnn_step(xp: Parts, h: Parts, w_hh: Tensor, bias, relu: bool) -> Parts:
    """One plain RNN step: affine map with its bias split, then the activation's rule."""
    linear = xp.full + h.full @ w_hh.t()
    pre_full = linear + bias
    rel = split_bias(xp.rel + h.rel @ w_hh.t(), linear, bias)
    if relu:
        return Parts(torch.relu(pre_full), torch.relu(rel))
    out = torch.tanh(pre_full)
    return Parts(out, keep_zeros(0.5 * (torch.tanh(rel) + out - torch.tanh(pre_full - rel)), rel))


# ---------------------------------------------------------------- whole sequences


def _weights(weights: List[Tensor], has_bias: bool):
    """``w_ih, w_hh, b_ih, b_hh, w_hr`` of one direction (absent ones None)."""
    n = 4 if has_bias else 2
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    return weights[0], weights[1], b_ih, b_hh, weights[n] if len(weights) > n else None


def _lstm_direction(x: Parts, state: Sequence[Parts], weights: List[Tensor], has_bias: bool, reverse: bool):
    """One LSTM layer, one direction, over a sequence-first input ``(T, B, D)``."""
    w_ih, w_hh, b_ih, b_hh, w_hr = _weights(weights, has_bias)
    (h0, c0), steps = state, x.full.shape[0]
    w = LSTMWeights.of(w_ih, w_hh, _bias(b_ih, b_hh, x.full).expand(w_hh.shape[0]))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    # The ordinary pass of this direction is one fused call; its hidden states give the
    # pre-activations of all steps in one product.
    inputs = x.full.flip(0) if reverse else x.full
    h_full = torch.lstm(inputs, (h0.full[None], c0.full[None]), weights, has_bias, 1, 0.0, False, False, False)[0]
    h_full = h_full.flip(0) if reverse else h_full
    before = torch.cat([h_full[1:], h0.full[None]]) if reverse else torch.cat([h0.full[None], h_full[:-1]])
    pre = w.project(x.full, before).view(steps, h_full.shape[1], -1)
    rel, h, c = lstm_relevant(x, h0.rel, c0.rel, w, LSTMSteps.of(pre, c0.full, w, order), w_hr, order)
    return Parts(h_full, rel), (h, c)


def _run_direction(kind: str, x: Parts, state: Sequence[Parts], weights: List[Tensor], has_bias: bool, reverse: bool):
    """One layer, one direction, over a sequence-first input ``(T, B, D)``: the sequence
    (full and relevant) and the relevant parts of the last states."""
    if kind == "lstm":
        return _lstm_direction(x, state, weights, has_bias, reverse)
    w_ih, w_hh, b_ih, b_hh, _ = _weights(weights, has_bias)
    share = relevant_share(x)
    bias = _bias(b_ih, b_hh, x.full)
    xp = Parts(x.full @ w_ih.t(), x.rel @ w_ih.t())
    h = state[0]
    outputs: List[Parts] = [None] * x.full.shape[0]  # type: ignore[list-item]
    for t in (reversed(range(x.full.shape[0])) if reverse else range(x.full.shape[0])):
        xp_t = Parts(xp.full[t], xp.rel[:, t])
        if kind == "gru":
            h = gru_step(xp_t, share[:, t], h, w_hh, b_ih, b_hh)
        else:
            h = rnn_step(xp_t, h, w_hh, bias, relu=kind == "rnn_relu")
        outputs[t] = h
    sequence = Parts(torch.stack([o.full for o in outputs]), torch.stack([o.rel for o in outputs], 1))
    return sequence, (h.rel,)


def recurrent_layer(func, args, kwargs):
    """``torch.lstm``/``gru``/``rnn_tanh``/``rnn_relu`` as called by nn.LSTM/GRU/RNN."""
    if isinstance(args[1], Tensor) and not args[1].is_floating_point():
        raise DecompositionError(
            "packed sequences are not supported: pad the batch instead (keep the padded tensor "
            "from torch.nn.utils.rnn.pad_sequence and pass it to the layer unpacked)."
        )
    x, hx, weights, has_bias, num_layers, dropout, training, bidirectional, batch_first = args
    if training and dropout > 0 and num_layers > 1 and current_context().training != "batch":
        raise DecompositionError(
            "a recurrent layer with dropout between layers in training mode drops random units; "
            "call model.eval() before attributing."
        )
    kind = func.__name__
    states_in = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    groups = next(v for v in [x, *states_in] if is_dec(v)).rel.shape[0]
    out_full, *finals_full = func(*fulls(args))  # the ordinary result: (output, h_n[, c_n])
    x = _parts(x, groups)
    if batch_first:
        x = Parts(x.full.transpose(0, 1), x.rel.transpose(1, 2))
    states = [_parts(s, groups) for s in states_in]

    dirs = 2 if bidirectional else 1
    per = len(weights) // (num_layers * dirs)
    finals: List[List[Tensor]] = [[] for _ in states]  # relevant parts of h_n (and c_n)
    layer_input = x
    for layer in range(num_layers):
        sequences = []
        for d in range(dirs):
            k = layer * dirs + d
            init = [Parts(s.full[k], s.rel[:, k]) for s in states]
            sequence, final = _run_direction(kind, layer_input, init, list(weights[k * per : (k + 1) * per]), has_bias, d == 1)
            sequences.append(sequence)
            for store, value in zip(finals, final):
                store.append(value)
        layer_input = sequences[0] if dirs == 1 else Parts(*(torch.cat(parts, -1) for parts in zip(*sequences)))

    out_rel = layer_input.rel.transpose(1, 2) if batch_first else layer_input.rel
    output = Decomposition(out_full, out_rel)
    return (output, *(Decomposition(f, torch.stack(r, 1)) for f, r in zip(finals_full, finals)))


# ---------------------------------------------------------------- cells in a user's loop


def recurrent_cell(func, args, kwargs):
    """``torch.lstm_cell``/``gru_cell``/``rnn_tanh_cell``/``rnn_relu_cell``."""
    x, hx, w_ih, w_hh = args[:4]
    b_ih, b_hh = (args[4], args[5]) if len(args) > 5 else (None, None)
    kind = func.__name__.replace("_cell", "")
    states_in = list(hx) if kind == "lstm" else [hx]
    groups = next(v for v in [x, *states_in] if is_dec(v)).rel.shape[0]
    x = _parts(x, groups)
    states = [_parts(s, groups) for s in states_in]
    if kind == "lstm":
        w = LSTMWeights.of(w_ih, w_hh, _bias(b_ih, b_hh, x.full).expand(w_hh.shape[0]))
        steps = LSTMSteps.of(w.project(x.full, states[0].full)[None], states[1].full, w, [0])
        one_step = Parts(x.full[None], x.rel[:, None])
        _, h, c = lstm_relevant(one_step, states[0].rel, states[1].rel, w, steps, None, [0])
        full_h, full_c = func(x.full, [s.full for s in states], w_ih, w_hh, b_ih, b_hh)
        return Decomposition(full_h, h), Decomposition(full_c, c)
    xp = Parts(x.full @ w_ih.t(), x.rel @ w_ih.t())  # the LSTM folds its gate scales in above instead
    if kind == "gru":
        h = gru_step(xp, relevant_share(x), states[0], w_hh, b_ih, b_hh)
    else:
        h = rnn_step(xp, states[0], w_hh, _bias(b_ih, b_hh, x.full), relu=kind == "rnn_relu")
    return Decomposition(func(x.full, states[0].full, w_ih, w_hh, b_ih, b_hh), h.rel)


def packed(func, args, kwargs):
    raise DecompositionError(
        "packing a decomposed sequence (pack_padded_sequence) is not supported: pass the "
        "padded tensor to the recurrent layer directly."
    )


register_rule([torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu], recurrent_layer)
register_rule([torch.lstm_cell, torch.gru_cell, torch.rnn_tanh_cell, torch.rnn_relu_cell], recurrent_cell)
register_rule([torch._pack_padded_sequence], packed)
