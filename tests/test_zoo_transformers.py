"""Hugging Face models (random weights from small configs, float64, nothing downloaded)
decompose as they are, from their input embedding: decoders (GPT-2, Llama, Mistral, Qwen2)
with the key-value cache on and off, padding, both attention paths; DeBERTa-v2; the T5
encoder. BERT is in ``tests/test_huggingface.py``."""

import contextlib

import pytest
import torch
from torch import nn

from _rules import Lambda
from _zoo import assert_complete_and_on_scale, assert_float32_agrees, assert_unchanged, DT, snapshot
from captum_cd import ContextualDecomposition, DecompositionError, token_masks

transformers = pytest.importorskip("transformers")  # in the test extra; optional for users

VOCAB, T = 50, 8
SMALL = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _config(name: str, implementation: str, **extra):
    if name == "gpt2":
        return transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32, attn_implementation=implementation, **extra
        )
    config = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config}[name]
    return config(num_key_value_heads=2, max_position_embeddings=32, attn_implementation=implementation, **SMALL, **extra)


def _decoder(name: str, implementation: str, **extra) -> nn.Module:
    torch.manual_seed(0)
    config = _config(name, implementation, **extra)
    return transformers.AutoModelForCausalLM.from_config(config).to(DT).eval()


class NextTokenLogits(nn.Module):
    """The next-token logits after the last real token of each prompt (right padding)."""

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        super().__init__()
        self.model, self.use_cache = model, use_cache

    def forward(self, ids, attention_mask):
        logits = self.model(input_ids=ids, attention_mask=attention_mask, use_cache=self.use_cache).logits
        last = attention_mask.sum(1) - 1
        return logits[torch.arange(ids.shape[0]), last]


def _prompts():
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(2, T, dtype=torch.long)
    attention_mask[1, 6:] = 0  # the second prompt is 6 tokens long, padded on the right
    return ids, attention_mask


SPANS = [(0, 2), (2, 5), (5, 6)]


def _decompose(model, wrapper, ids, attention_mask, masks):
    before = snapshot(model)
    cd = ContextualDecomposition(wrapper, layer=model.get_input_embeddings())
    rel, irr = cd.decompose(ids, masks, additional_forward_args=(attention_mask,))
    assert_unchanged(model, before)
    return rel, irr


@pytest.mark.parametrize("name", ["gpt2", "llama", "mistral", "qwen2"])
def test_decoder_is_complete_with_and_without_cache_and_on_both_attention_paths(name, one_thread):
    ids, attention_mask = _prompts()
    masks = token_masks(SPANS, T, dtype=DT)
    relevant = {}
    for implementation in ("eager", "sdpa"):
        model = _decoder(name, implementation)
        for use_cache in (False, True):
            wrapper = NextTokenLogits(model, use_cache)
            rel, irr = _decompose(model, wrapper, ids, attention_mask, masks)
            with torch.no_grad():
                out = wrapper(ids, attention_mask)
            assert_complete_and_on_scale(rel, irr, out)
            relevant[implementation, use_cache] = (rel, out)
    for implementation in ("eager", "sdpa"):  # the cache changes nothing
        torch.testing.assert_close(relevant[implementation, True][0], relevant[implementation, False][0], rtol=0, atol=1e-12)
    (rel_eager, out_eager), (rel_sdpa, out_sdpa) = relevant["eager", False], relevant["sdpa", False]
    # Llama's family computes the eager softmax in float32 even for a float64 model, so the
    # two paths differ in the model's own output by ~1e-8; CD may differ by that much.
    own = (out_eager - out_sdpa).abs().max()
    torch.testing.assert_close(rel_eager, rel_sdpa, rtol=0, atol=float(100 * own + 1e-12))
    wrapper32 = NextTokenLogits(model, use_cache=False)  # the sdpa model, in float32
    decompose32 = lambda m: (_decompose(m, wrapper32, ids, attention_mask, masks.float())[0], wrapper32(ids, attention_mask))  # noqa: E731
    assert_float32_agrees(model, rel_sdpa, out_sdpa, decompose32)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_left_padding_gets_no_relevance(name, one_thread):
    """With left padding no real token attends to the padding: a group of padding tokens
    scores exactly 0 (SDPA: fully masked rows of the padded queries are zero)."""
    model = _decoder(name, "sdpa")
    ids = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones(2, T, dtype=torch.long)
    attention_mask[1, :3] = 0
    masks = torch.zeros(2, 2, T, 1, dtype=DT)  # per example: (G, B, T, 1)
    masks[0, 1, :3] = 1  # the padding of the second prompt
    masks[1, 1, 3:] = 1  # its real tokens
    wrapper = NextTokenLogits(model, use_cache=False)
    rel, irr = _decompose(model, wrapper, ids, attention_mask, masks)
    with torch.no_grad():
        out = wrapper(ids, attention_mask)
    torch.testing.assert_close(rel + irr, out.expand_as(rel), rtol=0, atol=1e-10)
    assert rel[0, 1].abs().max() < 1e-12
    assert rel[1, 1].abs().max() > 0.05 * out[1].abs().max()


def test_gpt2_scores_do_not_depend_on_how_gelu_is_written(one_thread):
    """``gelu_new`` is written by hand in transformers (0.5 x (1 + tanh(...))); it computes
    the same function as ``gelu_pytorch_tanh`` (``F.gelu(approximate='tanh')``)."""
    ids, attention_mask = _prompts()
    masks = token_masks(SPANS, T, dtype=DT)
    rels = []
    for activation in ("gelu_new", "gelu_pytorch_tanh"):
        model = _decoder("gpt2", "eager", activation_function=activation)
        rel, irr = _decompose(model, NextTokenLogits(model, False), ids, attention_mask, masks)
        rels.append(rel)
    assert rels[0].abs().max() > 1e-3
    torch.testing.assert_close(rels[0], rels[1], rtol=0, atol=1e-12)


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, attention_mask):
        return self.model(input_ids=ids, attention_mask=attention_mask).logits


def test_deberta_v2_with_relative_positions(one_thread):
    """DeBERTa-v2's disentangled attention multiplies by the embedding through bmm."""
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(
        **SMALL, max_position_embeddings=32, num_labels=3, relative_attention=True, pos_att_type=["p2c", "c2p"]
    )
    model = transformers.DebertaV2ForSequenceClassification(config).to(DT).eval()
    ids, attention_mask = _prompts()
    wrapper = Logits(model)
    rel, irr = _decompose(model, wrapper, ids, attention_mask, token_masks(SPANS, T, dtype=DT))
    with torch.no_grad():
        assert_complete_and_on_scale(rel, irr, wrapper(ids, attention_mask))


class MeanEncoding(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).last_hidden_state.mean(1)


def test_t5_encoder_from_the_embedding_that_runs(one_thread):
    """T5's ``shared`` embedding does not run in the encoder's forward pass (the encoder has
    its own ``embed_tokens``, with the same weight): ``layer=model.encoder.embed_tokens``
    works, ``layer=model.shared`` is refused with an error that says the layer did not run and
    names the modules that share its weight."""
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    model = transformers.T5EncoderModel(config).to(DT).eval()
    ids, _ = _prompts()
    wrapper = MeanEncoding(model)
    masks = token_masks(SPANS, T, dtype=DT)
    before = snapshot(model)
    rel, irr = ContextualDecomposition(wrapper, layer=model.encoder.embed_tokens).decompose(ids, masks)
    assert_unchanged(model, before)
    with torch.no_grad():
        assert_complete_and_on_scale(rel, irr, wrapper(ids))
    if model.shared is not model.encoder.embed_tokens:
        with pytest.raises(Exception, match="ran 0 times.*share its weight.*pass layer=model.model.encoder.embed_tokens"):
            ContextualDecomposition(wrapper, layer=model.shared).decompose(ids, masks)
        assert_unchanged(model, before)


V_SMALL = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=32)
MORE_DECODERS = {  # name: (config, attention paths the model offers)
    "gemma": (lambda: transformers.GemmaConfig(num_key_value_heads=2, head_dim=16, **V_SMALL), ("eager", "sdpa")),
    "gemma2": (lambda: transformers.Gemma2Config(num_key_value_heads=2, head_dim=16, **V_SMALL), ("eager",)),
    "gemma3 (text)": (lambda: transformers.Gemma3TextConfig(num_key_value_heads=2, head_dim=16, **V_SMALL), ("eager", "sdpa")),
    "phi": (lambda: transformers.PhiConfig(**V_SMALL), ("eager", "sdpa")),
    "phi3": (lambda: transformers.Phi3Config(num_key_value_heads=2, pad_token_id=0, **V_SMALL), ("eager", "sdpa")),
    "qwen3": (lambda: transformers.Qwen3Config(num_key_value_heads=2, head_dim=16, **V_SMALL), ("eager", "sdpa")),
    "olmo2": (lambda: transformers.Olmo2Config(num_key_value_heads=2, pad_token_id=0, **V_SMALL), ("eager", "sdpa")),
    "stablelm": (lambda: transformers.StableLmConfig(num_key_value_heads=2, **V_SMALL), ("eager", "sdpa")),
    "starcoder2": (lambda: transformers.Starcoder2Config(num_key_value_heads=2, **V_SMALL), ("eager", "sdpa")),
    "granite": (lambda: transformers.GraniteConfig(num_key_value_heads=2, **V_SMALL), ("eager", "sdpa")),
    "smollm3": (lambda: transformers.SmolLM3Config(num_key_value_heads=2, pad_token_id=0, **V_SMALL), ("eager", "sdpa")),
    "gpt_neox": (lambda: transformers.GPTNeoXConfig(**V_SMALL), ("eager", "sdpa")),
    "gptj": (lambda: transformers.GPTJConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32, rotary_dim=8), ("eager", "sdpa")),
    "gpt_bigcode": (lambda: transformers.GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32), ("eager", "sdpa")),
    "opt": (
        lambda: transformers.OPTConfig(
            vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
            max_position_embeddings=32, word_embed_proj_dim=64, pad_token_id=0,
        ),
        ("eager", "sdpa"),
    ),
    "bloom": (lambda: transformers.BloomConfig(vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4), ("eager",)),
    "falcon": (lambda: transformers.FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4), ("eager", "sdpa")),
}


def _complete_on_each_attention_path(make_config, implementations, auto_class, wrap, ids, attention_mask):
    """The model made from ``make_config()`` on each attention path it offers: complete and
    on scale, and the two paths agree."""
    masks = token_masks(SPANS, T, dtype=DT)
    relevant = []
    for implementation in implementations:
        config = make_config()
        config._attn_implementation = implementation
        torch.manual_seed(0)
        model = auto_class.from_config(config).to(DT).eval()
        wrapper = wrap(model)
        rel, irr = _decompose(model, wrapper, ids, attention_mask, masks)
        with torch.no_grad():
            out = wrapper(ids, attention_mask)
        assert_complete_and_on_scale(rel, irr, out)
        relevant.append((rel, out))
    if len(relevant) == 2:
        _assert_paths_agree(*relevant)


# BLOOM's GELU is a torch.autograd.Function (transformers' GeLUFunction, a memory-saving
# backward): its forward runs without autograd, so the relevant parts cannot keep their graph
# through it. Attribution needs no graph and is exact; with gradients CD refuses it by name.
ATTRIBUTION_ONLY = {"bloom"}


@pytest.mark.parametrize("name", MORE_DECODERS)
def test_more_decoders_are_complete_and_on_scale(name, one_thread):
    make_config, implementations = MORE_DECODERS[name]
    ids, attention_mask = _prompts()
    wrap = lambda model: NextTokenLogits(model, use_cache=False)  # noqa: E731
    with torch.no_grad() if name in ATTRIBUTION_ONLY else contextlib.nullcontext():
        _complete_on_each_attention_path(make_config, implementations, transformers.AutoModelForCausalLM, wrap, ids, attention_mask)


def test_bloom_with_gradients_is_refused_naming_its_gelu_function(one_thread):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(MORE_DECODERS["bloom"][0]()).to(DT).eval()
    ids, attention_mask = _prompts()
    with pytest.raises(DecompositionError, match=r"torch\.autograd\.Function \(GeLUFunctionBackward\)"):
        _decompose(model, NextTokenLogits(model, use_cache=False), ids, attention_mask, token_masks(SPANS, T, dtype=DT))


ENCODERS = {  # name: (config, attention paths the model offers)
    "distilbert": (
        lambda: transformers.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=32, num_labels=3),
        ("eager", "sdpa"),
    ),
    "roberta": (lambda: transformers.RobertaConfig(pad_token_id=1, num_labels=3, **V_SMALL), ("eager", "sdpa")),
    "xlm-roberta": (lambda: transformers.XLMRobertaConfig(pad_token_id=1, num_labels=3, **V_SMALL), ("eager", "sdpa")),
    "albert": (lambda: transformers.AlbertConfig(embedding_size=32, num_labels=3, **V_SMALL), ("eager", "sdpa")),
    "electra": (lambda: transformers.ElectraConfig(embedding_size=32, num_labels=3, **V_SMALL), ("eager", "sdpa")),
    "mpnet": (lambda: transformers.MPNetConfig(pad_token_id=1, num_labels=3, **V_SMALL), ("eager",)),
    "modernbert": (
        lambda: transformers.ModernBertConfig(
            num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, **V_SMALL
        ),
        ("eager", "sdpa"),
    ),
    "funnel": (
        lambda: transformers.FunnelConfig(vocab_size=VOCAB, d_model=64, n_head=4, d_head=16, d_inner=128, block_sizes=[1, 1], num_labels=3),
        ("eager",),
    ),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_encoders_are_complete_and_on_scale(name, one_thread):
    make_config, implementations = ENCODERS[name]
    ids, attention_mask = _prompts()
    ids = ids.clamp_min(3)  # no special tokens (RoBERTa's positions skip its padding id)
    _complete_on_each_attention_path(make_config, implementations, transformers.AutoModelForSequenceClassification, Logits, ids, attention_mask)


def test_vit_from_pixels_on_both_attention_paths(one_thread):
    relevant = []
    x = torch.randn(2, 3, 32, 32, dtype=DT)
    top = (torch.arange(32)[:, None] < 16).expand(32, 32)
    masks = torch.stack([top, ~top]).to(DT)[:, None]
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        config = transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3
        )
        config._attn_implementation = implementation
        model = transformers.ViTForImageClassification(config).to(DT).eval()
        before = snapshot(model)
        wrapper = Lambda(lambda pixels: model(pixel_values=pixels).logits)
        rel, irr = ContextualDecomposition(wrapper).decompose(x, masks)
        assert_unchanged(model, before)
        with torch.no_grad():
            out = wrapper(x)
        assert_complete_and_on_scale(rel, irr, out)
        relevant.append((rel, out))
    _assert_paths_agree(*relevant)


def _assert_paths_agree(first, second):
    """The eager and sdpa paths give the same CD, up to how much the model's own outputs
    differ (eager attention in transformers often runs its softmax in float32)."""
    (rel_a, out_a), (rel_b, out_b) = first, second
    own = float((out_a - out_b).abs().max())
    assert own < 1e-6 * float(out_a.abs().max())
    torch.testing.assert_close(rel_a, rel_b, rtol=0, atol=100 * own + 1e-12)


@pytest.mark.parametrize("experts, dtype", [("batched_mm", DT), ("grouped_mm", torch.float32)])
def test_mixture_of_experts_decoder(experts, dtype, one_thread):
    """Mixtral: top-2 routing (weights from the full activation, as attention's), experts as
    batched or grouped matmuls (grouped_mm takes float32 at most)."""
    config = transformers.MixtralConfig(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, **V_SMALL)
    config._experts_implementation = experts
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype).eval()
    ids, attention_mask = _prompts()
    wrapper = NextTokenLogits(model, use_cache=False)
    rel, irr = _decompose(model, wrapper, ids, attention_mask, token_masks(SPANS, T, dtype=dtype))
    with torch.no_grad():
        out = wrapper(ids, attention_mask)
    if dtype == DT:
        assert_complete_and_on_scale(rel, irr, out)
    else:
        torch.testing.assert_close(rel + irr, out.expand_as(rel), rtol=0, atol=1e-5 * float(out.abs().max()))
        assert rel.abs().max() > 0.05 * out.abs().max()
