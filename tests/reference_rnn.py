"""Straight-line numpy contextual decomposition of LSTM and GRU layers, for the tests.

Written from the formulas in METHODS.md (LSTM) and in the docstring of
captum_cd/attr/rules/recurrent.py (GRU), one example and one time step at a time, with
beta and gamma both propagated explicitly (never gamma = full - beta).
"""

import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def three(a, b, c, act):
    return (0.5 * (act(a + c) - act(c) + act(a + b + c) - act(b + c)),
            0.5 * (act(b + c) - act(c) + act(a + b + c) - act(a + c)), act(c))  # fmt: skip


def share(xb, xg):
    rel, total = np.abs(xb).sum(), np.abs(xb).sum() + np.abs(xg).sum()
    return rel / total if total > 0 else 0.0  # an input that is all zero: none of it relevant


def lstm_direction(xb, xg, w_ih, w_hh, b_ih, b_hh, reverse=False):
    """xb, xg: (T, D) relevant / irrelevant input sequences of one example."""
    hidden = w_hh.shape[1]
    W_ii, W_if, W_ig, W_io = np.split(w_ih, 4)
    W_hi, W_hf, W_hg, W_ho = np.split(w_hh, 4)
    b_i, b_f, b_g, b_o = np.split(b_ih + b_hh, 4)
    hb, hg, cb, cg = (np.zeros(hidden) for _ in range(4))
    out_b, out_g = np.zeros((len(xb), hidden)), np.zeros((len(xb), hidden))
    for t in (range(len(xb))[::-1] if reverse else range(len(xb))):
        p = share(xb[t], xg[t])
        Ib, Ig, Ic = three(W_ii @ xb[t] + W_hi @ hb, W_ii @ xg[t] + W_hi @ hg, b_i, sigmoid)
        Gb, Gg, Gc = three(W_ig @ xb[t] + W_hg @ hb, W_ig @ xg[t] + W_hg @ hg, b_g, np.tanh)
        Fb, Fg, Fc = three(W_if @ xb[t] + W_hf @ hb, W_if @ xg[t] + W_hf @ hg, b_f, sigmoid)
        new_cb = Ib * (Gb + Gc) + Ic * Gb + p * Ic * Gc + (Fb + Fc) * cb
        new_cg = Ig * (Gb + Gg + Gc) + (Ib + Ic) * Gg + (1 - p) * Ic * Gc + (Fb + Fg + Fc) * cg + Fg * cb
        o = sigmoid(W_io @ (xb[t] + xg[t]) + W_ho @ (hb + hg) + b_o)
        cb, cg = new_cb, new_cg
        hb = o * 0.5 * (np.tanh(cb) + np.tanh(cb + cg) - np.tanh(cg))
        hg = o * 0.5 * (np.tanh(cg) + np.tanh(cb + cg) - np.tanh(cb))
        out_b[t], out_g[t] = hb, hg
    return out_b, out_g


def gru_direction(xb, xg, w_ih, w_hh, b_ih, b_hh, reverse=False):
    hidden = w_hh.shape[1]
    W_ir, W_iz, W_in = np.split(w_ih, 3)
    W_hr, W_hz, W_hn = np.split(w_hh, 3)
    b_ir, b_iz, b_in = np.split(b_ih, 3)
    b_hr, b_hz, b_hn = np.split(b_hh, 3)
    hb, hg = np.zeros(hidden), np.zeros(hidden)
    out_b, out_g = np.zeros((len(xb), hidden)), np.zeros((len(xb), hidden))
    for t in (range(len(xb))[::-1] if reverse else range(len(xb))):
        p = share(xb[t], xg[t])
        Rb, Rg, Rc = three(W_ir @ xb[t] + W_hr @ hb, W_ir @ xg[t] + W_hr @ hg, b_ir + b_hr, sigmoid)
        Zb, Zg, Zc = three(W_iz @ xb[t] + W_hz @ hb, W_iz @ xg[t] + W_hz @ hg, b_iz + b_hz, sigmoid)
        Mb, Mg, Mc = W_hn @ hb, W_hn @ hg, b_hn
        nb = W_in @ xb[t] + Rb * Mb + Rb * Mc + Rc * Mb
        ng = W_in @ xg[t] + Rg * (Mb + Mg + Mc) + (Rb + Rc) * Mg
        nc = b_in + Rc * Mc
        Nb, Ng, Nc = three(nb, ng, nc, np.tanh)
        Ab, Ag, Ac = -Zb, -Zg, 1 - Zc  # the players of 1 - z
        new_hb = Ab * (Nb + Nc) + Ac * Nb + p * Ac * Nc + (Zb + Zc) * hb
        new_hg = Ag * (Nb + Ng + Nc) + (Ab + Ac) * Ng + (1 - p) * Ac * Nc + (Zb + Zg + Zc) * hg + Zg * hb
        hb, hg = new_hb, new_hg
        out_b[t], out_g[t] = hb, hg
    return out_b, out_g


def recurrent_cd(module, xb, xg, step):
    """Layer by layer, both directions, for a seq-first nn.LSTM/nn.GRU and one example."""
    dirs = 2 if module.bidirectional else 1
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            w = [getattr(module, name + suffix).detach().double().numpy() for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            outs.append(step(xb, xg, *w, reverse=bool(d)))
        xb = np.concatenate([o[0] for o in outs], -1)
        xg = np.concatenate([o[1] for o in outs], -1)
    return xb, xg
