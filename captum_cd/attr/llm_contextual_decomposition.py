r"""Contextual decomposition of what a language model says, in Captum's LLM API: a prompt
(:class:`~captum.attr.TextTemplateInput` or :class:`~captum.attr.TextTokenInput`) and a
target text in, Captum's :class:`~captum.attr.LLMAttributionResult` out.

One decomposition pass explains every target token: the prompt and the target go through
the model together (teacher forcing), and a causal model's logit for target token ``t``
is already computed at position ``t - 1`` of that pass. Only the target tokens' logits
are read out of the decomposed hidden state before the output layer, so the output layer
costs G rows of the target tokens' weights, not G copies of the whole vocabulary.
"""

import contextlib
import inspect
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from captum.attr import Attribution, LLMAttributionResult
from captum.log import log_usage
from torch import nn, Tensor
from tqdm.auto import tqdm

from captum_cd.attr._captum_compat import DEFAULT_GEN_ARGS, pretty_tokens
from captum_cd.attr.causal_prefix import cache_argument, cache_before, PASS_OVERHEAD_ROWS, plan_chunks, prefix_cache
from captum_cd.attr.contextual_decomposition import _decompose_at, check_model, layer_ran_message
from captum_cd.attr.decomposition import current_context, Decomposition, DecompositionContext, decomposition_context
from captum_cd.attr.errors import DecompositionError
from captum_cd.attr.finite import check_output
from captum_cd.attr.groups import positive_int
from captum_cd.attr.module_rules import module_rules_installed
from captum_cd.attr.prompt_features import prompt_features
from captum_cd.attr.rules._util import fulls

# Prompt-and-target tokens times groups in one pass when the caller does not choose.
TOKENS_PER_PASS = 32768
ATTR_TARGETS = ("logit", "log_prob")


class LLMContextualDecomposition(Attribution):
    r"""
    Contextual decomposition (CD) of a language model's output text, the Captum way:
    ``attribute`` takes Captum's text inputs and returns Captum's
    :class:`~captum.attr.LLMAttributionResult`, as ``LLMAttribution`` does, with CD's
    scores: for each target token and each feature of the prompt (a template value, or a
    token), the relevant part of the target token's logit when that feature alone is
    relevant. The rest of the prompt, the target tokens before it and every bias make up
    the irrelevant part, and ``relevant + irrelevant`` is the model's logit.

    Every target token comes out of one decomposition pass over the prompt and the target
    (teacher forcing), with all features batched (chunks of them for long prompts), where
    perturbation methods run the model once per feature and target token.

    The model is a Hugging Face causal language model used as it is (the decomposition
    starts at its input embedding and reads ``logits`` from its output), or an
    encoder-decoder (T5, BART), whose decoder's output is explained by the encoder's
    input. CD needs no baselines: the inputs' ``baselines`` are not used.

    What is explained: CD is defined on logits, and by default each target token's logit
    is decomposed. Captum's LLM attribution explains log-probabilities instead; with
    ``attr_target="log_prob"`` the log-probability ``log p_y = z_y - log sum_v exp z_v``
    is decomposed with the softmax's weights ``p`` taken from the full pass (as CD takes
    attention weights): ``log p_y = z_y - sum_v p_v z_v + H(p)`` exactly, a feature's
    relevant part is ``rel(z_y) - sum_v p_v rel(z_v)`` (its share of the target logit
    minus its probability-weighted share of every logit), and the entropy ``H(p)`` is a
    constant of the irrelevant part.

    More details: https://arxiv.org/abs/1801.05453 and ``docs/language_models.md`` in the
    project.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        attr_target: str = "logit",
        layer: Optional[nn.Module] = None,
        rules: Optional[Dict[Any, Any]] = None,
        module_rules: Optional[Dict[Any, Any]] = None,
    ) -> None:
        r"""
        Args:

            model (nn.Module): A Hugging Face causal language model (``LlamaForCausalLM``,
                        ``GPT2LMHeadModel``, ``AutoModelForCausalLM.from_pretrained(...)``)
                        or encoder-decoder (``T5ForConditionalGeneration``), as it is:
                        called with ``input_ids`` and ``attention_mask``, returning
                        ``logits``.
            tokenizer (Tokenizer): The model's Hugging Face tokenizer. A fast tokenizer
                        (character offsets) for TextTemplateInput.
            attr_target (str, optional): ``"logit"`` (each target token's logit) or
                        ``"log_prob"`` (its log-probability, decomposed as the class
                        docstring says). Default: "logit"
            layer (nn.Module, optional): Where the decomposition starts: the embedding
                        whose output holds one vector per prompt token. Default: None
                        (the model's input embedding; the encoder's for an
                        encoder-decoder)
            rules, module_rules: As for :class:`~captum_cd.ContextualDecomposition`.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a Hugging Face model (an nn.Module); got {type(model).__name__}.")
        if attr_target not in ATTR_TARGETS:
            raise ValueError(f"attr_target must be one of {ATTR_TARGETS}; got {attr_target!r}.")
        super().__init__(model)
        self.model, self.tokenizer, self.attr_target = model, tokenizer, attr_target
        self.encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        self.layer = layer if layer is not None else input_embedding(model, self.encoder_decoder)
        self.rules = dict(rules or {})
        self.module_rules = {**scores_from_full(model), **(module_rules or {})}
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        # Read the target logits off the output layer's input where the model returns that
        # layer's output as it is (learnt on the first pass); else decompose the logits.
        self._head = head if isinstance(head, nn.Linear) else None
        if attr_target == "log_prob" and self._head is not None and self._head.bias is not None:
            self._head = None  # each logit's bias is split on its own: no mixed row stands for them
        parameters = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in parameters
        # A model of one's own called with input_ids and attention_mask need not take use_cache.
        self._cache_flag = {"use_cache": False} if "use_cache" in parameters else {}
        self._cache_argument = cache_argument(model)
        # Decompose a causal model from each chunk's first token on (the prefix from the cache).
        self._crop_prefix = True

    @classmethod
    def get_name(cls) -> str:
        return "LLMContextualDecomposition"

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inp: Any,
        target: Union[str, Tensor, None] = None,
        num_trials: int = 1,
        gen_args: Optional[Dict[str, Any]] = None,
        use_cached_outputs: bool = True,
        forward_in_tokens: bool = True,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
    ) -> LLMAttributionResult:
        r"""
        Args:

            inp (TextTemplateInput or TextTokenInput): The prompt and its features:
                        the template's values (values with one ``mask`` id form one
                        feature), or the tokens (``skip_tokens`` left out). Baselines
                        are not used.
            target (str or Tensor, optional): The text to explain: a string (tokenized
                        without special tokens, as Captum does) or a 1-D tensor of
                        token ids. None: the model generates it from the prompt with
                        ``gen_args``. Default: None
            num_trials (int, optional): Accepted as ``LLMAttribution.attribute``
                        takes it. CD is deterministic, so every trial gives the same
                        scores and one pass is run. Default: 1
            gen_args (dict, optional): Arguments of ``model.generate`` when ``target``
                        is None. Default: None (Captum's: greedy, 25 new tokens)
            use_cached_outputs, forward_in_tokens (bool, optional): Accepted as
                        ``LLMAttribution.attribute`` takes them (how its perturbation
                        methods run the target). They do not change CD, which reads
                        every target token from one teacher-forced pass.
                        Default: True
            perturbations_per_eval (int, optional): How many features go through one
                        batched pass; bounds memory. Default: None (as many as keep
                        features times tokens at most 32768)
            show_progress (bool, optional): A tqdm bar over the passes. Default: False

        Returns:
            *LLMAttributionResult* with ``token_attr`` (target tokens x features: each
            feature's relevant part of each target token's logit or log-probability),
            ``seq_attr`` (their sum over the target tokens), ``input_tokens`` (the
            features: template values or tokens), ``output_tokens`` and ``inp``;
            ``plot_token_attr()`` and ``plot_seq_attr()`` draw them.

        Examples::

            >>> cd = LLMContextualDecomposition(model, tokenizer)
            >>> inp = TextTemplateInput("{} lives in {} and likes {}", values=["Dave", "Palm Coast", "golf"])
            >>> result = cd.attribute(inp, target="playing golf, hiking, and cooking.")
            >>> result.token_attr                 # (target tokens, 3)
            >>> fig, ax = result.plot_token_attr()
        """
        positive_int(num_trials, "num_trials")
        relevant, _, target_ids = self._decompose(inp, target, gen_args, perturbations_per_eval, show_progress)
        return LLMAttributionResult(
            seq_attr=relevant.sum(0),
            token_attr=relevant,
            input_tokens=list(inp.values),
            output_tokens=pretty_tokens(target_ids.cpu(), self.tokenizer),
            inp=inp,
        )

    def decompose(
        self,
        inp: Any,
        target: Union[str, Tensor, None] = None,
        gen_args: Optional[Dict[str, Any]] = None,
        perturbations_per_eval: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor]:
        r"""
        The relevant and irrelevant parts behind :meth:`attribute`'s scores.

        Args: As in :meth:`attribute`.

        Returns:
            2-element tuple of **relevant**, **irrelevant** (*Tensor*, each of shape
            ``(target tokens, features)``): ``relevant[t, f] + irrelevant[t, f]`` is the
            model's logit (or log-probability) of target token ``t`` for every feature
            ``f``.
        """
        relevant, full, _ = self._decompose(inp, target, gen_args, perturbations_per_eval, False)
        return relevant, full[:, None] - relevant

    def attribute_future(self) -> None:
        r"""
        This method is not implemented for LLMContextualDecomposition.
        """
        raise NotImplementedError("attribute_future is not implemented for LLMContextualDecomposition")

    # ------------------------------------------------------------------ internals

    def _decompose(self, inp, target, gen_args, per_pass, show_progress) -> Tuple[Tensor, Tensor, Tensor]:
        """(relevant (T, features), target token scores (T,), target ids (T,))."""
        check_model(self.model)
        prompt, masks = prompt_features(inp, self.tokenizer)
        prompt = prompt.to(self.device)
        self._check_ids(prompt, "the prompt's token ids")
        target_ids = self._target_ids(prompt, target, gen_args)
        per_pass = positive_int(per_pass, "perturbations_per_eval")
        with torch.no_grad():
            relevant, full = self._relevant(prompt, target_ids, masks.to(self.device), per_pass, show_progress)
        return inp.format_attr(relevant.t()), full, target_ids

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _vocabulary(self) -> Optional[int]:
        sizes = [m.num_embeddings if isinstance(m, nn.Embedding) else None for m in (self.layer,)]
        sizes.append(self._head.out_features if self._head is not None else None)
        sizes = [s for s in sizes if s is not None]
        return min(sizes) if sizes else None

    def _check_ids(self, ids: Tensor, what: str) -> None:
        vocabulary = self._vocabulary()
        if ids.numel() and (ids.min() < 0 or (vocabulary is not None and ids.max() >= vocabulary)):
            raise ValueError(
                f"{what} range from {int(ids.min())} to {int(ids.max())}, but the model's vocabulary "
                f"has {vocabulary} tokens (ids 0 to {vocabulary - 1}); do the tokenizer and the model match?"
            )

    def _target_ids(self, prompt: Tensor, target, gen_args) -> Tensor:
        """The target's token ids ``(T,)``, as Captum's LLM attribution makes them."""
        if target is None:
            return self._generate(prompt, gen_args)
        if gen_args is not None:
            raise ValueError("gen_args are for generating the target; with a target given, pass gen_args=None.")
        if isinstance(target, str):
            ids = torch.tensor(self.tokenizer.encode(target, add_special_tokens=False), dtype=torch.long)
        elif isinstance(target, Tensor):
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise TypeError(f"a target tensor holds token ids (integers); got {target.dtype}.")
            if target.ndim == 2 and target.shape[0] == 1:
                target = target[0]
            if target.ndim != 1:
                raise ValueError(f"a target tensor is a 1-D sequence of token ids; got shape {tuple(target.shape)}.")
            ids = target.long()
        else:
            raise TypeError(f"target must be a string, a tensor of token ids, or None (generate); got {type(target).__name__}.")
        if ids.numel() == 0:
            raise ValueError(f"the target {target!r} has no tokens; give a non-empty text or token ids.")
        ids = ids.to(self.device)
        self._check_ids(ids, "the target's token ids")
        return ids

    def _generate(self, prompt: Tensor, gen_args) -> Tensor:
        if not callable(getattr(self.model, "generate", None)):
            raise TypeError(f"{type(self.model).__name__} has no generate(); give the target to explain.")
        out = self.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **(gen_args or DEFAULT_GEN_ARGS))
        generated = out[0, 1:] if self.encoder_decoder else out[0, prompt.shape[1] :]  # (after the decoder's start token)
        if generated.numel() == 0:
            raise ValueError("the model generated no tokens; give the target, or gen_args that generate some.")
        return generated

    def _model_inputs(self, prompt: Tensor, target_ids: Tensor) -> Tuple[Dict[str, Any], int]:
        """The teacher-forced call, and where the prompt's tokens are in the decomposed
        sequence's length."""
        ones = torch.ones_like
        if self.encoder_decoder:
            start = getattr(self.model.config, "decoder_start_token_id", None)
            if start is None:
                raise ValueError(f"{type(self.model).__name__}'s config has no decoder_start_token_id to start the decoder with.")
            decoder = torch.cat([prompt.new_tensor([[start]]), target_ids[None, :-1]], dim=1)
            kwargs = dict(input_ids=prompt, attention_mask=ones(prompt), decoder_input_ids=decoder, **self._cache_flag)
            return kwargs, prompt.shape[1]
        sequence = torch.cat([prompt, target_ids[None, :-1]], dim=1)  # the last target token is never input
        kwargs = dict(input_ids=sequence, attention_mask=ones(sequence), **self._cache_flag)
        if self._keeps_logits:
            kwargs["logits_to_keep"] = target_ids.numel()
        return kwargs, sequence.shape[1]

    def _relevant(self, prompt, target_ids, masks, per_pass, show_progress) -> Tuple[Tensor, Tensor]:
        """Every feature's relevant part of every target score ``(F, T)``, and the scores.
        Features without tokens score 0 and are not decomposed; the others go through
        passes of chunks of features, each from its features' first token on
        (:mod:`~captum_cd.attr.causal_prefix`) where the model is causal and has a cache."""
        kwargs, length = self._model_inputs(prompt, target_ids)
        masks = F.pad(masks, (0, length - masks.shape[1]))  # (F, length): the target's positions in no feature
        filled = masks.any(1).nonzero()[:, 0].tolist()
        starts = masks.to(torch.uint8).argmax(1).tolist()  # each feature's first token
        largest = per_pass or max(1, TOKENS_PER_PASS // length)
        chunks, cache = self._chunks([starts[f] for f in filled], length, largest, kwargs)
        parts = []
        for members, start in tqdm(chunks, desc=f"{self.get_name()} attribution", disable=not show_progress):
            features = [filled[i] for i in members]
            # (g, length - start, 1) over the embedding (1, ., E); without features, one empty group for the scores
            chunk_masks = masks[features, start:, None] if features else masks.new_zeros(1, length, 1)
            here = kwargs if start == 0 else self._suffix_inputs(kwargs, start, cache)
            rel, full = self._pass(here, chunk_masks, target_ids)
            parts.append((features, rel[: len(features)]))
        relevant = full.new_zeros(masks.shape[0], target_ids.numel())
        for features, rel in parts:
            relevant[features] = rel
        return relevant, full

    def _chunks(self, starts: List[int], length: int, largest: int, kwargs) -> Tuple[List[Tuple[List[int], int]], Any]:
        """The passes (the features of each and the position it starts at) and the cache of
        the prefix they need, or passes over the whole sequence where that is cheaper or
        the model has no cache to give a prefix in."""
        whole = [(list(range(i, min(i + largest, len(starts)))), 0) for i in range(0, len(starts), largest)] or [([], 0)]
        if self.encoder_decoder or self._cache_argument is None or not starts or not self._crop_prefix:
            return whole, None
        cropped = plan_chunks(starts, length, largest)
        last = max(start for _, start in cropped)
        if last == 0 or _rows(cropped, length) + last >= _rows(whole, length):  # (the prefix's ordinary pass: ~last rows)
            return whole, None
        cache = prefix_cache(self.model, kwargs["input_ids"][:, :last], length)
        return (cropped, cache) if cache is not None else (whole, None)

    def _suffix_inputs(self, kwargs: Dict[str, Any], start: int, cache: Any) -> Dict[str, Any]:
        """The call over the positions from ``start`` on, the ones before in the cache."""
        return {**kwargs, "input_ids": kwargs["input_ids"][:, start:], self._cache_argument: cache_before(cache, start), "use_cache": True}

    def _pass(self, kwargs, masks, target_ids) -> Tuple[Tensor, Tensor]:
        """One decomposition pass for a chunk of features: ``(rel (G, T), scores (T,))``."""
        scores = self._pass_reading(kwargs, masks, target_ids, self._head)
        if scores is None:  # the model edits the output layer's output (a soft-cap, a bias): decompose all logits
            self._head = None
            scores = self._pass_reading(kwargs, masks, target_ids, None)
        return scores

    def _pass_reading(self, kwargs, masks, target_ids, head, check_each_op=False) -> Optional[Tuple[Tensor, Tensor]]:
        """The pass, reading the target logits off ``head``'s input (None: off the decomposed
        logits); None where the model does not return ``head``'s output as its logits.
        Non-finite parts of finite scores are an error naming the first function that gave
        them (found by a second pass with every function's result checked)."""
        context = DecompositionContext(model=self.model, rules=self.rules, check_each_op=check_each_op)
        n = target_ids.numel()
        positions = torch.arange(n, device=target_ids.device)
        with contextlib.ExitStack() as stack:
            stack.callback(context.close)  # last: the pass's values remember it, it must not hold them
            stack.enter_context(decomposition_context(context))
            stack.enter_context(module_rules_installed(self.model, self.module_rules, context))
            calls = stack.enter_context(_decompose_at(self.layer, masks))
            read = stack.enter_context(_reading(head, context))
            logits = _logits(self.model(**kwargs))
            if calls != [1]:
                raise DecompositionError(layer_ran_message(self.model, self.layer, calls[0]))
            if head is not None and read.output is not logits:
                return None
            full_logits = (logits.full if isinstance(logits, Decomposition) else logits)[0, -n:]
            probabilities = full_logits.softmax(-1) if self.attr_target == "log_prob" else None
            if head is not None:
                score = _read_target_logits(read.hidden, head, target_ids, probabilities)
            else:
                score = _target_logits(logits, target_ids, probabilities)
        check_output(score, None if check_each_op else lambda: self._pass_reading(kwargs, masks, target_ids, head, True))
        if probabilities is not None:
            full_logits = full_logits.log_softmax(-1)
        return score.rel[:, 0], full_logits[positions, target_ids]


# Softmax attention of transformers whose query and key projections only set the
# attention weights (checked against decompositions without this, in the tests).
SOFTMAX_ATTENTION = ("LlamaAttention", "MistralAttention", "Qwen2Attention")


def scores_from_full(model: nn.Module) -> Dict[nn.Module, Any]:
    """Module rules that answer the query and key projections of :data:`SOFTMAX_ATTENTION`
    modules with their ordinary output: CD takes attention weights from the full
    activations, so the relevant parts of queries and keys are never read, and computing
    them (two of the four projections, and their rotary embedding) would be wasted."""
    rules = {}
    for module in model.modules():
        if type(module).__name__ in SOFTMAX_ATTENTION and type(module).__module__.startswith("transformers."):
            for name in ("q_proj", "k_proj"):
                projection = getattr(module, name, None)
                if isinstance(projection, nn.Linear):
                    rules[projection] = _ordinary_linear
    return rules


def _ordinary_linear(module: nn.Linear, x: Any, *args: Any, **kwargs: Any) -> Tensor:
    return F.linear(x.full, module.weight, module.bias)


def _rows(chunks: List[Tuple[List[int], int]], length: int) -> int:
    """Rows decomposed by the passes ``chunks`` (with each pass's overhead): plan_chunks' cost."""
    return sum((len(members) + PASS_OVERHEAD_ROWS) * (length - start) for members, start in chunks)


def _logits(out: Any) -> Tensor:
    logits = out.logits if hasattr(out, "logits") else out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(out).__name__} without logits; a language model's output has .logits.")
    return logits[:, 0] if logits.ndim == 4 else logits  # (1, 1, L, V): Llama 4's extra head dimension


def _read_target_logits(hidden: Decomposition, head: nn.Linear, target_ids: Tensor, probabilities) -> Decomposition:
    """``(1, T)``: target token t's logit (or its log-softmax's linear part) at the t-th of
    the last T positions of the output layer's input, through the output layer's rows of
    the target tokens only."""
    n = target_ids.numel()
    weight, bias = head.weight[target_ids], None if head.bias is None else head.bias[target_ids]
    if probabilities is not None:  # rel(z_y) - sum_v p_v rel(z_v): one mixed row per position
        weight = weight - probabilities.to(weight.dtype) @ head.weight
    scores = F.linear(hidden[:, hidden.shape[1] - n :], weight, bias)  # (1, T, T): position x target row
    return torch.diagonal(scores, dim1=-2, dim2=-1)


def _target_logits(logits: Any, target_ids: Tensor, probabilities) -> Decomposition:
    """``(1, T)`` from decomposed logits ``(1, L, V)`` of the whole vocabulary."""
    if not isinstance(logits, Decomposition):
        raise DecompositionError(
            "the model's logits do not depend on the decomposed embedding; check that layer is the "
            "embedding of the prompt's tokens."
        )
    n = target_ids.numel()
    rel = logits.rel[:, :, -n:]  # (G, 1, T, V)
    positions = torch.arange(n, device=target_ids.device)
    picked = rel[:, :, positions, target_ids]
    if probabilities is not None:
        picked = picked - (rel * probabilities).sum(-1)
    return Decomposition(logits.full[:, -n:][:, positions, target_ids], picked)


@contextlib.contextmanager
def _reading(head: Optional[nn.Module], context: DecompositionContext) -> Iterator[SimpleNamespace]:
    """Keeps the decomposed input of the output layer (which then runs on the full
    activation only) and its output, in this call's context."""
    read = SimpleNamespace(hidden=None, output=None)
    if head is None:
        yield read
        return

    def before(module, args, kwargs):
        if current_context() is context and args and isinstance(args[0], Decomposition):
            read.hidden = args[0]
            return fulls(args), fulls(kwargs)
        return None

    def after(module, args, output):
        if current_context() is context:
            read.output = output

    handles = [head.register_forward_pre_hook(before, with_kwargs=True), head.register_forward_hook(after)]
    try:
        yield read
    finally:
        for handle in handles:
            handle.remove()


def input_embedding(model: nn.Module, encoder_decoder: bool = False) -> nn.Module:
    """The embedding of the prompt's tokens: the encoder's for an encoder-decoder."""
    source = model.get_encoder() if encoder_decoder and hasattr(model, "get_encoder") else model
    embedding = source.get_input_embeddings() if hasattr(source, "get_input_embeddings") else None
    if not isinstance(embedding, nn.Module):
        raise TypeError(
            f"{type(model).__name__} has no get_input_embeddings(); pass layer= the module that embeds the prompt's tokens."
        )
    return embedding
