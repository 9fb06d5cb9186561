"""The vllm backend: request building, LoRA handling, result mapping and errors, on a fake engine (CPU), and the real
engine on a GPU (``gpu``)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from invoice_vlm import InvoiceExtractor
from invoice_vlm.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    ModelLoadError,
    install_command,
)

from . import fake_vllm
from .test_paligemma import doc

pytestmark = pytest.mark.slow  # tiny real models

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


DOCS = [doc(i) for i in range(3)]


def lora(tiny_model, out, **config):
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    base = PaliGemmaForConditionalGeneration.from_pretrained(tiny_model)
    torch.manual_seed(1)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": r".*language_model.*\.(q_proj|v_proj)", **config}
    model = get_peft_model(base, LoraConfig(init_lora_weights=False, **settings))
    if config.get("modules_to_save"):  # a trained projector: make it differ from the base's
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "modules_to_save" in name:
                    param.add_(torch.randn_like(param) * 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    return lora(tiny_model, tmp_path_factory.mktemp("vllm") / "lora")


@pytest.fixture(scope="module")
def projector_adapter(tiny_model, tmp_path_factory):
    """An adapter that also trains the projector whole (``train_projector``): vLLM cannot apply it as LoRA."""
    return lora(
        tiny_model, tmp_path_factory.mktemp("vllm") / "projector", modules_to_save=["multi_modal_projector"]
    )


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("INVOICE_VLM_CACHE", str(tmp_path / "cache"))
    return fake_vllm.install(monkeypatch)


def pair(model, adapter=None, **kwargs):
    """The transformers backend and the vllm backend on the same model and settings."""
    options = {"schema": "pallet_label", "generation": {"max_new_tokens": 24}, "constrained": False, **kwargs}
    reference = InvoiceExtractor.from_pretrained(model, adapter=adapter, **options)
    served = InvoiceExtractor.from_pretrained(model, adapter=adapter, backend="vllm", **options)
    return reference, served


def assert_same(reference, served, images=DOCS):
    for ours, theirs in zip(reference.extract_batch(images), served.extract_batch(images), strict=True):
        assert theirs.raw_text == ours.raw_text
        assert theirs.confidence.keys() == ours.confidence.keys()
        for key, value in ours.confidence.items():
            assert theirs.confidence[key] == pytest.approx(value, abs=1e-3)


def test_import_loads_neither_vllm_nor_torch_for_the_backend_registry():
    code = (
        "import sys, invoice_vlm; from invoice_vlm.backends import get_backend; get_backend('vllm'); "
        "print(sorted(m for m in ('vllm', 'torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_vllm_one_line_says_what_to_install(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(MissingDependencyError) as info:
        InvoiceExtractor.from_pretrained(tiny_model, schema="pallet_label", backend="vllm")
    assert install_command("vllm") in str(info.value) and "\n" not in str(info.value)


def test_cli_without_vllm_exits_2_with_one_line(tiny_model, tmp_path):
    image = tmp_path / "a.png"
    DOCS[0].save(image)
    code = (
        "import sys; sys.modules['vllm'] = None; from invoice_vlm.cli import main; "
        f"sys.exit(main(['extract', {str(image)!r}, '--model', {str(tiny_model)!r}, '--backend', 'vllm', "
        "'--schema', 'pallet_label']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert install_command("vllm") in out.stderr and "Traceback" not in out.stderr


def test_without_a_gpu_one_line_says_so(tiny_model, monkeypatch):
    fake_vllm.install(monkeypatch, cuda=False)
    with pytest.raises(ModelLoadError, match="needs an NVIDIA or AMD GPU.*--backend transformers") as info:
        InvoiceExtractor.from_pretrained(tiny_model, schema="pallet_label", backend="vllm")
    assert "\n" not in str(info.value)
    for device in ("cpu", "cuda:1"):
        with pytest.raises(ModelLoadError, match=f"CUDA_VISIBLE_DEVICES \\(device='{device}'"):
            InvoiceExtractor.from_pretrained(tiny_model, schema="pallet_label", backend="vllm", device=device)
    assert not fake_vllm.CALLS.engines  # refused before any engine started


def test_prompt_tokens_equal_the_processors_and_vllm_inserts_the_image(tiny_model, fake):
    from transformers import AutoProcessor

    _, served = pair(tiny_model)
    backend = served.backend
    processor = AutoProcessor.from_pretrained(tiny_model)
    trained = processor(images=DOCS[0], text="<image>" + served.prompt)["input_ids"][0]
    assert backend.prompt_token_ids(served.prompt) == list(trained)
    served.extract(DOCS[0])
    engine = fake_vllm.CALLS.engines[-1]
    (prompts, params, lora_request), *_ = engine.requests
    given = prompts[0]["prompt_token_ids"]
    n = processor.image_seq_length
    assert given == list(trained)[n + 1 :]  # what follows the image block and its <bos>
    assert engine._prompt(prompts[0]) == list(trained)  # vLLM's layout, with the engine's tokenizer
    assert engine.tokenizer.add_bos_token is False  # the tokenizer copy vLLM gets adds no <bos> of its own
    assert params.temperature == 0.0 and params.max_tokens == 24 and params.logprobs == 0
    assert params.stop_token_ids == [processor.tokenizer.eos_token_id] and lora_request is None
    assert engine.kwargs["logprobs_mode"] == "processed_logprobs" and "enable_lora" not in engine.kwargs


def test_a_prompt_vllm_lays_out_differently_is_an_error(tiny_model, fake):
    _, served = pair(tiny_model)
    engine = fake_vllm.CALLS.engines[-1]
    laid_out = engine._prompt
    bos = engine.tokenizer.bos_token_id
    engine._prompt = lambda prompt: [bos, *laid_out(prompt)]  # vLLM's layout for a tokenizer that adds <bos>
    with pytest.raises(BackendError, match=r"first difference at token 0 .*add no <bos>"):
        served.backend.generate(DOCS[:1], served.request)
    (result,) = served.extract_batch(DOCS[:1])  # in a batch: a failed result naming it, nothing invented
    assert not result.valid and "first difference" in result.errors[0]


def test_base_model_decodes_as_the_transformers_backend(tiny_model, fake):
    reference, served = pair(tiny_model)
    assert served.backend_name == "vllm" and served.info.base_model == str(tiny_model)
    assert_same(reference, served)


def test_constrained_decoding_uses_the_same_grammar(tiny_model, fake):
    pytest.importorskip("xgrammar")
    # vLLM decodes token by token; so does the reference here (jump-forward can split a random model's forced text
    # differently, see docs/constrained.md).
    reference, served = pair(
        tiny_model, constrained=True, generation={"max_new_tokens": 40, "jump_forward": False}
    )
    assert served.constrained
    assert_same(reference, served, DOCS[:2])
    (_, params, _), *_ = fake_vllm.CALLS.engines[-1].requests
    grammar = params.structured_outputs.grammar
    assert (
        "root ::=" in grammar and '", "' in grammar and '": "' in grammar
    )  # the training separators, not compact
    served.extract_batch(DOCS[:2])
    assert len(served.backend._grammars) == 1  # built once per schema


def test_lora_adapter_is_sent_as_a_lora_request(tiny_model, adapter_dir, fake):
    reference, served = pair(tiny_model, adapter=adapter_dir)
    engine = fake_vllm.CALLS.engines[-1]
    assert engine.model_path == str(tiny_model) and served.backend.merged is None
    assert engine.kwargs["enable_lora"] and engine.kwargs["max_lora_rank"] == 8
    assert "enable_tower_connector_lora" not in engine.kwargs
    assert_same(reference, served)
    request = engine.requests[-1][2]
    assert request.lora_path == str(adapter_dir.resolve()) and request.lora_int_id == 1


def test_adapter_alone_resolves_its_base(adapter_dir, tiny_model, fake):
    served = InvoiceExtractor.from_pretrained(adapter_dir, schema="pallet_label", backend="vllm")
    assert fake_vllm.CALLS.engines[-1].model_path == str(tiny_model)
    assert served.backend.adapter == str(adapter_dir)


def test_vision_tower_lora_starts_the_engine_for_it(tiny_model, tmp_path, fake):
    adapter = lora(
        tiny_model, tmp_path / "vision", target_modules=r".*(language_model|vision_tower).*\.(q_proj|v_proj)"
    )
    reference, served = pair(tiny_model, adapter=adapter)
    assert fake_vllm.CALLS.engines[-1].kwargs["enable_tower_connector_lora"] is True
    assert_same(reference, served, DOCS[:2])


def test_adapter_vllm_cannot_apply_is_merged_once_and_says_why(tiny_model, projector_adapter, fake, tmp_path):
    with pytest.warns(UserWarning, match=r"merged copy.*multi_modal_projector: modules_to_save"):
        reference, served = pair(tiny_model, adapter=projector_adapter, dtype="float32")
    merged = served.backend.merged
    engine = fake_vllm.CALLS.engines[-1]
    assert merged is not None and engine.model_path == str(merged) and "enable_lora" not in engine.kwargs
    assert (merged / "model.safetensors").is_file() and (merged / "invoice_vlm_complete").is_file()
    assert_same(reference, served)
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="merged copy"):
        again = InvoiceExtractor.from_pretrained(
            projector_adapter, schema="pallet_label", backend="vllm", dtype="float32"
        )
    assert again.backend.merged == merged and (merged / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(
        ModelLoadError, match=r"cannot apply adapter .* modules_to_save.*Drop merge_adapter=False"
    ):
        InvoiceExtractor.from_pretrained(
            projector_adapter, schema="pallet_label", backend="vllm", merge_adapter=False
        )


def test_merge_adapter_true_serves_a_merged_copy_of_a_plain_lora(tiny_model, adapter_dir, fake):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        served = InvoiceExtractor.from_pretrained(
            tiny_model,
            adapter=adapter_dir,
            schema="pallet_label",
            backend="vllm",
            dtype="float32",
            merge_adapter=True,
        )
    assert served.backend.merged is not None and served.backend.lora_request is None
    reference = InvoiceExtractor.from_pretrained(
        tiny_model, adapter=adapter_dir, schema="pallet_label", generation={"jump_forward": False}
    )
    assert_same(reference, served)


def test_saved_directories_move_between_backends(tiny_model, adapter_dir, fake, tmp_path):
    reference = InvoiceExtractor.from_pretrained(
        adapter_dir, schema="pallet_label", generation={"max_new_tokens": 24}, constrained=False
    )
    saved = reference.save_pretrained(tmp_path / "saved")
    served = InvoiceExtractor.from_pretrained(saved, backend="vllm")
    assert served.generation.max_new_tokens == 24 and served.constrained is False
    assert_same(reference, served, DOCS[:2])
    again = served.save_pretrained(tmp_path / "from-vllm")
    assert json.loads((again / "invoice_vlm.json").read_text())["backend"] == "vllm"
    assert (again / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors"
    ).read_bytes()
    back = InvoiceExtractor.from_pretrained(again, backend="paligemma")
    assert back.extract(DOCS[0]).raw_text == reference.extract(DOCS[0]).raw_text
    plain = InvoiceExtractor.from_pretrained(again)  # the saved backend by default
    assert plain.backend_name == "vllm"
    with pytest.raises(ConfigError, match="saved by backend 'vllm', which 'ocr' cannot load"):
        InvoiceExtractor.from_pretrained(again, backend="ocr")


def test_a_finetune_directory_with_a_trained_projector_serves_merged(
    tiny_model, four_documents, fake, tmp_path
):
    """finetune(train_projector=True) saves the projector whole: the vllm backend serves it merged, reading as trained."""
    pytest.importorskip("trl")
    from invoice_vlm.data import load
    from invoice_vlm.finetune import FinetuneConfig, finetune

    out = finetune(
        FinetuneConfig(
            base_model=str(tiny_model),
            data=str(four_documents),
            schema="pallet_label",
            output_dir=str(tmp_path / "ft"),
            num_train_epochs=1,
            train_projector=True,
            per_device_train_batch_size=4,
        )
    ).output_dir
    reference = InvoiceExtractor.from_pretrained(out, constrained=False)
    with pytest.warns(UserWarning, match="multi_modal_projector: modules_to_save"):
        served = InvoiceExtractor.from_pretrained(out, backend="vllm", dtype="float32", constrained=False)
    assert served.prompt == reference.prompt and served.generation == reference.generation
    images = [row["image"] for row in load(four_documents, "pallet_label")["train"]]
    assert_same(reference, served, images[:2])


def test_base_model_saves_its_weights(tiny_model, fake, tmp_path):
    _, served = pair(tiny_model)
    saved = served.save_pretrained(tmp_path / "base")
    assert (saved / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert (
        InvoiceExtractor.from_pretrained(saved, backend="paligemma").extract(DOCS[0]).raw_text
        == served.extract(DOCS[0]).raw_text
    )


def test_beams_are_refused_in_one_line(tiny_model, fake):
    served = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", backend="vllm", generation={"num_beams": 2}, constrained=False
    )
    with pytest.raises(ValueError, match="decodes greedily; num_beams=2 needs the paligemma backend"):
        served.extract(DOCS[0])
    assert not fake_vllm.CALLS.engines[-1].requests  # refused before the engine was asked
    with pytest.raises(ModelLoadError, match="decodes greedily; num_beams=2"):
        type(served.backend).from_pretrained(tiny_model, generation={"num_beams": 2})
    # jump_forward (on by default) is the transformers backend's: vLLM decodes token by token and takes it as is.
    assert type(served.backend).from_pretrained(tiny_model, generation={"jump_forward": True}) is not None


def test_engine_options_reach_vllm_and_unknown_ones_fail_clearly(tiny_model, fake):
    served = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", backend="vllm", engine_options={"gpu_memory_utilization": 0.5}
    )
    assert fake_vllm.CALLS.engines[-1].kwargs["gpu_memory_utilization"] == 0.5 and served.backend.engine
    with pytest.raises(ModelLoadError, match="vLLM could not start .*unexpected keyword arguments"):
        InvoiceExtractor.from_pretrained(
            tiny_model, schema="pallet_label", backend="vllm", engine_options={"gpu_memory_fraction": 0.5}
        )


def test_cut_off_output_is_reported_not_completed(tiny_model, fake):
    served = InvoiceExtractor.from_pretrained(
        tiny_model, schema="pallet_label", backend="vllm", generation={"max_new_tokens": 3}, constrained=False
    )
    (generation,) = served.backend.generate(DOCS[:1], served.request)
    assert generation.num_tokens == 3 and len(generation.char_confidence) == len(generation.text)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["paligemma", "idefics3", "gemma3", "qwen_vl"])
def test_real_vllm_decodes_as_the_transformers_backend(tmp_path, family):
    """With vllm and a GPU: each family's tiny model with a LoRA adapter, saved locally, gives the transformers
    backend's greedy output (vLLM lays out the prompt itself, and the backend checks it against the processor's)."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from invoice_vlm.families import get_family
    from invoice_vlm.testing import build_tiny_model

    from .test_families import _language_lora

    model = build_tiny_model(family, tmp_path / "model", seed=0)
    adapter = _language_lora(model, get_family(family), tmp_path / "lora")
    options = {"schema": "pallet_label", "generation": {"max_new_tokens": 24}, "constrained": False}
    reference = InvoiceExtractor.from_pretrained(adapter, dtype="float32", merge_adapter=False, **options)
    served = InvoiceExtractor.from_pretrained(
        adapter,
        backend="vllm",
        dtype="float32",
        engine_options={"gpu_memory_utilization": 0.3, "max_model_len": 2048, "enforce_eager": True},
        **options,
    )
    for ours, theirs in zip(reference.extract_batch(DOCS), served.extract_batch(DOCS), strict=True):
        assert theirs.raw_text == ours.raw_text
    pytest.importorskip("xgrammar")
    settings = {"generation": {"max_new_tokens": 40, "jump_forward": False}, "constrained": True}
    constrained = InvoiceExtractor(served.backend, "pallet_label", **settings)
    expected = InvoiceExtractor(reference.backend, "pallet_label", **settings)
    for ours, theirs in zip(expected.extract_batch(DOCS), constrained.extract_batch(DOCS), strict=True):
        assert theirs.raw_text == ours.raw_text


def test_florence2_is_refused_with_the_backend_that_runs_it(fake, tmp_path):
    from invoice_vlm.testing import build_tiny_florence2

    florence = build_tiny_florence2(tmp_path / "florence")
    with pytest.raises(
        ModelLoadError, match=r"Florence-2 model, which vLLM does not serve.*--backend transformers"
    ):
        InvoiceExtractor.from_pretrained(florence, schema="invoice", backend="vllm", device="cuda")
    assert not fake_vllm.CALLS.engines
