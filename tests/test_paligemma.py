"""The real PaliGemma code path, on a tiny random model built offline."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image, ImageDraw

from invoice_vlm import InvoiceExtractor
from invoice_vlm.config import CONFIG_NAME
from invoice_vlm.errors import ConfigError, ModelLoadError

pytestmark = pytest.mark.slow  # tiny real models or the OCR engine end to end

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

PROMPT = "extract Document data in JSON format"


def doc(i: int) -> Image.Image:
    img = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([10 + 20 * i, 10, 60 + 20 * i, 60], fill=(40 * i % 255, 90, 200))
    draw.text((10, 80), f"P2481273609{i}", fill="black")
    return img


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    """A LoRA adapter made with peft directly (random B, so it changes the output) and saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    base = PaliGemmaForConditionalGeneration.from_pretrained(tiny_model)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False
    )
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(out)
    return out


def plain_greedy(base_path, adapter_path, image, max_new_tokens=24):
    from peft import PeftModel
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(base_path)
    model = PaliGemmaForConditionalGeneration.from_pretrained(base_path)
    if adapter_path is not None:
        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    inputs = processor(images=image, text="<image>" + PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = processor.tokenizer.eos_token_id
    ids = ids[: ids.index(eos)] if eos in ids else ids
    return processor.tokenizer.decode(ids, skip_special_tokens=True)


def test_tiny_model_loads_with_plain_transformers(tiny_model):
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = PaliGemmaForConditionalGeneration.from_pretrained(tiny_model)
    assert type(processor).__name__ == "PaliGemmaProcessor"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert {p.name for p in tiny_model.iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not list(tiny_model.glob("*.bin"))
    # The tokenizer is compact: a full pallet label is a few hundred tokens, digits one token each.
    from .test_parsing import PALLET

    ids = processor.tokenizer(json.dumps(PALLET))["input_ids"]
    assert len(ids) < 400
    assert processor.tokenizer.tokenize("1234") == ["1", "2", "3", "4"]
    # Training inputs as PaliGemma expects them: prefix, then suffix + <eos>, token types 0/1.
    batch = processor(images=doc(0), text="<image>" + PROMPT, suffix="{}", return_tensors="pt")
    assert batch["input_ids"][0, -1].item() == processor.tokenizer.eos_token_id
    suffix_len = (
        len(processor.tokenizer("{}", add_special_tokens=False)["input_ids"]) + 1
    )  # the suffix and <eos>
    assert batch["token_type_ids"][0].tolist().count(1) == suffix_len


def test_build_is_deterministic(tmp_path, tiny_model):
    from safetensors.torch import load_file

    from invoice_vlm.testing import build_tiny_paligemma

    from .conftest import TEST_SEED

    again = build_tiny_paligemma(tmp_path / "again", seed=TEST_SEED)
    a, b = load_file(tiny_model / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_model / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_adapter_alone_resolves_base_and_matches_plain_peft(tiny_model, adapter_dir):
    ex = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 24}, constrained=False
    )
    assert ex.backend.base_model == str(tiny_model)
    assert ex.backend.adapter == str(adapter_dir)
    assert ex.backend.device == "cpu" and ex.backend.dtype == torch.float32
    for i in range(2):
        ours = ex.extract(doc(i))
        assert ours.raw_text == plain_greedy(tiny_model, adapter_dir, doc(i))
        assert not ours.valid  # random weights: not a pallet label, but reported, not raised
    # The adapter is applied: without it the base model says something else.
    assert plain_greedy(tiny_model, None, doc(0)) != ex.extract(doc(0)).raw_text


def test_base_plus_adapter_argument(tiny_model, adapter_dir):
    a = InvoiceExtractor.from_pretrained(
        tiny_model, adapter=adapter_dir, schema="pallet_label", generation={"max_new_tokens": 16}
    )
    b = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 16}
    )
    assert a.extract(doc(3)).raw_text == b.extract(doc(3)).raw_text


def test_extract_batch_agrees_and_confidence_is_reported(tiny_model, adapter_dir):
    ex = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 20}
    )
    docs = [doc(i) for i in range(3)]
    batch = ex.extract_batch(docs, batch_size=2, progress=False)
    singles = [ex.extract(d) for d in docs]
    assert [r.raw_text for r in batch] == [r.raw_text for r in singles]
    gen = ex.backend.generate([docs[0]], ex.request)[0]
    assert gen.char_confidence is not None and len(gen.char_confidence) == len(gen.text)
    assert all(0.0 <= c <= 1.0 for c in gen.char_confidence)


def test_save_and_reload_give_identical_output(tiny_model, adapter_dir, tmp_path):
    ex = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 20}
    )
    out = ex.save_pretrained(tmp_path / "saved")
    names = {p.name for p in out.iterdir()}
    assert {CONFIG_NAME, "adapter_model.safetensors", "adapter_config.json", "processor_config.json"} <= names
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    saved = json.loads((out / CONFIG_NAME).read_text())
    assert saved["generation"] == {
        "max_new_tokens": 20,
        "min_new_tokens": 0,
        "num_beams": 1,
        "constrained": None,
        "jump_forward": True,
    }
    assert saved["base_model"] == str(tiny_model)
    again = InvoiceExtractor.from_pretrained(out)
    assert again.prompt == PROMPT and again.schema.name == "pallet_label"
    assert again.generation.max_new_tokens == 20
    assert [again.extract(doc(i)).raw_text for i in range(2)] == [
        ex.extract(doc(i)).raw_text for i in range(2)
    ]
    with pytest.raises(ConfigError):
        InvoiceExtractor.from_pretrained(out, prompt="something else")


def test_pickled_adapter_is_refused(tiny_model, adapter_dir, tmp_path):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(adapter_dir, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match="only safetensors"):
        InvoiceExtractor.from_pretrained(pickled, schema="pallet_label")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "./no/such/dir"}, "does not exist here"),
        ({"model": "x", "device": "cuda:0"}, "no CUDA"),
        ({"model": "x", "dtype": "int8"}, "Unknown dtype"),
    ],
)
def test_load_errors_are_clear(kwargs, match):
    if "cuda" in str(kwargs.get("device")) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match=match):
        InvoiceExtractor.from_pretrained(schema="pallet_label", **kwargs)


def test_directory_without_weights_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="Cannot load the processor"):
        InvoiceExtractor.from_pretrained(tmp_path, schema="pallet_label")


@pytest.mark.gpu
def test_cuda_defaults_to_bfloat16(adapter_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ex = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 8}
    )
    assert ex.backend.device == "cuda" and ex.backend.dtype == torch.bfloat16
    assert isinstance(ex.extract(doc(0)).raw_text, str)


def test_char_confidence_is_linear_and_exact(tiny_model):
    """The incremental mapping gives what decoding every prefix gives, byte-fallback characters included."""
    from transformers import AutoProcessor

    from invoice_vlm.backends.paligemma import char_confidence

    tokenizer = AutoProcessor.from_pretrained(tiny_model).tokenizer
    text = '{"destination": "Société Générale, 12 € — Zürich", "route": "V183-RZ-924"}'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any(
        tokenizer.convert_ids_to_tokens(i).startswith("<0x") for i in ids
    )  # bytes, not only whole tokens
    probs = [0.5 + (i % 5) / 10 for i in range(len(ids))]
    decoded, scores = char_confidence(tokenizer, ids, probs)
    owners: list[int] = []  # for every byte of the text, the token that wrote it
    for k, piece in enumerate(tokenizer.convert_ids_to_tokens(ids)):
        is_byte = piece.startswith("<0x") and piece.endswith(">")
        written = bytes([int(piece[3:-1], 16)]) if is_byte else piece.replace("\u2581", " ").encode()
        owners.extend([k] * len(written))
    expected, at = [], 0
    for char in text:  # a character's score: the lowest probability among the tokens that wrote its bytes
        width = len(char.encode())
        expected.append(min(probs[k] for k in owners[at : at + width]))
        at += width
    assert decoded == text and at == len(owners)
    assert list(scores) == pytest.approx(expected)


def test_merged_adapter_decodes_like_the_unmerged_one_and_saves_the_adapter(
    tiny_model, adapter_dir, tmp_path
):
    merged = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 24}, constrained=False
    )
    plain = InvoiceExtractor.from_pretrained(
        adapter_dir,
        schema="pallet_label",
        generation={"max_new_tokens": 24},
        constrained=False,
        merge_adapter=False,
    )
    lora = [
        m for n, m in merged.backend.model.named_modules() if n.endswith("q_proj") and hasattr(m, "merged")
    ]
    assert lora and all(m.merged for m in lora)
    docs = [doc(i) for i in range(3)]
    assert [r.raw_text for r in merged.extract_batch(docs, progress=False)] == [
        r.raw_text for r in plain.extract_batch(docs, progress=False)
    ]
    with torch.inference_mode():  # the logits agree within float tolerance, not only the greedy tokens
        inputs = merged.backend.processor(images=docs[0], text="<image>" + PROMPT, return_tensors="pt")
        a = merged.backend.model(**inputs).logits
        b = plain.backend.model(**inputs).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    out = merged.save_pretrained(tmp_path / "saved")
    from safetensors.torch import load_file

    assert (
        load_file(out / "adapter_model.safetensors").keys()
        == load_file(adapter_dir / "adapter_model.safetensors").keys()
    )
    assert InvoiceExtractor.from_pretrained(out).extract(docs[1]).raw_text == plain.extract(docs[1]).raw_text


PEAK_SCRIPT = """
import sys, threading, time
from PIL import Image
from invoice_vlm import InvoiceExtractor

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

tokens = int(sys.argv[2])
ex = InvoiceExtractor.from_pretrained(sys.argv[1], schema="pallet_label", constrained=False,
                                      generation={"max_new_tokens": tokens, "min_new_tokens": tokens})
pages = [Image.new("RGB", (64, 64), (i * 40, 90, 200)) for i in range(4)]
ex.extract_batch(pages[:1], progress=False)  # warm up
top = base = rss()
done = False
def watch():
    global top
    while not done:
        top = max(top, rss())
        time.sleep(0.001)
t = threading.Thread(target=watch); t.start()
outputs = ex.backend.generate(pages, ex.request)
done = True; t.join()
assert [g.num_tokens for g in outputs] == [tokens] * 4 and all(g.char_confidence is not None for g in outputs)
print(max(top, rss()) - base)
"""


def test_peak_memory_does_not_grow_with_vocabulary_times_output_length(tiny_model, tmp_path):
    """Confidence keeps one number per token: 4 pages x 96 tokens over a 200k vocabulary would be 300 MB of scores."""
    import subprocess
    import sys

    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(tiny_model)
    known = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(200_000, mean_resizing=False)
    with (
        torch.no_grad()
    ):  # the new tokens score 0: scored every step, never chosen (the tokenizer lacks them)
        model.get_input_embeddings().weight[known:] = 0.0
    big = tmp_path / "big-vocab"
    model.save_pretrained(big)
    AutoProcessor.from_pretrained(tiny_model).save_pretrained(big)
    peaks = {}
    for tokens in (8, 96):
        # Blocks of 128 KB and more come from mmap and go back at once, so resident memory tracks live tensors
        # (glibc would otherwise keep freed vocabulary-sized buffers in its heap, and the peak would measure that).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        run = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(big), str(tokens)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[tokens] = float(run.stdout.split()[-1])
    scores_mb = 4 * (96 - 8) * 200_000 * 4 / 2**20  # what keeping the vocabulary's scores would add: 268 MB
    assert peaks[96] - peaks[8] < scores_mb / 5, peaks


def test_compiled_static_cache_decodes_the_same(tiny_model):
    settings = {"max_new_tokens": 10}
    plain = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", generation=settings, constrained=False
    )
    compiled = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", generation=settings, constrained=False, compile=True
    )
    docs = [doc(i) for i in range(2)]
    expected = [r.raw_text for r in plain.extract_batch(docs, batch_size=2, progress=False)]
    assert [r.raw_text for r in compiled.extract_batch(docs, batch_size=2, progress=False)] == expected


def test_char_confidence_without_sentencepiece_pieces_decodes_incrementally(tiny_model):
    """A tokenizer whose token strings do not spell its text still gets exact scores, by incremental decoding."""
    from transformers import AutoProcessor

    from invoice_vlm.backends.paligemma import char_confidence

    real = AutoProcessor.from_pretrained(tiny_model).tokenizer

    class Opaque:
        all_special_ids = real.all_special_ids

        def decode(self, ids, skip_special_tokens=True):
            return real.decode(ids, skip_special_tokens=skip_special_tokens)

        def convert_ids_to_tokens(self, token_id):
            return "?"

    text = '{"route": "V183-RZ-924", "dock": "D7"}'
    ids = real(text, add_special_tokens=False)["input_ids"]
    probs = [0.3 + (i % 7) / 10 for i in range(len(ids))]
    assert char_confidence(Opaque(), ids, probs) == char_confidence(real, ids, probs)


def test_a_generation_dict_changes_saved_settings_key_by_key(tiny_model, tmp_path):
    saved = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", generation={"max_new_tokens": 20}, constrained=False
    ).save_pretrained(tmp_path / "saved")
    again = InvoiceExtractor.from_pretrained(saved, generation={"max_new_tokens": 7})
    assert (
        again.generation.max_new_tokens == 7 and again.generation.constrained is False
    )  # kept from the file
