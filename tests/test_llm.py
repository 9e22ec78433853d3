"""LLMContextualDecomposition: Captum's LLM API with CD's scores. Models are Hugging Face
configs with random weights (2 layers, width 64, float64 where values are compared), the
tokenizer a byte-level BPE trained here on SST's text; nothing is downloaded."""

import itertools

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _zoo import assert_unchanged, snapshot
from captum_cd import ContextualDecomposition, DecompositionError, LLMContextualDecomposition
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.llm_contextual_decomposition import scores_from_full
from captum_cd.attr.rules import shapley_activation

matplotlib.use("Agg")
transformers = pytest.importorskip("transformers")
from captum.attr import FeatureAblation, LLMAttribution, LLMAttributionResult, TextTemplateInput, TextTokenInput  # noqa: E402

from experiments.language_model import bpe_tokenizer, sst_text  # noqa: E402

DT = torch.float64
# The prompt as pieces: (text, index of the template value it is, or None for template text).
# "a" also occurs inside "Dave" and "Palm", and "golf" twice in the whole text.
PIECES = [("Dave", 0), (" lives in ", None), ("Palm Coast", 1), (" and likes ", None), ("a", 2), (" game of ", None), ("golf", 3)]
TARGET = " playing golf, a lot."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bpe_tokenizer(sst_text("train", 1000), vocab_size=300, folder=str(tmp_path_factory.mktemp("tokenizer")))


def causal_lm(name: str, vocab: int, dtype=DT) -> nn.Module:
    torch.manual_seed(0)
    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128, **ids)
    else:
        kind = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig, "qwen2": transformers.Qwen2Config}[name]
        config = kind(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, **ids,
        )
    return transformers.AutoModelForCausalLM.from_config(config).to(dtype).eval()


def template_input(pieces=PIECES, **kwargs) -> TextTemplateInput:
    template = "".join("{}" if value is not None else text for text, value in pieces)
    return TextTemplateInput(template, values=[text for text, value in pieces if value is not None], **kwargs)


class LogitsAt(nn.Module):
    """The logits at the last position: a causal model's prediction of the next token."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits[:, -1]


def reference(model, tokenizer, pieces, target: str, attr_target: str = "logit") -> torch.Tensor:
    """Each value's relevant part of each target token's logit (or log-probability, the
    softmax's weights from the full pass), by a plain loop: the prompt and the target's
    first t tokens decomposed by ContextualDecomposition with the values' token masks
    (a token belongs to a value if one of its characters is in it), one call per token."""
    text, ranges, at = "", {}, 0
    for piece, value in pieces:
        if value is not None:
            ranges.setdefault(value, []).append((at, at + len(piece)))
        text, at = text + piece, at + len(piece)
    enc = tokenizer(text, return_offsets_mapping=True)
    inside = lambda s, e, spans: any(e > start and s < stop and e > s for start, stop in spans)  # noqa: E731
    masks = torch.tensor([[float(inside(s, e, ranges[v])) for s, e in enc["offset_mapping"]] for v in sorted(ranges)], dtype=DT)
    sequence = torch.tensor([enc["input_ids"]])
    cd = ContextualDecomposition(LogitsAt(model), layer=model.get_input_embeddings())
    rows = []
    for token in tokenizer.encode(target, add_special_tokens=False):
        grown = torch.cat([masks, masks.new_zeros(len(masks), sequence.shape[1] - masks.shape[1])], 1)
        rel, irr = cd.decompose(sequence, grown)
        rel = rel[:, 0]
        if attr_target == "logit":
            rows.append(rel[:, token])
        else:
            p = (rel + irr)[0, 0].softmax(-1)
            rows.append(rel[:, token] - (rel * p).sum(-1))
        sequence = torch.cat([sequence, torch.tensor([[token]])], 1)
    return torch.stack(rows)


def model_scores(model, tokenizer, prompt: str, target_ids, attr_target="logit") -> torch.Tensor:
    """The model's own logit (log-probability) of each target token, teacher forced."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"] + target_ids.tolist()])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -len(target_ids) - 1 : -1]
    if attr_target == "log_prob":
        logits = logits.log_softmax(-1)
    return logits[torch.arange(len(target_ids)), target_ids]


@pytest.mark.parametrize("name", ["llama", "gpt2", "mistral", "qwen2"])
@pytest.mark.parametrize("attr_target", ["logit", "log_prob"])
def test_every_target_token_from_one_pass_equals_a_pass_per_token(name, attr_target, tokenizer, one_thread):
    model = causal_lm(name, len(tokenizer))
    before = snapshot(model)
    cd = LLMContextualDecomposition(model, tokenizer, attr_target=attr_target)
    # queries and keys taken as constants in Llama's family (the reference decomposes them)
    assert len(scores_from_full(model)) == (0 if name == "gpt2" else 4)
    result = cd.attribute(template_input(), target=TARGET)
    assert_unchanged(model, before)
    expected = reference(model, tokenizer, PIECES, TARGET, attr_target)
    assert isinstance(result, LLMAttributionResult)
    assert result.token_attr.shape == expected.shape == (len(tokenizer.encode(TARGET, add_special_tokens=False)), 4)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(result.token_attr, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(result.seq_attr, expected.sum(0), rtol=0, atol=1e-10)
    assert result.input_tokens == ["Dave", "Palm Coast", "a", "golf"]


@pytest.mark.parametrize("attr_target", ["logit", "log_prob"])
def test_relevant_plus_irrelevant_is_the_models_score_in_float32(attr_target, tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer), torch.float32)
    inp = template_input()
    relevant, irrelevant = LLMContextualDecomposition(model, tokenizer, attr_target=attr_target).decompose(inp, target=TARGET)
    target_ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    scores = model_scores(model, tokenizer, inp.to_model_input(), target_ids, attr_target)
    torch.testing.assert_close(relevant + irrelevant, scores[:, None].expand_as(relevant), rtol=0, atol=1e-5)


def test_the_output_layer_read_for_the_target_tokens_only_equals_the_whole_logits(tokenizer, one_thread):
    model = causal_lm("gpt2", len(tokenizer))
    fast = LLMContextualDecomposition(model, tokenizer, attr_target="log_prob")
    whole = LLMContextualDecomposition(model, tokenizer, attr_target="log_prob")
    whole._head = None  # decompose the logits of the whole vocabulary
    inp = template_input()
    torch.testing.assert_close(fast.decompose(inp, TARGET)[0], whole.decompose(inp, TARGET)[0], rtol=0, atol=1e-12)


def test_target_none_generates_greedily_as_generate_and_captum_do(tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer))
    inp = template_input()
    gen_args = {"max_new_tokens": 6, "do_sample": False}
    result = LLMContextualDecomposition(model, tokenizer).attribute(inp, gen_args=gen_args)
    prompt = torch.tensor([tokenizer(inp.to_model_input())["input_ids"]])
    with torch.no_grad():
        generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **gen_args)[0, prompt.shape[1] :]
    captum = LLMAttribution(FeatureAblation(model), tokenizer).attribute(inp, gen_args=gen_args, forward_in_tokens=False)
    assert result.output_tokens == captum.output_tokens and len(result.output_tokens) == 6
    relevant, irrelevant = LLMContextualDecomposition(model, tokenizer).decompose(inp, gen_args=gen_args)
    expected = model_scores(model, tokenizer, inp.to_model_input(), generated)
    torch.testing.assert_close(relevant + irrelevant, expected[:, None].expand_as(relevant), rtol=0, atol=1e-10)
    assert result.input_tokens == captum.input_tokens and result.token_attr.shape == captum.token_attr.shape
    assert result.inp is captum.inp is inp  # the result links its input, as Captum's does


def test_token_input_scores_each_token_and_skips_skip_tokens(tokenizer, one_thread):
    model = causal_lm("qwen2", len(tokenizer))
    text = "Dave lives in Palm Coast"
    inp = TextTokenInput(text, tokenizer, skip_tokens=["<s>"])
    target_ids = torch.tensor(tokenizer.encode(" and likes golf", add_special_tokens=False))
    result = LLMContextualDecomposition(model, tokenizer).attribute(inp, target=target_ids)
    tokens = tokenizer(text)["input_ids"]
    assert result.input_tokens == tokenizer.convert_ids_to_tokens(tokens[1:])
    cd = ContextualDecomposition(LogitsAt(model), layer=model.get_input_embeddings())
    sequence = torch.tensor([tokens + target_ids.tolist()[:-1]])
    masks = torch.eye(sequence.shape[1], dtype=DT)[1 : len(tokens)]  # one token each, <s> skipped
    for t, token in enumerate(target_ids.tolist()):
        end = len(tokens) + t
        rel, _ = cd.decompose(sequence[:, :end], masks[:, :end])
        torch.testing.assert_close(result.token_attr[t], rel[:, 0, token], rtol=0, atol=1e-10)


def test_values_with_one_mask_id_are_one_feature(tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer))
    cd = LLMContextualDecomposition(model, tokenizer)
    grouped = cd.attribute(template_input(mask=[0, 1, 0, 2]), target=TARGET)
    assert grouped.input_tokens == ["Dave", "Palm Coast", "a", "golf"]
    torch.testing.assert_close(grouped.token_attr[:, 0], grouped.token_attr[:, 2], rtol=0, atol=0)
    # "Dave" and "a" as one value of a template with three
    merged = [("Dave", 0), (" lives in ", None), ("Palm Coast", 1), (" and likes ", None), ("a", 0), (" game of ", None), ("golf", 2)]
    expected = reference(model, tokenizer, merged, TARGET)
    torch.testing.assert_close(grouped.token_attr[:, [0, 1, 3]], expected, rtol=0, atol=1e-10)


def test_a_value_the_template_uses_twice_is_found_at_both_places(tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer))
    inp = TextTemplateInput("{0} met {1}, and {0} left", values=["Dave", "Alice"])
    result = LLMContextualDecomposition(model, tokenizer).attribute(inp, target=TARGET)
    pieces = [("Dave", 0), (" met ", None), ("Alice", 1), (", and ", None), ("Dave", 0), (" left", None)]
    torch.testing.assert_close(result.token_attr, reference(model, tokenizer, pieces, TARGET), rtol=0, atol=1e-10)
    first_only = reference(model, tokenizer, [(t, None if i == 4 else v) for i, (t, v) in enumerate(pieces)], TARGET)
    assert (result.token_attr[:, 0] - first_only[:, 0]).abs().max() > 1e-4


def test_a_value_without_tokens_scores_zero(tokenizer, one_thread):
    model = causal_lm("gpt2", len(tokenizer))
    result = LLMContextualDecomposition(model, tokenizer).attribute(TextTemplateInput("{}Dave lives{}", values=["", "here"]), target=TARGET)
    assert result.token_attr[:, 0].abs().max() == 0 and result.token_attr[:, 1].abs().max() > 0
    relevant, irrelevant = LLMContextualDecomposition(model, tokenizer).decompose(TextTemplateInput("Dave lives{}", values=[""]), target=TARGET)
    target_ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    assert relevant.abs().max() == 0 and relevant.shape == (len(target_ids), 1)
    torch.testing.assert_close(irrelevant[:, 0], model_scores(model, tokenizer, "Dave lives", target_ids), rtol=0, atol=1e-10)


def test_encoder_decoder_explains_the_decoder_by_the_encoders_input(tokenizer, one_thread):
    """T5: its ``shared`` embedding never runs (the encoder embeds with ``encoder.embed_tokens``);
    the decoder's output, explained by the encoder's input. BART adds a bias after its
    output layer: the whole logits are decomposed then."""
    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=2, pad_token_id=2)
    ).to(DT).eval()
    bart = transformers.BartForConditionalGeneration(
        transformers.BartConfig(
            vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
            pad_token_id=2, bos_token_id=0, eos_token_id=1, decoder_start_token_id=1,
        )
    ).to(DT).eval()
    with torch.no_grad():
        bart.final_logits_bias.normal_()
    inp = template_input()
    target_ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    prompt = torch.tensor([tokenizer(inp.to_model_input())["input_ids"]])
    for model, start in ((t5, 2), (bart, 1)):
        before = snapshot(model)
        cd = LLMContextualDecomposition(model, tokenizer)
        relevant, irrelevant = cd.decompose(inp, target=target_ids)
        assert_unchanged(model, before)
        decoder = torch.cat([torch.tensor([[start]]), target_ids[None, :-1]], 1)
        with torch.no_grad():
            logits = model(input_ids=prompt, decoder_input_ids=decoder).logits[0]
        expected = logits[torch.arange(len(target_ids)), target_ids]
        torch.testing.assert_close(relevant + irrelevant, expected[:, None].expand_as(relevant), rtol=0, atol=1e-10)
        assert relevant.abs().max() > 1e-3 * expected.abs().max()
        # against ContextualDecomposition of the same call
        call = lambda ids: model(input_ids=ids, decoder_input_ids=decoder).logits  # noqa: E731
        rel, _ = ContextualDecomposition(call, layer=model.get_encoder().get_input_embeddings()).decompose(
            prompt, cd_masks(cd, inp)
        )
        torch.testing.assert_close(relevant, rel[:, 0, torch.arange(len(target_ids)), target_ids].t(), rtol=0, atol=1e-10)
    assert cd._head is None  # BART's bias after the output layer: the whole logits were decomposed
    result = LLMContextualDecomposition(t5, tokenizer).attribute(inp, gen_args={"max_new_tokens": 4})
    assert result.token_attr.shape == (4, 4)


def cd_masks(cd, inp):
    from captum_cd.attr.prompt_features import prompt_features

    return prompt_features(inp, cd.tokenizer)[1].to(DT)[..., None]


class PrefixSums(nn.Module):
    """A causal language model of one's own: called with input_ids and attention_mask
    (no use_cache), returning the logits as a tensor."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embedding, self.head = nn.Embedding(vocab, 16), nn.Linear(16, vocab)

    def forward(self, input_ids, attention_mask=None):
        return self.head(torch.tanh(self.embedding(input_ids).cumsum(1)))


def test_a_model_of_ones_own_called_with_input_ids_and_attention_mask(tokenizer, one_thread):
    torch.manual_seed(0)
    model = PrefixSums(len(tokenizer)).to(DT).eval()
    inp = template_input()
    relevant, irrelevant = LLMContextualDecomposition(model, tokenizer, layer=model.embedding).decompose(inp, TARGET)
    target_ids = torch.tensor(tokenizer.encode(TARGET, add_special_tokens=False))
    ids = torch.tensor([tokenizer(inp.to_model_input())["input_ids"] + target_ids.tolist()])
    with torch.no_grad():
        expected = model(ids)[0, -len(target_ids) - 1 : -1][torch.arange(len(target_ids)), target_ids]
    torch.testing.assert_close(relevant + irrelevant, expected[:, None].expand_as(relevant), rtol=0, atol=1e-10)
    assert relevant.abs().max() > 1e-3


def test_plots(tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer), torch.float32)
    result = LLMContextualDecomposition(model, tokenizer).attribute(template_input(), target=TARGET)
    for plot in (result.plot_token_attr, result.plot_seq_attr):
        fig, ax = plot()
        assert ax.get_xticklabels()[0].get_text() == "Dave"
        matplotlib.pyplot.close(fig)


def test_captums_llm_attribution_arguments_are_accepted_and_change_nothing(tokenizer, one_thread):
    """A call written for LLMAttribution(FeatureAblation) runs unchanged: CD is
    deterministic and teacher forces every target token in one pass."""
    cd = LLMContextualDecomposition(causal_lm("gpt2", len(tokenizer)), tokenizer)
    plain = cd.attribute(template_input(), target=TARGET)
    as_captum = cd.attribute(template_input(), TARGET, 3, None, use_cached_outputs=False, forward_in_tokens=False)
    assert torch.equal(plain.token_attr, as_captum.token_attr)
    assert cd.get_name() == "LLMContextualDecomposition"


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda cd: cd.attribute("Dave lives in Palm Coast", target=TARGET), TypeError, "TextTemplateInput"),
        (lambda cd: cd.attribute(template_input(), target=""), ValueError, "no tokens"),
        (lambda cd: cd.attribute(template_input(), target=torch.tensor([], dtype=torch.long)), ValueError, "no tokens"),
        (lambda cd: cd.attribute(template_input(), target=torch.tensor([5, 10_000])), ValueError, "vocabulary has 300 tokens"),
        (lambda cd: cd.attribute(template_input(), target=torch.tensor([5, -1])), ValueError, "vocabulary"),
        (lambda cd: cd.attribute(template_input(), target=torch.tensor([5.0, 6.0])), TypeError, "token ids"),
        (lambda cd: cd.attribute(template_input(), target=torch.ones(2, 3, dtype=torch.long)), ValueError, "1-D"),
        (lambda cd: cd.attribute(template_input(), target=5), TypeError, "string, a tensor"),
        (lambda cd: cd.attribute(template_input(), target=TARGET, gen_args={"max_new_tokens": 3}), ValueError, "gen_args"),
        (lambda cd: cd.attribute(template_input(), target=TARGET, perturbations_per_eval=0), ValueError, "perturbations_per_eval"),
        (lambda cd: cd.attribute(TextTemplateInput("{!r} lives", values=["Dave"]), target=TARGET), ValueError, "changes the values"),
        (lambda cd: cd.attribute(TextTemplateInput("{} lives", values=["Da\ue000ve"]), target=TARGET), ValueError, "U\\+E000"),
        (lambda cd: cd.attribute(TextTemplateInput("{} li\ue001ves", values=["Dave"]), target=TARGET), ValueError, "U\\+E001"),
        (lambda cd: cd.attribute(template_input(), target=TARGET, num_trials=0), ValueError, "num_trials"),
        (lambda cd: cd.attribute(template_input(), target=TARGET, n_samples=5), TypeError, "n_samples"),
    ],
)
def test_bad_input_is_refused_by_name(call, error, message, tokenizer, one_thread):
    model = causal_lm("llama", len(tokenizer), torch.float32)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        call(LLMContextualDecomposition(model, tokenizer))
    assert_unchanged(model, before)


def test_bad_construction_and_a_tokenizer_of_another_model_are_refused(tokenizer, one_thread):
    model = causal_lm("llama", 100, torch.float32)
    with pytest.raises(ValueError, match="attr_target"):
        LLMContextualDecomposition(model, tokenizer, attr_target="prob")
    with pytest.raises(TypeError, match="nn.Module"):
        LLMContextualDecomposition(lambda ids: ids, tokenizer)
    with pytest.raises(ValueError, match="do the tokenizer and the model match"):
        LLMContextualDecomposition(model, tokenizer).attribute(template_input(), target=torch.tensor([3]))
    with pytest.raises(TypeError, match="fast tokenizer"):
        LLMContextualDecomposition(model, SlowTokenizer(tokenizer)).attribute(template_input(), target=torch.tensor([3]))


class SlowTokenizer:
    """A tokenizer without character offsets, as transformers' Python tokenizers are."""

    def __init__(self, fast) -> None:
        self.fast = fast

    def __call__(self, text, return_offsets_mapping=False, **kwargs):
        if return_offsets_mapping:
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self.fast(text, **kwargs)


@pytest.mark.parametrize("name", ["llama", "gpt2", "mistral", "qwen2"])
def test_chunks_decomposed_from_their_first_token_equal_passes_over_the_whole_sequence(name, tokenizer, one_thread):
    """A causal model's prefix before a chunk's first token comes from the key-value cache
    of an ordinary pass (constants), not decomposed: the same scores."""
    model = causal_lm(name, len(tokenizer))
    inp = TextTokenInput("Dave lives in Palm Coast and likes a good game of golf on sunny days", tokenizer)
    cropped, whole = LLMContextualDecomposition(model, tokenizer), LLMContextualDecomposition(model, tokenizer)
    whole._crop_prefix = False
    suffixes = []
    suffix_inputs = cropped._suffix_inputs
    cropped._suffix_inputs = lambda kwargs, start, cache: suffixes.append(start) or suffix_inputs(kwargs, start, cache)
    before = snapshot(model)
    result = cropped.attribute(inp, target=TARGET, perturbations_per_eval=4)
    assert_unchanged(model, before)
    assert len(suffixes) >= 3 and 0 < min(suffixes)  # chunks that start after the first token
    expected = whole.attribute(inp, target=TARGET, perturbations_per_eval=4).token_attr
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(result.token_attr, expected, rtol=0, atol=1e-10)


def test_chunks_are_planned_for_the_fewest_rows():
    from captum_cd.attr.causal_prefix import PASS_OVERHEAD_ROWS, plan_chunks

    starts = [7, 0, 3, 9, 1]
    chunks = plan_chunks(starts, 12, largest=2)
    assert sorted(g for members, _ in chunks for g in members) == [0, 1, 2, 3, 4]
    assert all(len(members) <= 2 and start == min(starts[g] for g in members) for members, start in chunks)
    rows = lambda plan: sum((len(m) + PASS_OVERHEAD_ROWS) * (12 - s) for m, s in plan)  # noqa: E731
    # every way to cut the groups sorted by first token (1, 4, 2, 0, 3) into runs of at most 2
    order = sorted(range(5), key=lambda g: starts[g])
    plans = []
    for r in range(5):
        for inner in itertools.combinations(range(1, 5), r):
            cuts = [0, *inner, 5]
            if all(b - a <= 2 for a, b in zip(cuts, cuts[1:])):
                plans.append([(order[a:b], starts[order[a]]) for a, b in zip(cuts, cuts[1:])])
    assert rows(chunks) == min(rows(plan) for plan in plans)


def test_captums_cached_decoding_is_why_the_comparisons_teacher_force(tokenizer, one_thread):
    """docs/language_models.md, the tutorial and benchmarks/llm_speed.py run Captum's
    perturbation methods with forward_in_tokens=False: its default, token-by-token decoding
    with the key-value cache, gives other log-probabilities than its cache-free path with
    this transformers version. If this fails, Captum's default agrees again: update them."""
    model = causal_lm("llama", len(tokenizer), torch.float32)
    inp = TextTokenInput("Dave lives in Palm Coast", tokenizer)
    fa = LLMAttribution(FeatureAblation(model), tokenizer)
    cached = fa.attribute(inp, target=TARGET).token_attr
    cache_free = fa.attribute(inp, target=TARGET, use_cached_outputs=False).token_attr
    teacher_forced = fa.attribute(inp, target=TARGET, forward_in_tokens=False).token_attr
    torch.testing.assert_close(teacher_forced, cache_free, rtol=0, atol=1e-5)
    assert (cached - cache_free).abs().max() > 0.1 * cache_free.abs().max()


def test_non_finite_parts_of_finite_scores_are_refused_naming_the_function(tokenizer, one_thread):
    """The last line of defence holds in the LLM pass too: a rule that gives NaN parts (here
    a deliberately wrong one for SiLU) is an error naming the function, not NaN scores."""

    def nan_silu(func, args, kwargs):
        out = shapley_activation(func, args, kwargs)
        return Decomposition(out.full, out.rel * float("nan"))

    model = causal_lm("llama", len(tokenizer), torch.float32)
    cd = LLMContextualDecomposition(model, tokenizer, rules={F.silu: nan_silu})
    with pytest.raises(DecompositionError, match="not finite where the model's own activation is finite, first at .*silu"):
        cd.attribute(template_input(), target=TARGET)
