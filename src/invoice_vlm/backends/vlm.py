"""The transformers backend: every model family in `invoice_vlm.families`, with a PEFT LoRA adapter when given.

One class for every family: `AutoModelForImageTextToText` and `AutoProcessor` load the model, and the family's
`~invoice_vlm.families.Family` entry says how its prompt is built, which token ends an answer and which image
settings its processor gets. A model directory or Hub id picks its family from ``config.json``.

Decoding is greedy and, when the ``constrained`` extra (xgrammar) is installed, constrained to the schema: each row of
a batch has its own grammar matcher, the grammar is compiled once per schema and tokenizer, and the probability of
every chosen token is taken after the mask, during generation (one number per token, never the vocabulary's scores).
Rows are padded on the left, so prompts of different lengths (pages cut into a different number of tiles) batch.

torch, transformers and peft are imported inside the functions that need them, so registering this backend (which
happens whenever any backend is looked up) stays cheap; loading goes through the shared plumbing in
``invoice_vlm.backends._hf``.

Examples:
    >>> # ex = InvoiceExtractor.from_pretrained("HuggingFaceTB/SmolVLM-256M-Instruct", schema="invoice")
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation, GenerationRequest
from invoice_vlm.backends._grammar import SchemaGrammar, TokenBytes
from invoice_vlm.backends._hf import (
    apply_adapter,
    load_processor,
    load_weights,
    resolve_device_dtype,
    resolve_refs,
)
from invoice_vlm.config import GenerationSettings, from_dict
from invoice_vlm.constraints import grammar_available
from invoice_vlm.errors import TORCH_CPU_COMMAND, MissingDependencyError, ModelLoadError, require
from invoice_vlm.families import FAMILIES, Family, family_for_model_type, family_of, read_model_type

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["TransformersBackend", "char_confidence", "check_image_options", "check_processor", "model_inputs"]


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _piece(tokenizer: Any, token_id: int, special: frozenset[int]) -> bytes:
    """The bytes a SentencePiece-style token writes (``▁`` a space, ``<0xNN>`` one byte, special tokens nothing)."""
    if token_id in special:
        return b""
    token = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(token, str):
        return b""
    byte = _BYTE_TOKEN.match(token)
    return bytes([int(byte.group(1), 16)]) if byte else token.replace("\u2581", " ").encode("utf-8")


def _by_bytes(
    tokenizer: Any, ids: Sequence[int], probs: Sequence[float], text: str, cache: dict[int, bytes]
) -> list[float] | None:
    """Per character, the lowest probability of the tokens that wrote its bytes; ``None`` if the pieces disagree."""
    special = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
    owners: list[int] = []
    written = bytearray()
    for index, token_id in enumerate(ids):
        piece = cache.get(token_id)
        if piece is None:
            piece = cache[token_id] = _piece(tokenizer, token_id, special)
        written += piece
        owners.extend([index] * len(piece))
    if written.decode("utf-8", errors="replace") != text:
        return None
    scores, at = [], 0
    for char in text:
        width = len(char.encode("utf-8"))
        scores.append(min((float(probs[k]) for k in owners[at : at + width]), default=1.0))
        at += width
    return scores


def char_confidence(
    tokenizer: Any, ids: Sequence[int], probs: Sequence[float], pieces: dict[int, bytes] | None = None
) -> tuple[str, tuple[float, ...]]:
    """The text of ``ids`` and one probability per character: the lowest of the tokens that wrote its bytes.

    Linear in the number of tokens: each token's bytes are looked up once (``pieces`` caches them across calls;
    SentencePiece-style vocabularies such as Gemma's: ``▁`` for a space, ``<0xNN>`` byte fallback); a tokenizer whose
    pieces do not add up to its decoded text is decoded incrementally instead (a short window, as streaming
    detokenizers do).
    """
    text: str = tokenizer.decode(list(ids), skip_special_tokens=True)
    cache = pieces if pieces is not None else {}
    exact = _by_bytes(tokenizer, ids, probs, text, cache) if len(probs) == len(ids) else None
    if exact is not None:
        return text, tuple(min(1.0, max(0.0, c)) for c in exact)
    deltas: list[str] = []
    scores: list[float] = []
    prefix, read = 0, 0
    low = 1.0
    for i, p in enumerate(probs):
        low = min(low, float(p))
        before = tokenizer.decode(list(ids[prefix:read]), skip_special_tokens=True)
        after = tokenizer.decode(list(ids[prefix : i + 1]), skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            deltas.append(delta)
            scores.extend([low] * len(delta))
            prefix, read, low = read, i + 1, 1.0
    if "".join(deltas) != text:  # pieces that do not add up either: one score per token's prefix, exactly
        scores = []
        for i, p in enumerate(probs):
            upto = (
                len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True))
                if i + 1 < len(ids)
                else len(text)
            )
            scores.extend([float(p)] * max(0, upto - len(scores)))
    scores = scores[: len(text)] + [float(probs[-1]) if len(probs) else 1.0] * (len(text) - len(scores))
    return text, tuple(min(1.0, max(0.0, c)) for c in scores)


@contextmanager
def _release_memory_on_oom() -> Iterator[None]:
    """On CUDA out-of-memory, free the cached blocks before the error goes up (the extractor retries in halves)."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise


class _Grammars:
    """Compiled grammars of one tokenizer, one per JSON schema, compiled once (xgrammar, `SchemaGrammar`)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids)
        )
        self.compiler = xgrammar.GrammarCompiler(info)
        self.vocab_size = vocab_size
        self.texts = TokenTexts(info.decoded_vocab, info.special_token_ids)
        self.tokens = TokenBytes.of(info.decoded_vocab, info.special_token_ids)
        self._compiled: dict[str, SchemaGrammar] = {}
        self._lock = threading.Lock()

    def get(self, json_schema: Any) -> SchemaGrammar:
        key = json.dumps(json_schema, sort_keys=False)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = SchemaGrammar(self.compiler, json_schema, self.tokens)
            return self._compiled[key]


def _apply_grammar(matchers: Sequence[Any], finished: Sequence[bool], bitmask: Any, scores: Any) -> Any:
    """``scores`` (one row per matcher) masked to what each row's grammar allows; a finished row is left as is."""
    import torch
    import xgrammar

    for row, matcher in enumerate(matchers):
        if finished[row]:
            bitmask[row].fill_(-1)  # nothing masked (its tokens are padding)
        else:
            matcher.fill_next_token_bitmask(bitmask, row)
    if scores.device.type == "cuda":
        xgrammar.apply_token_bitmask_inplace(scores, bitmask.to(scores.device))
        return scores
    masked = scores.to("cpu", torch.float32)
    xgrammar.apply_token_bitmask_inplace(masked, bitmask)
    return masked.to(scores.device, scores.dtype)


def _logits_processor(grammar: SchemaGrammar | None, batch: int, vocab_size: int) -> Any:
    """A processor that masks each row to its grammar (when given) and keeps the chosen token's probability."""
    import torch
    from transformers import LogitsProcessor

    class ChosenProbability(LogitsProcessor):  # type: ignore[misc]
        """Last in the list, so what it sees is what greedy decoding picks from: it records that token's probability."""

        def __init__(self) -> None:
            self.steps: list[torch.Tensor] = []
            self.matchers: list[Any] = []
            self.bitmask: Any = None
            self.length: int | None = None  # the length of input_ids the matchers have taken
            if grammar is not None:
                import xgrammar

                self.matchers = [grammar.matcher() for _ in range(batch)]
                self.bitmask = xgrammar.allocate_token_bitmask(batch, vocab_size)

        def take(self, input_ids: torch.LongTensor) -> None:
            """Feed each unfinished row's matcher the token chosen since it last looked (none at the first step)."""
            length = int(input_ids.shape[1])
            if self.length is not None and length > self.length:
                for row, matcher in enumerate(self.matchers):
                    if not matcher.is_terminated():
                        matcher.accept_token(int(input_ids[row, -1]))
            self.length = length

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.matchers:
                self.take(input_ids)
                finished = [matcher.is_terminated() for matcher in self.matchers]
                scores = _apply_grammar(self.matchers, finished, self.bitmask, scores)
                for row, token in enumerate(scores.argmax(-1).tolist()):
                    matcher = self.matchers[row]
                    if not matcher.is_terminated():
                        _grammar_choice(matcher.fork(), scores[row], token)
            # Kept on the device, one number per row and step: reading it back every step would stall a GPU.
            self.steps.append(scores.softmax(-1, dtype=torch.float32).amax(-1))
            return scores

        @property
        def probs(self) -> list[list[float]]:
            """Per row, the probability of each chosen token, in order."""
            if not self.steps:
                return [[] for _ in range(batch)]
            return torch.stack(self.steps, dim=1).tolist()

    return ChosenProbability()


def _grammar_choice(matcher: Any, scores: Any, token: int) -> int:
    """The greedy token ``matcher`` accepts (and has accepted): ``token``, else the best one it does not refuse.

    xgrammar's token mask can let through a token its matcher then refuses (seen with long character classes in
    a field's pattern); such a token is masked in ``scores`` (one row, changed in place) and the next best tried, so
    the text stays inside the schema and what the model chose is what the grammar walked.
    """
    while not matcher.accept_token(token):
        scores[token] = float("-inf")
        token = int(scores.argmax())
        if scores[token] == float("-inf"):
            raise RuntimeError("the grammar refuses every token the model can write")
    return token


class TokenTexts:
    """The bytes each token of a vocabulary writes, and whether some token writes more after given bytes.

    Forced text must not be cut where the model would have written one token across the cut: ``", "items": [``
    followed by the model's ``{"`` is `` [{"`` in one token where the vocabulary has it, so the forced `` `` (or
    `` [``) is left to the model.
    """

    def __init__(self, pieces: Sequence[bytes], special: Sequence[int] = ()) -> None:
        skip = set(special)
        self.pieces = list(pieces)
        self._sorted = sorted({piece for i, piece in enumerate(self.pieces) if piece and i not in skip})
        self._forced: dict[str, tuple[int, ...]] = {}  # forced text -> its tokens up to the safe end

    def forced(self, text: str, tokenizer: Any) -> tuple[int, ...]:
        """The tokenizer's own tokens for forced ``text``, cut before `safe_end` (computed once per text).

        Empty when those tokens do not write exactly ``text`` (a prefix space...): then the model decodes it.
        """
        if text not in self._forced:
            raw = text.encode("utf-8")
            encoded = tokenizer.encode(text, add_special_tokens=False)
            tokens: list[int] = []
            if b"".join(self.pieces[t] if t < len(self.pieces) else b"\0" for t in encoded) == raw:
                end, written = self.safe_end(raw), 0
                for token in encoded:
                    written += len(self.pieces[token])
                    if written > end:
                        break
                    tokens.append(token)
            self._forced[text] = tuple(tokens)
        return self._forced[text]

    def extends(self, text: bytes) -> bool:
        """Whether some token starts with ``text`` and writes more after it."""
        at = bisect.bisect_right(self._sorted, text)  # the first token after ``text`` itself
        return at < len(self._sorted) and self._sorted[at].startswith(text)

    def safe_end(self, text: bytes) -> int:
        """The longest prefix of ``text`` (in bytes) after which no token can start inside ``text`` and run past it."""
        return next((start for start in range(len(text)) if self.extends(text[start:])), len(text))


def _accept_forced(matcher: Any, tokenizer: Any, texts: TokenTexts, limit: int) -> list[int]:
    """Accept and return the tokens ``matcher``'s grammar forces next (xgrammar's jump-forward string), at most ``limit``.

    The forced text (keys, quotes, commas) is tokenised as the model was trained to see it (the tokenizer's own
    tokens), cut before any point where a token of the vocabulary could start inside the forced text and run on into
    what the model writes next (`` [{"`` after ``"items":``), and each token is accepted by the grammar in turn, up
    to the first it refuses (it then stays as it was): from there on the model chooses, as it would have without the
    jump.
    """
    text = matcher.find_jump_forward_string()
    if not text:
        return []
    accepted: list[int] = []
    for token in texts.forced(text, tokenizer)[:limit]:
        if not matcher.accept_token(token):
            break
        accepted.append(token)
    return accepted


def left_padded(chunks: Sequence[Sequence[int]], pad: int, device: Any = None) -> Any:
    """One step's tokens, one row per chunk, shorter chunks padded on the left: every row ends at the last position."""
    import torch

    width = max(len(chunk) for chunk in chunks)
    return torch.tensor(
        [[pad] * (width - len(chunk)) + list(chunk) for chunk in chunks], dtype=torch.long, device=device
    )


def jump_forward_decode(
    model: Any,
    inputs: Mapping[str, Any],
    grammar: SchemaGrammar,
    tokenizer: Any,
    texts: TokenTexts,
    budget: int,
    stops: Sequence[int],
) -> tuple[list[list[int]], list[list[float]]]:
    """Constrained greedy decoding that feeds forced text in the same forward pass as the token before it.

    One forward pass per step, as ``generate`` makes, but a row whose grammar forces what comes next feeds those
    tokens together with the token it chose, so a key and its quotes cost one pass instead of one per token. Rows
    feed different numbers of tokens: within a step the shorter ones are padded on the left, so every row's last
    token is the step's last position and the output layer runs on that one position only; each row's positions
    count its own tokens only, so every row reads what it would read alone and no row waits for another. Where the
    model's cache allows (`RaggedRows`: full-attention layers, SDPA or eager attention), alone or in a batch, each
    row writes its tokens at its own end of the cache and the padding goes nowhere it is seen: nothing is copied and
    each step's inputs are built directly, without ``generate``'s per-step preparation. Elsewhere the padding is
    masked (holes in the attention mask) in transformers' own cache, which then grows by the widest chunk each step.
    Returns per row the tokens written (the model's and the forced ones, ending with the stop token when one was
    chosen) and each token's probability: the chosen token's after the grammar's mask, 1.0 for a forced one (the
    model chose none).
    """
    import inspect

    import torch
    import xgrammar

    # A LoRA adapter lives inside the transformers model's layers: its own methods prepare each step, as in generate.
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    input_ids = inputs["input_ids"]
    batch, device = int(input_ids.shape[0]), input_ids.device
    kwargs = {key: value for key, value in inputs.items() if key != "input_ids"}
    kwargs["use_cache"] = True
    accepted = set(inspect.signature(model.forward).parameters)
    if "position_ids" in accepted:
        kwargs["position_ids"] = model._prepare_position_ids_for_generation(input_ids, kwargs)
    mask = kwargs.get("attention_mask")
    if batch == 1 and mask is not None and bool(mask.all()):
        # One row never has holes: without a mask the attention takes its faster causal path, as generate's does.
        del kwargs["attention_mask"]
        mask = None
    keep_last = (
        {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    )  # the output layer on one position
    vocab = int(model.get_output_embeddings().weight.shape[0])
    matchers = [grammar.matcher() for _ in range(batch)]
    bitmask = xgrammar.allocate_token_bitmask(batch, vocab)
    written: list[list[int]] = [[] for _ in range(batch)]
    probs: list[list[float]] = [[] for _ in range(batch)]
    done = [False] * batch
    stop = set(stops)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sorted(stop)[0]
    sequence = input_ids
    step_inputs = model.prepare_inputs_for_generation(
        sequence, is_first_iteration=True, **kwargs, **keep_last
    )
    out = model(**step_inputs, return_dict=True)
    # After the prompt's pass the cache is taken over where it allows (rows written at their own ends), else holes.
    from invoice_vlm.backends._ragged import RaggedRows

    cache_key = "cache" if "cache" in accepted else "past_key_values"
    cache = out.get(cache_key)
    prompt_mask = mask if mask is not None else torch.ones_like(input_ids)
    ragged = RaggedRows.start(model, cache, prompt_mask, step_inputs.get("position_ids"), budget)
    while True:
        # Every row's last real token is the step's last position (rows are padded on the left, the prompt too).
        logits = out.logits[:, -1].float()
        # On a GPU the forward pass is still running here: the masks are computed while it does.
        logits = _apply_grammar(matchers, done, bitmask, logits)
        chosen = [
            None if done[row] else _grammar_choice(matcher, logits[row], token)
            for row, (matcher, token) in enumerate(zip(matchers, logits.argmax(-1).tolist(), strict=True))
        ]
        chosen_probs = logits.softmax(-1).amax(-1).tolist()
        chunks: list[list[int]] = []
        for row, matcher in enumerate(matchers):
            token = chosen[row]
            if token is None:
                chunks.append([])
                continue
            written[row].append(token)
            probs[row].append(float(chosen_probs[row]))
            if token in stop or matcher.is_terminated() or len(written[row]) >= budget:
                done[row] = True
                chunks.append([])
                continue
            forced = _accept_forced(matcher, tokenizer, texts, budget - len(written[row]))
            written[row].extend(forced)
            probs[row].extend([1.0] * len(forced))
            chunks.append([token, *forced])
        if all(done):
            return written, probs
        step_ids = left_padded(chunks, pad, device)
        if ragged is not None:  # the cache object stays the same: its layers were taken over once
            step_inputs = {
                "input_ids": step_ids,
                **ragged.step(chunks),
                cache_key: cache,
                "use_cache": True,
                **keep_last,
            }
        else:
            width = int(step_ids.shape[1])
            real = torch.tensor(
                [[0] * (width - len(chunk)) + [1] * len(chunk) for chunk in chunks],
                dtype=torch.long,
                device=device,
            )
            kwargs = model._update_model_kwargs_for_generation(out, kwargs, num_new_tokens=width)
            if mask is not None or not bool(real.all()):
                if mask is None:
                    mask = torch.ones_like(sequence)
                mask = torch.cat([mask, real.to(mask.dtype)], dim=1)
                kwargs["attention_mask"] = mask
            positions = kwargs.get("position_ids")
            if positions is not None:
                # Each row counts its own tokens: a hole repeats the row's last position (it is masked anyway).
                before = positions[..., : sequence.shape[1]]
                grown = before[..., -1:] + real.cumsum(-1).to(before.dtype)
                kwargs["position_ids"] = torch.cat([before, grown], dim=-1)
            sequence = torch.cat([sequence, step_ids], dim=1)
            # A finished row feeds only holes: its logits are unused.
            step_inputs = model.prepare_inputs_for_generation(
                sequence, next_sequence_length=width, **kwargs, **keep_last
            )
        out = model(**step_inputs, return_dict=True)


def check_image_options(processor: Any, options: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """The image options as a dict, refused when the family's image processor has no such setting."""
    image_processor = getattr(processor, "image_processor", None)
    valid = getattr(image_processor, "valid_kwargs", None)  # a TypedDict of the settings it takes
    known = set(getattr(valid, "__required_keys__", ())) | set(getattr(valid, "__optional_keys__", ()))
    unknown = sorted(set(options) - known) if known else []
    if unknown:
        raise ModelLoadError(
            f"image_options {unknown} are not settings of the {family.title} image processor "
            f"({type(image_processor).__name__}); it takes: {', '.join(sorted(known))}."
        )
    return dict(options)


def model_inputs(
    family: Family,
    processor: Any,
    images: Sequence[Image.Image],
    prompt: str,
    image_options: Mapping[str, Any] | None = None,
) -> Any:
    """The model's inputs for one prompt over ``images``, padded on the left: what inference feeds ``generate``.

    The training collator and the first-batch guards call this same function, so the prompt a model is trained with
    is the one it is asked at inference, token for token. ``image_options`` are the image processor's settings: the
    family's document defaults when ``None``, the processor's own when empty.
    """
    options = family.image_options if image_options is None else image_options
    text = family.prompt_text(processor, prompt)
    return processor(
        images=family.images_argument(
            [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        ),
        text=[text] * len(images),
        return_tensors="pt",
        padding=True,
        padding_side="left",
        **dict(options),
    )


def check_processor(family: Family, processor: Any, ref: str) -> None:
    """Refuse a processor that cannot build this family's prompt (another model's, or one without its template).

    Raises:
        ModelLoadError: the processor does not belong to the family.
    """
    if family.prompt_style == "prefix" and not hasattr(processor, "image_seq_length"):
        raise ModelLoadError(
            f"{ref!r} has a {type(processor).__name__}, not a {family.title} processor.", ref
        )
    if family.prompt_style == "task" and not hasattr(processor, "image_token"):
        raise ModelLoadError(
            f"{ref!r} has a {type(processor).__name__}, not a {family.title} processor.", ref
        )
    if family.prompt_style == "chat":
        if not hasattr(processor, "apply_chat_template") or not hasattr(processor, "image_token"):
            raise ModelLoadError(
                f"{ref!r} has a {type(processor).__name__}, not a {family.title} processor.", ref
            )
        family.prompt_text(processor, "")  # no chat template: refused here, with what to do


class TransformersBackend:
    """Any model family in `invoice_vlm.families` (transformers) with an optional PEFT adapter.

    Batched greedy generation, constrained to the schema when asked.

    Args:
        model: a loaded image-text-to-text model (or a ``PeftModel`` around one).
        processor: the matching processor.
        family: the model's family (read from ``model.config`` when not given).
        device: where the model lives.
        generation: default decoding settings (an extractor's request carries the ones used).
        base_model: id or path of the base weights (saved in ``invoice_vlm.json``).
        adapter: id or path of the adapter applied, if any.
        compile: decode with a static KV cache and a compiled forward pass.
        image_options: image processor settings over the family's document defaults (``{"max_pixels": ...}``).
    """

    name = "transformers"
    model_format = "transformers"
    """The directory layout it reads and writes (the paligemma and vllm backends share it)."""
    families: tuple[str, ...] = tuple(FAMILIES)
    """The families this backend loads."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        family: Family | None = None,
        device: str = "cpu",
        generation: GenerationSettings | None = None,
        base_model: str | None = None,
        adapter: str | None = None,
        compile: bool = False,
        image_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.family = family if family is not None else family_of(model)
        self.image_options = {**self.family.image_options, **dict(image_options or {})}
        self.device = device
        self.generation = generation or GenerationSettings()
        self.base_model = base_model
        self.adapter = adapter
        self._grammars: _Grammars | None = None
        self._pieces: dict[int, bytes] = {}  # token id -> the bytes it writes, for per-character confidence
        self.compile = compile

    @classmethod
    def _refuse_family(cls, family: Family, ref: str) -> None:
        if family.name not in cls.families:
            raise ModelLoadError(
                f"{ref!r} is a {family.title} model; the {cls.name} backend loads {', '.join(cls.families)} only. "
                "Use the transformers backend (backend='transformers', --backend transformers).",
                ref,
            )

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | Any | None = None,
        generation: GenerationSettings | dict[str, Any] | None = None,
        merge_adapter: bool = True,
        compile: bool = False,
        image_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TransformersBackend:
        """Load a base model (id or directory), an adapter alone (its base read from ``adapter_config.json``), or both.

        The family comes from the base model's ``config.json``. Only safetensors weights are loaded and
        ``trust_remote_code`` is never set; attention is PyTorch's SDPA. ``generation`` sets the backend's default
        decoding settings (an extractor's own settings override them). ``merge_adapter`` (on by default) folds a
        LoRA adapter's weights into the base layers for inference, so decoding runs at the base model's speed;
        outputs equal the unmerged adapter's within float tolerance, and `save_pretrained` still writes the adapter
        alone. ``compile`` decodes with a static KV cache and a ``torch.compile``d forward pass: the first batch of
        each shape compiles (tens of seconds), later ones run faster. ``image_options`` change the image processor's
        settings over the family's document defaults.

        Raises:
            MissingDependencyError: torch/transformers/peft are not installed.
            ModelLoadError: the model, adapter or processor cannot be loaded, or the model's family is unknown; the
                message says which and why.
        """
        if options:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unexpected option(s): {', '.join(sorted(options))}"
            )
        require(
            f"The {cls.name} backend",
            "paligemma",
            "torch",
            "transformers",
            "peft",
            advice=f"On a machine without an NVIDIA GPU, put PyTorch's CPU build in first ({TORCH_CPU_COMMAND}), "
            "or the extra pulls about 3 GB of CUDA wheels. To read documents now without torch, use the OCR "
            "backend: --backend ocr on the command line, backend='ocr' in Python",
        )
        if model is None and adapter is None:
            raise ModelLoadError(
                f"The {cls.name} backend needs a model: a base id such as 'google/paligemma-3b-pt-448' or "
                "'HuggingFaceTB/SmolVLM-256M-Instruct', an adapter id or directory, or a directory saved by "
                "invoice_vlm."
            )
        if isinstance(generation, dict):
            generation = from_dict(GenerationSettings, generation, where="generation settings")
        resolved_device, torch_dtype = resolve_device_dtype(device, dtype)  # cheap checks before any loading
        refs = resolve_refs(model, adapter)
        family = family_for_model_type(read_model_type(refs.base))
        cls._refuse_family(family, refs.base)
        family.require()
        processor = load_processor(refs.processor)
        check_processor(family, processor, refs.processor)
        settings = check_image_options(
            processor, {**family.image_options, **dict(image_options or {})}, family
        )
        from transformers import AutoModelForImageTextToText

        net = load_weights(AutoModelForImageTextToText, refs.base, resolved_device, torch_dtype)
        if refs.adapter is not None:
            net = apply_adapter(net, refs.adapter, trainable=False, base=refs.base)
            if merge_adapter:
                net.merge_adapter()  # LoRA folded into the base weights; the adapter's own weights are kept
        net.eval()
        vocab = net.get_input_embeddings().weight.shape[0]
        if len(processor.tokenizer) > vocab:
            raise ModelLoadError(
                f"The tokenizer of {refs.processor!r} has {len(processor.tokenizer)} tokens but the model "
                f"{refs.base!r} embeds only {vocab}; the processor does not belong to this model."
            )
        return cls(
            net,
            processor,
            family=family,
            device=resolved_device,
            generation=generation,
            base_model=refs.base,
            adapter=refs.adapter,
            compile=compile,
            image_options=settings,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.model.parameters()).dtype  # type: ignore[no-any-return]

    @property
    def constrained_decoding(self) -> bool:
        """Whether decoding can be constrained to a schema here: xgrammar (the ``constrained`` extra) is installed."""
        return grammar_available()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        found = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        found.update(self.family.end_token_ids(self.processor.tokenizer))
        return sorted(i for i in found if i is not None)

    def _grammar(self, json_schema: Any) -> SchemaGrammar:
        if self._grammars is None:
            if not self.constrained_decoding:
                raise MissingDependencyError("Constrained decoding", "constrained", "xgrammar")
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            self._grammars = _Grammars(self.processor.tokenizer, vocab, self._eos_ids())
        return self._grammars.get(json_schema)

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Generation]:
        """Greedy-decode one output per image, constrained to the schema when asked, with per-character confidence.

        Confidence is the probability of each chosen token after the grammar's mask (one number per token, taken
        as it is generated), spread over the characters the token completes.
        """
        import torch

        if not images:
            return []
        settings = request.settings
        if request.constrained and settings.num_beams != 1:
            raise ValueError("constrained decoding works with greedy decoding only (num_beams=1).")
        inputs = model_inputs(self.family, self.processor, images, request.prompt, self.image_options)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        # A decoder-only model returns the prompt and then the answer; an encoder-decoder, its start token and then
        # the answer.
        prefix_len = 1 if self.family.encoder_decoder else inputs["input_ids"].shape[1]
        tokenizer = self.processor.tokenizer
        processors = []
        recorder = None
        grammar: SchemaGrammar | None = None
        if settings.num_beams == 1:
            grammar = self._grammar(request.json_schema) if request.constrained else None
        jumping = (
            settings.jump_forward
            and grammar is not None
            and not self.family.encoder_decoder
            and not self.compile
        )
        if settings.num_beams == 1 and not jumping:  # the jump-forward loop keeps its own matchers
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            recorder = _logits_processor(grammar, len(images), vocab)
            processors.append(recorder)
        from transformers import LogitsProcessorList

        extra: dict[str, Any] = {}
        if self.compile:
            from transformers import CompileConfig

            config = CompileConfig(mode="reduce-overhead" if self.device.startswith("cuda") else "default")
            config._compile_all_devices = True  # transformers compiles on its own only on accelerators
            extra = {"cache_implementation": "static", "compile_config": config}
        eos = self._eos_ids()
        options = {
            "min_new_tokens": settings.min_new_tokens or None,
            "num_beams": settings.num_beams,
            "do_sample": False,
            "logits_processor": LogitsProcessorList(processors),
            "eos_token_id": eos,
            "pad_token_id": tokenizer.pad_token_id,
            **extra,
        }
        probs: list[list[float]] | None
        with torch.inference_mode(), _release_memory_on_oom():
            if jumping:
                assert self._grammars is not None and grammar is not None  # built above
                sequences, probs = jump_forward_decode(
                    self.model, inputs, grammar, tokenizer, self._grammars.texts, settings.max_new_tokens, eos
                )
            else:
                out = self.model.generate(**inputs, max_new_tokens=settings.max_new_tokens, **options)
                sequences = out[:, prefix_len:].tolist()
                probs = recorder.probs if recorder is not None else None
        stops = set(eos)
        results = []
        for row, ids in enumerate(sequences):
            cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
            ids = ids[:cut]
            if probs is None:
                results.append(Generation(tokenizer.decode(ids, skip_special_tokens=True), num_tokens=cut))
                continue
            decoded, confidence = char_confidence(tokenizer, ids, probs[row][:cut], self._pieces)
            results.append(Generation(decoded, char_confidence=confidence, num_tokens=cut))
        return results

    def save_pretrained(self, directory: str | Path) -> None:
        """Save the adapter (or the full model when none is applied) and the processor, as safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.processor.save_pretrained(str(directory))
