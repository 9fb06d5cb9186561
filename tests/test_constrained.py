"""Schema-constrained decoding: the bounded schema, the settings, and a tiny random PaliGemma under xgrammar."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from invoice_vlm import Generation, GenerationSettings, InvoiceExtractor, SchemaSpec, get_schema
from invoice_vlm.constraints import generation_schema, output_bound, target_mismatch
from invoice_vlm.errors import ConfigError


class TagLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=6)
    qty: int = Field(ge=0, le=99)


class Tag(BaseModel):
    """A schema defined only here: short strings, a bounded integer, a date pattern, a short list, an optional."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=8)
    count: int = Field(ge=0, le=999)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    lines: list[TagLine] = Field(max_length=2)
    note: str | None = Field(default=None, max_length=6)


TAG = SchemaSpec(name="tag", model=Tag, prompt="extract tag in JSON format")


def walk(node: dict[str, Any]):
    yield node
    for child in (node.get("properties") or {}).values():
        yield from walk(child)
    for branch in node.get("anyOf", []):
        yield from walk(branch)
    if "items" in node:
        yield from walk(node["items"])


@pytest.mark.parametrize("name", ["pallet_label", "invoice"])
def test_generation_schema_bounds_everything_in_schema_order(name):
    spec = get_schema(name)
    schema = generation_schema(spec)
    assert list(schema["properties"]) == list(spec.tree.order)
    for node in walk(schema):
        assert "$ref" not in node and "title" not in node and "description" not in node
        if node.get("type") == "string":
            assert "pattern" in node
        if node.get("type") == "array":
            assert node["maxItems"] <= 100
        if node.get("type") in ("number", "integer"):
            assert "minimum" in node and "maximum" in node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
    # Every built-in training target fits (the generator writes them with SchemaSpec.dumps).
    from invoice_vlm.data.synth import sample

    for seed in range(5):
        assert target_mismatch(spec.dumps(sample(name, seed)), spec) is None


def test_output_bound_covers_the_longest_output():
    widest = "\U0001d11e"  # four bytes in UTF-8
    longest = {
        "code": widest * 8,
        "count": 999,
        "date": "2024-12-31",
        "lines": [{"name": widest * 6, "qty": 99}] * 2,
        "note": widest * 6,
    }
    TAG.validate_data(longest)
    written = TAG.dumps(longest).encode()
    bound = output_bound(generation_schema(TAG))
    assert len(written) <= bound < 2 * len(written)


def test_unboundable_fields_are_refused_clearly():
    class Loose(BaseModel):
        anything: Any

    class Endless(BaseModel):
        code: str = Field(pattern=r"^[A-Z]+$")

    with pytest.raises(ConfigError, match="anything: the field has no type"):
        generation_schema(SchemaSpec(name="loose", model=Loose, prompt="p"))
    with pytest.raises(ConfigError, match=r"matches strings of any length.*constrained=False"):
        generation_schema(SchemaSpec(name="endless", model=Endless, prompt="p"))


def test_targets_the_grammar_would_write_differently():
    good = {"code": "A1", "count": 3, "date": "2024-01-02", "lines": [], "note": None}
    assert target_mismatch(TAG.dumps(good), TAG) is None
    assert "json.dumps" in target_mismatch(json.dumps(good, indent=2), TAG)
    reordered = json.dumps({"count": 3, "code": "A1", "date": "2024-01-02", "lines": []})
    assert "not in the schema's order" in target_mismatch(reordered, TAG)
    assert "does not fit" in target_mismatch(TAG.dumps({**good, "code": 'say "hi"'}), TAG)


def test_strings_take_any_character_but_never_a_spelt_out_surrogate():
    """Byte tokens can spell a UTF-16 surrogate (ED B7 A0): one "character" to a grammar, three U+FFFD once decoded."""
    xgrammar = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from invoice_vlm.constraints import SEPARATORS

    grammar = xgrammar.Grammar.from_json_schema(
        json.dumps(generation_schema(TAG)), any_whitespace=False, separators=SEPARATORS
    )
    good = '{"code": "Zü€😀 b", "count": 1, "date": "2024-01-02", "lines": []}'
    assert accepts(grammar, good.encode()) and TAG.validate_data(json.loads(good))
    assert not accepts(grammar, b'{"code": "b\xed\xb7\xa0", "count": 1, "date": "2024-01-02", "lines": []}')


def test_beams_under_constraints_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"greedy decoding only \(num_beams=1\), not num_beams=3"):
        GenerationSettings(num_beams=3, constrained=True)


def test_a_backend_that_cannot_constrain_says_so():
    class Decoder:  # decodes (it has settings) but cannot constrain
        generation = GenerationSettings()

        def generate(self, images, request):
            return [Generation('{"code": "A"}') for _ in images]

    ex = InvoiceExtractor(Decoder(), TAG)
    assert ex.generation is not None and not ex.constrained  # auto: off
    with pytest.raises(ConfigError, match="cannot constrain its output"):
        InvoiceExtractor(Decoder(), TAG, constrained=True)


# --- a tiny random PaliGemma under xgrammar ---------------------------------------------------------------------------

pytest.importorskip("torch")


def picture(i: int) -> Image.Image:
    image = Image.new("RGB", (96, 96), ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256))
    draw = ImageDraw.Draw(image)
    draw.rectangle([i % 40, (3 * i) % 40, 40 + i % 50, 50 + (2 * i) % 40], fill=((i * 17) % 256, 40, 200))
    return image


@pytest.fixture(scope="module")
def constrained_tag(tiny_model):
    pytest.importorskip("xgrammar")
    budget = output_bound(generation_schema(TAG))  # every constrained output closes within it
    return InvoiceExtractor.from_pretrained(tiny_model, schema=TAG, generation={"max_new_tokens": budget})


@pytest.mark.slow
def test_random_model_always_fits_the_schema_constrained_and_not_unconstrained(tiny_model, constrained_tag):
    ex = constrained_tag
    assert ex.constrained and ex.request.constrained and ex.request.json_schema
    images = [picture(i) for i in range(50)]
    results = ex.extract_batch(images, batch_size=10, progress=False)
    assert sum(r.valid for r in results) == 50, [r.errors for r in results if not r.valid][:3]
    for result in results:
        assert set(result.confidence) >= {"code", "count", "date"}
        assert all(0.0 <= c <= 1.0 for c in result.confidence.values())
    free = InvoiceExtractor(ex.backend, TAG, generation=ex.generation, constrained=False)
    unconstrained = free.extract_batch(images[:10], batch_size=10, progress=False)
    assert sum(r.valid for r in unconstrained) < 10  # random weights: the constraint is what makes them valid
    # Each row of a batch has its own matcher: a batch gives what each image gives alone.
    assert [r.raw_text for r in results[:3]] == [ex.extract(image).raw_text for image in images[:3]]
    assert len(ex.backend._grammars._compiled) == 1  # compiled once for this schema and tokenizer


@pytest.mark.slow
def test_confidence_is_taken_after_the_mask(constrained_tag):
    """A chosen token's probability is over the tokens the grammar allows, not over the whole vocabulary."""
    import torch

    from invoice_vlm.backends.vlm import _logits_processor

    backend = constrained_tag.backend
    grammar = backend._grammar(constrained_tag.request.json_schema)
    vocab = backend.model.get_output_embeddings().weight.shape[0]
    ids = torch.zeros((1, 1), dtype=torch.long)
    masked = _logits_processor(grammar, 1, vocab)
    scores = masked(ids, torch.zeros((1, vocab)))
    allowed = int(torch.isfinite(scores[0]).sum())
    assert 1 <= allowed < vocab // 10  # the document must start with '{'
    assert masked.probs[0][0] == pytest.approx(1 / allowed)
    free = _logits_processor(None, 1, vocab)
    free(ids, torch.zeros((1, vocab)))
    assert free.probs[0][0] == pytest.approx(1 / vocab)
    generation = backend.generate([picture(1)], constrained_tag.request)[0]
    assert generation.text.startswith('{"code": "') and len(generation.char_confidence) == len(
        generation.text
    )


@pytest.mark.slow
def test_constrained_setting_is_saved_and_beams_refused(tiny_model, constrained_tag, tmp_path):
    out = constrained_tag.save_pretrained(tmp_path / "saved")
    assert json.loads((out / "invoice_vlm.json").read_text())["generation"]["constrained"] is None
    off = InvoiceExtractor.from_pretrained(tiny_model, schema="pallet_label", constrained=False)
    off.save_pretrained(tmp_path / "off")
    assert not InvoiceExtractor.from_pretrained(tmp_path / "off").constrained
    with pytest.raises(ConfigError, match="greedy decoding only"):
        InvoiceExtractor.from_pretrained(
            tiny_model, schema=TAG, constrained=True, generation={"num_beams": 2}
        )
    beams = InvoiceExtractor.from_pretrained(tiny_model, schema=TAG, generation={"num_beams": 2})
    assert not beams.constrained  # auto mode leaves beam search unconstrained


@pytest.mark.slow
def test_jump_forward_keeps_a_random_model_valid_alone_and_in_batches(tiny_model):
    """Forced text appended over the cache still leaves every row of a batch inside the schema, and each row is
    finished where its document closes (after a jump, generate no longer knows a row had ended)."""
    pytest.importorskip("xgrammar")
    budget = output_bound(generation_schema(TAG))
    ex = InvoiceExtractor.from_pretrained(
        tiny_model, schema=TAG, generation={"max_new_tokens": budget, "jump_forward": True}
    )
    images = [picture(i) for i in range(12)]
    for batch in (1, 5):
        results = ex.extract_batch(images, batch_size=batch, progress=False)
        assert sum(r.valid for r in results) == 12, [r.errors for r in results if not r.valid][:3]
        assert all(set(r.confidence) >= {"code", "count", "date"} for r in results)


def test_ragged_rows_write_each_row_at_its_own_end_and_hide_padding():
    """Two rows whose prompts differ in length (left padding) feed one and three tokens: each token goes to its row's
    next free column, the padding to the spare column, and each token sees its own row's real columns up to itself."""
    import torch
    from transformers.cache_utils import DynamicCache

    from invoice_vlm.backends._ragged import RaggedLayer, RaggedRows
    from invoice_vlm.backends.vlm import left_padded

    cache = DynamicCache()
    cache.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    positions = torch.tensor([[0, 0, 1], [0, 1, 2]])

    class Model:
        class config:  # a stand-in for a model's config
            _attn_implementation = "sdpa"

    rows = RaggedRows.start(Model(), cache, prompt_mask, positions, budget=5)
    assert rows is not None and isinstance(cache.layers[0], RaggedLayer)
    step = rows.step([[7], [8, 9, 10]])
    layer = cache.layers[0]
    assert left_padded([[7], [8, 9, 10]], pad=0).tolist() == [[0, 0, 7], [8, 9, 10]]  # the step's input_ids
    assert layer.index.tolist() == [[8, 8, 3], [3, 4, 5]]  # 8 = 3 + 5: the spare column
    assert step["position_ids"].tolist() == [[1, 1, 2], [3, 4, 5]]
    visible = step["attention_mask"][:, 0].int().tolist()
    assert visible[0][2] == [0, 1, 1, 1, 0, 0]  # row 0's token: its prompt (not the padding) and itself
    assert visible[1] == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    layer.update(torch.ones(2, 1, 3, 4), torch.ones(2, 1, 3, 4))
    assert layer.keys.shape[-2] == 6  # as long as the longest row
    assert layer.keys[0, 0, :, 0].tolist() == [0, 0, 0, 1, 0, 0]  # row 0 wrote column 3 only
    step = rows.step([[], [11]])  # row 0 finished: padding only
    assert layer.index.tolist() == [[8], [6]]
    assert step["attention_mask"][1, 0, 0].int().tolist() == [1, 1, 1, 1, 1, 1, 1]
    assert step["position_ids"].tolist() == [[2], [6]]
    step = rows.step([[12], [13]])  # one token a row: each sees its own row's columns, not the longer row's
    assert layer.index.tolist() == [[4], [7]]
    assert step["attention_mask"][:, 0, 0].int().tolist() == [[0, 1, 1, 1, 1, 0, 0, 0], [1] * 8]
    assert step["position_ids"].tolist() == [[3], [7]]
    # The cache has 9 columns (the prompt, the budget and the spare): a step past them is refused.
    with pytest.raises(RuntimeError, match="past its cache"):
        rows.step([[], [14]])
    step = rows.step([[15], []])  # the refused step wrote nothing: each row goes on from where it was
    assert layer.index.tolist() == [[5], [8]]
    assert step["position_ids"].tolist() == [[4], [7]]

    # FlashAttention takes no prepared mask: transformers' cache stays.
    Model.config._attn_implementation = "flash_attention_2"
    cache = DynamicCache()
    cache.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)
    assert RaggedRows.start(Model(), cache, prompt_mask, positions, budget=5) is None


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_jump_forward_writes_rows_at_their_own_ends(tiny_model, attention, monkeypatch):
    """A batch, and a page alone, take the ragged cache (each row at its own end, SDPA's boolean mask or eager
    attention's additive one) and write what they write with transformers' cache (masked holes in a batch), with the
    same confidence to float rounding."""
    pytest.importorskip("xgrammar")
    from invoice_vlm.backends import _ragged

    budget = output_bound(generation_schema(TAG))
    ex = InvoiceExtractor.from_pretrained(
        tiny_model, schema=TAG, generation={"max_new_tokens": budget, "jump_forward": True}, evidence=False
    )
    ex.backend.model.set_attn_implementation(attention)
    images = [picture(i) for i in range(5)]
    start = _ragged.RaggedRows.start.__func__
    for batch in (5, 1):
        started: list[object] = []

        def counted(cls, *args, started=started):
            started.append(start(cls, *args))
            return started[-1]

        monkeypatch.setattr(_ragged.RaggedRows, "start", classmethod(counted))
        ragged = ex.extract_batch(images, batch_size=batch, progress=False)
        assert len(started) == 5 // batch and all(rows is not None for rows in started)
        assert all((rows.additive_dtype is not None) is (attention == "eager") for rows in started)  # type: ignore[attr-defined]
        monkeypatch.setattr(_ragged.RaggedRows, "start", classmethod(lambda cls, *args: None))
        kept = ex.extract_batch(images, batch_size=batch, progress=False)
        assert all(r.valid for r in ragged), [r.errors for r in ragged if not r.valid][:3]
        assert [r.raw_text for r in ragged] == [r.raw_text for r in kept]
        for a, b in zip(ragged, kept, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def test_jump_forward_is_a_boolean_and_on_by_default():
    from invoice_vlm import GenerationSettings
    from invoice_vlm.errors import ConfigError

    assert GenerationSettings().jump_forward is True
    with pytest.raises(ConfigError, match="jump_forward must be true or false"):
        GenerationSettings(jump_forward="yes")


def test_a_token_the_grammar_refuses_is_never_written(tiny_model):
    """xgrammar's mask can let through a token its matcher then refuses (long character classes in a field's
    pattern): the decoder masks it and writes the best token the grammar accepts, so the text stays in the schema."""
    pytest.importorskip("xgrammar")
    import torch

    from invoice_vlm.backends.vlm import _grammar_choice

    ex = InvoiceExtractor.from_pretrained(tiny_model, schema=TAG, evidence=False)
    tokenizer = ex.backend.processor.tokenizer
    grammar = ex.backend._grammar(ex.request.json_schema)
    matcher = grammar.matcher()
    opening = tokenizer.convert_tokens_to_ids("{")
    refused = tokenizer.convert_tokens_to_ids("}")  # an object with required keys cannot close at once
    assert not matcher.fork().accept_token(refused)
    scores = torch.zeros(ex.backend.model.get_output_embeddings().weight.shape[0])
    scores[refused], scores[opening] = 5.0, 4.0
    assert _grammar_choice(matcher, scores, refused) == opening
    assert scores[refused] == float("-inf") and scores[opening] == 4.0
    assert not matcher.fork().accept_token(opening)  # the matcher took "{": a second one is refused now
    hopeless = torch.full_like(scores, float("-inf"))
    hopeless[refused] = 1.0
    with pytest.raises(RuntimeError, match="refuses every token"):
        _grammar_choice(grammar.matcher(), hopeless, refused)


def test_forced_text_is_cut_where_a_token_could_run_past_it():
    """`", "items": [` then the model's `{"`: a vocabulary with ` [{"` in one token gets neither ` ` nor `[` forced;
    one without it gets everything up to the last token that nothing longer starts with."""
    from invoice_vlm.backends.vlm import TokenTexts

    pieces = [b'",', b' "', b"items", b'":', b" ", b"[", b"<eos>"]
    forced = b'", "items": ['
    assert TokenTexts([*pieces, b' [{"'], special=[6]).safe_end(forced) == len(forced) - 2
    assert TokenTexts([*pieces, b"[{"], special=[6]).safe_end(forced) == len(forced) - 1
    assert TokenTexts(pieces, special=[6]).safe_end(forced) == len(forced)
    assert (
        TokenTexts([*pieces, b'",x'], special=[6]).safe_end(b'",') == 0
    )  # a token runs on past the whole text
    assert not TokenTexts([b"<eos>"], special=[0]).extends(b"<")  # special tokens are never written as text


def test_forced_tokens_are_the_tokenizers_own_cut_at_the_safe_end_and_computed_once():
    from invoice_vlm.backends.vlm import TokenTexts

    pieces = [b'",', b' "', b"items", b'":', b" ", b"[", b"<eos>", b' [{"', b"x"]
    vocab = {b'", "items": [': [0, 1, 2, 3, 4, 5], b"xy": [8, 8]}  # "xy" as two "x": not the text
    calls: list[str] = []

    class Tokenizer:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            assert not add_special_tokens
            calls.append(text)
            return vocab[text.encode()]

    texts = TokenTexts(pieces, special=[6])
    assert texts.forced('", "items": [', Tokenizer()) == (0, 1, 2, 3)  # ` [` is left to the model (` [{"`)
    assert texts.forced('", "items": [', Tokenizer()) == (0, 1, 2, 3)
    assert texts.forced("xy", Tokenizer()) == ()  # tokens that write other text: the model decodes it
    assert calls == ['", "items": [', "xy"]  # each text tokenised once


class Memo(BaseModel):
    """A schema defined only here: text fields a random model writes up to their bounds, one in a list."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=3, max_length=12)
    tags: list[Annotated[str, StringConstraints(max_length=10)]] = Field(max_length=3)
    remark: str | None = Field(default=None, max_length=16)


MEMO = SchemaSpec(name="memo", model=Memo, prompt="extract memo in JSON format")


def test_text_bounds_are_lifted_by_field_path_and_only_their_upper_bound_changes():
    import re

    from invoice_vlm.constraints import lift_text_bounds

    bounded = generation_schema(MEMO)
    lifted, bounds = lift_text_bounds(bounded)
    assert bounds == {("title",): 12, ("tags", "[]"): 10, ("remark",): 16}

    def patterns(node: dict[str, Any]) -> dict[str, str]:
        title, tags = node["properties"]["title"], node["properties"]["tags"]["items"]
        remark = next(b for b in node["properties"]["remark"]["anyOf"] if b.get("type") == "string")
        return {"title": title["pattern"], "tags": tags["pattern"], "remark": remark["pattern"]}

    before, after = patterns(bounded), patterns(lifted)
    for field, bound in (("title", 12), ("tags", 10), ("remark", 16)):
        strict, free = (re.compile(p[field].strip("^$")) for p in (before, after))
        for text in (
            "a",
            "ab",
            "a b",
            " a",
            "a ",
            "é" * bound,
            "x" * (bound - 1) + " ",
            "x y" * (bound // 3),
        ):
            assert bool(free.fullmatch(text)) == bool(strict.fullmatch(text)), (
                field,
                text,
            )  # within the bound
        for text in ("x" * (bound + 1), "é y" * bound):
            assert free.fullmatch(text) and not strict.fullmatch(text), (field, text)
    # Everything but the text fields' patterns is as it was.
    assert json.dumps({**bounded, "properties": {}}) == json.dumps({**lifted, "properties": {}})
    assert bounded["properties"]["tags"]["maxItems"] == lifted["properties"]["tags"]["maxItems"] == 3


def test_json_cursor_knows_the_field_and_length_of_the_open_string_however_the_bytes_arrive():
    import random

    from invoice_vlm.backends._grammar import JsonCursor

    bounds = {("vendor", "name"): 10, ("vendor", "tags", "[]"): 4, ("lines", "[]", "text"): 7, ('we"ird',): 3}
    document = (
        '{"vendor": {"name": "Acmé", "tags": ["a b", "cd"]}, "lines": [{"text": "x"}, {"text": "yz"}], '
        '"we\\"ird": "zz", "n": 1.5, "free": "q"}'
    ).encode()

    def states(chunks: list[bytes]) -> list[tuple[bool, int | None, int]]:
        cursor, seen = JsonCursor(bounds), []
        for chunk in chunks:
            cursor.feed(chunk)
            seen.append((cursor.in_string, cursor.bound, cursor.length))
        return seen

    bytewise = states([bytes([b]) for b in document])
    expected = {  # after this prefix: in a string, its field's bound, bytes in it
        '{"vendor": {"name": "Acm': (True, 10, 3),
        '{"vendor": {"name": "Acmé': (True, 10, 5),  # é is two bytes
        '{"vendor": {"na': (True, None, 2),  # a key has no bound
        '{"vendor": {"name": "Acmé", "tags": ["a b", "c': (True, 4, 1),
        '{"vendor": {"name": "Acmé", "tags": ["a b"': (False, None, 3),
        '{"vendor": {"name": "Acmé", "tags": ["a b", "cd"]}, "lines": [{"text": "x"}, {"text": "y': (
            True,
            7,
            1,
        ),
    }
    for prefix, state in expected.items():
        assert bytewise[len(prefix.encode()) - 1] == state, prefix
    weird = document.index(b'"zz"') + 2
    assert bytewise[weird - 1] == (True, 3, 1)  # an escaped quote in a key does not end it
    assert bytewise[document.index(b'"q"') + 1] == (True, None, 1)  # a field without a bound
    rng = random.Random(0)
    for _ in range(20):  # the same states wherever tokens cut the bytes
        cuts = sorted(rng.sample(range(1, len(document)), 30))
        chunks = [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)], strict=True)]
        assert states(chunks) == [bytewise[end - 1] for end in [*cuts, len(document)]]


def test_a_token_that_opens_a_value_counts_what_it_writes_in_it():
    from invoice_vlm.backends._grammar import _opened

    assert _opened(b"abc") == 0
    assert _opened(b'", "abc') == 3  # closes one value, opens the next
    assert _opened(b'"key": ') == 2  # what follows a closing quote is not in a string, but counted anyway
    assert _opened(b'"ab"]') == 2  # a whole value inside the token
    # A key between two quotes, followed by a colon, is no value; whether ": " is inside a string depends on
    # where the token starts, so it counts.
    assert _opened(b'{"description": "x') == 2


@pytest.mark.slow
@pytest.mark.parametrize("jump_forward", [True, False])
def test_masks_away_from_text_bounds_come_from_the_lifted_grammar_and_change_nothing(
    tiny_model, jump_forward, monkeypatch
):
    """A random model writes text fields up to their bounds: near a bound the bounded matcher masks, elsewhere the
    lifted one does, and what is written and its confidence are what the bounded grammar alone gives."""
    pytest.importorskip("xgrammar")
    import xgrammar

    from invoice_vlm.backends import _grammar

    budget = output_bound(generation_schema(MEMO))
    ex = InvoiceExtractor.from_pretrained(
        tiny_model,
        schema=MEMO,
        generation={"max_new_tokens": budget, "jump_forward": jump_forward},
        evidence=False,
    )
    grammar = ex.backend._grammar(ex.request.json_schema)
    assert grammar.lifted is not None, "this tokenizer's tokens open values longer than Memo's bounds"
    images = [picture(i) for i in range(6)]
    deciding = _grammar.LiftedMatcher._deciding
    used: list[bool] = []

    def counted(self):
        chosen = deciding(self)
        used.append(chosen is self._lifted)
        return chosen

    monkeypatch.setattr(_grammar.LiftedMatcher, "_deciding", counted)
    for batch in (1, 3):
        used.clear()
        lifted = ex.extract_batch(images, batch_size=batch, progress=False)
        assert any(used) and not all(used)  # both grammars masked
        with monkeypatch.context() as alone:
            alone.setattr(
                _grammar.SchemaGrammar, "matcher", lambda self: xgrammar.GrammarMatcher(self.bounded)
            )
            bounded = ex.extract_batch(images, batch_size=batch, progress=False)
        assert all(r.valid for r in lifted), [r.errors for r in lifted if not r.valid][:3]
        assert [r.raw_text for r in lifted] == [r.raw_text for r in bounded]
        for a, b in zip(lifted, bounded, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-6)
    assert any(len(r.data.title) == 12 or 10 in map(len, r.data.tags) for r in lifted)  # bounds were reached


def test_the_longest_text_token_sets_how_near_a_bound_is_and_long_openings_keep_the_bounded_grammar():
    """A vocabulary written here: the longest token that can sit in text (nine spaces; a run of newlines cannot)
    sets the reach; a token that opens a value with more than the shortest field's bound turns lifting off."""
    xgrammar = pytest.importorskip("xgrammar")
    from invoice_vlm.backends._grammar import JsonCursor, LiftedMatcher, SchemaGrammar, TokenBytes

    schema = generation_schema(MEMO)  # bounds 12, 10 and 16 characters

    def grammar(*extra: str) -> SchemaGrammar:
        vocab = [
            '{"',
            '"',
            '": ',
            ", ",
            "}",
            "]",
            "[",
            "a",
            "b c",
            " " * 9,
            "\n" * 30,
            '"xyzzy',
            *extra,
            "</s>",
        ]
        info = xgrammar.TokenizerInfo(vocab, stop_token_ids=[len(vocab) - 1])
        compiler = xgrammar.GrammarCompiler(info)
        return SchemaGrammar(compiler, schema, TokenBytes.of([v.encode() for v in vocab], [len(vocab) - 1]))

    lifted = grammar()
    assert lifted.reach == 9 and lifted.lifted is not None
    assert isinstance(lifted.matcher(), LiftedMatcher)
    cursor = JsonCursor(lifted.bounds)
    cursor.feed(b'{"title": "abc')
    assert not cursor.near_bound(lifted.reach)  # 3 + 9 bytes can reach 12 characters, not pass them
    cursor.feed(b"d")
    assert cursor.near_bound(lifted.reach)
    bounded = grammar('", "' + "y" * 11)  # closes a tag and writes 11 bytes into the next: past its 10
    assert bounded.lifted is None and isinstance(bounded.matcher(), xgrammar.GrammarMatcher)
