"""Helpers for testing code that uses invoice_vlm, offline and on CPU.

- `build_tiny_model` builds a tiny random model of a family (`build_tiny_paligemma`, `build_tiny_idefics3`,
  `build_tiny_gemma3`, `build_tiny_qwen_vl`, `build_tiny_florence2`) with a tokenizer trained on the spot carrying the family's special tokens and chat template,
  and the family's real processor class, saved in the standard Hugging Face layout; the real loading, generation and
  training code runs on it unchanged.
- `FakeBackend` returns texts you give it, for testing your own pipeline without a model.
- `stop_when_memorised` ends a training run once its documents are memorised, so a memorisation test asserts what
  it means on every machine instead of hinging on the loss a fixed step count reaches.

Examples:
    >>> from invoice_vlm import InvoiceExtractor
    >>> from invoice_vlm.testing import FakeBackend
    >>> fake = FakeBackend(['{"total": 1}'])
    >>> ex = InvoiceExtractor(backend=fake, schema="invoice")
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation, GenerationRequest
from invoice_vlm.schemas import LeafField, SchemaSpec, list_schemas, resolve_schema

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "TINY_BUILDERS",
    "FakeBackend",
    "build_tiny_florence2",
    "build_tiny_gemma3",
    "build_tiny_idefics3",
    "build_tiny_model",
    "build_tiny_paligemma",
    "build_tiny_qwen_vl",
    "stop_when_memorised",
    "tokenizer_corpus",
]

_WORDS = (
    "ROLL OF METAL WIRE STEEL PIPE COPPER SHEET PLASTIC BOX CARTON BOTTLE WATER JUICE PAPER TOWEL TISSUE SOAP "
    "CHAIR TABLE LAMP CABLE BOLT NUT SCREW PANEL GLASS DOOR WINDOW FILTER PUMP VALVE TAPE LABEL BAG SACK FOOD "
    "Street St Avenue Ave Road Rd Suite Apt Boulevard Lane Drive Court North South East West Main Oak Pine "
    "Park Lake Hill River Springfield Portland Madison Georgetown Salem Fairview Franklin Clinton Greenville "
    "John Mary James Patricia Robert Jennifer Michael Linda William Elizabeth David Smith Johnson Williams Brown "
    "Jones Miller Davis Garcia Wilson Anderson Taylor Thomas Moore Martin Jackson White Harris Clark Lewis "
    "Inc LLC Ltd GmbH Corp Company Group Services Solutions Trading Supply Logistics Distribution Warehouse "
    "Consulting Design Software License Support Hours Monthly Annual Service Fee Shipping Handling Discount "
    "EUR USD GBP CHF of and the for with to at in on 1 of 2 page Page"
).split()


def _sample_value(leaf: LeafField, rng: random.Random) -> Any:
    if leaf.json_type == "integer":
        return rng.randint(0, 500)
    if leaf.json_type == "number":
        return round(rng.uniform(0, 5000), 2)
    if leaf.json_type == "boolean":
        return rng.random() < 0.5
    if leaf.kind == "date":
        return f"20{rng.randint(20, 30)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if leaf.kind == "currency":
        return rng.choice(["EUR", "USD", "GBP", "CHF"])
    if leaf.kind == "integer":
        return str(rng.randint(0, 500))
    style = rng.randrange(6)
    if style == 0:
        return str(rng.randint(0, 10 ** rng.randint(1, 12)))
    if style == 1:
        return f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/20{rng.randint(20, 30)}"
    if style == 2:
        return f"{rng.randint(100000, 999999)} - " + " ".join(rng.choices(_WORDS[:40], k=rng.randint(2, 4)))
    if style == 3:
        return f"{rng.choice('ABCDEFGHJKLMNPRSTVWXYZ')}{rng.randint(100, 999)}-{rng.choice(['RZ', 'QT', 'MX'])}-{rng.randint(100, 999)}"
    return " ".join(rng.choices(_WORDS, k=rng.randint(1, 6))) + (
        f", {rng.randint(10000, 99999)}" if style == 4 else ""
    )


def _sample_document(spec: SchemaSpec, rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for leaf in spec.leaf_fields:
        parts = leaf.path.split(".")
        target = doc
        if leaf.in_list is not None:
            list_parts = leaf.in_list.split(".")
            for part in list_parts[:-1]:
                target = target.setdefault(part, {})
            items = target.setdefault(list_parts[-1], [{} for _ in range(rng.randint(1, 3))])
            for item in items:
                item[parts[-1]] = _sample_value(leaf, rng)
            continue
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if leaf.many:  # a list of values
            target[parts[-1]] = [_sample_value(leaf, rng) for _ in range(rng.randint(0, 3))]
            continue
        target[parts[-1]] = _sample_value(leaf, rng)
    return doc


def tokenizer_corpus(
    schemas: Sequence[str | SchemaSpec] | None = None, n: int = 300, seed: int = 0
) -> Iterator[str]:
    """Texts covering the prompts and the JSON (as ``SchemaSpec.dumps`` writes it) of the given schemas."""
    rng = random.Random(seed)
    specs = [resolve_schema(s) for s in (schemas if schemas is not None else list_schemas())]
    for spec in specs:
        for _ in range(n):
            yield spec.prompt  # as often as the documents, so the prompt's words become whole tokens
            yield spec.dumps(_sample_document(spec, rng))
    yield " ".join(_WORDS)


def _tiny_tokenizer(
    vocab_size: int,
    schemas: Sequence[str | SchemaSpec] | None,
    extra_specials: Sequence[str] = (),
    **named_tokens: Any,
) -> Any:
    """A byte-fallback BPE in Gemma's layout trained on the schemas' prompts and JSON, digits single tokens.

    ``extra_specials`` are a family's special tokens (image, turn markers); ``named_tokens`` name some of them as
    the processor asks for them (``boi_token="<start_of_image>"``).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *extra_specials]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern="▁", behavior="merged_with_previous"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    alphabet = sorted(  # "\n" is a token of its own, as in Gemma's vocabulary (the prompt ends with one)
        set("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789{}[]\":,.-/#()'&%+*_@\n")
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials) + len(byte_tokens),
        special_tokens=specials + byte_tokens,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    vocab, merges = _train(bpe, trainer, schemas)
    extra = {"extra_special_tokens": dict(named_tokens)} if named_tokens else {}
    return GemmaTokenizer(vocab=vocab, merges=merges, **extra)


def _train(
    bpe: Any, trainer: Any, schemas: Sequence[str | SchemaSpec] | None
) -> tuple[dict[str, int], list[Any]]:
    """Train ``bpe`` on the schemas' prompts and JSON; its vocabulary and merges, as tokenizer classes take them."""
    bpe.train_from_iterator(tokenizer_corpus(schemas, seed=0), trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]]
    return model_json["vocab"], merges


def _byte_level(
    vocab_size: int, schemas: Sequence[str | SchemaSpec] | None, specials: list[str], split: Any = None
) -> tuple[dict[str, int], list[Any]]:
    """A byte-level BPE's vocabulary and merges (GPT-2's layout, as BART and Qwen2 use), ``split`` before bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    bpe.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level]) if split is not None else byte_level
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials) + 256,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return _train(bpe, trainer, schemas)


def build_tiny_paligemma(
    path: str | Path,
    seed: int = 0,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 700,
    num_heads: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 1,
    initializer_range: float = 0.3,
    schemas: Sequence[str | SchemaSpec] | None = None,
) -> Path:
    """Build a tiny random PaliGemma, fully offline, and save it in the Hugging Face layout at ``path``.

    Both ``InvoiceExtractor.from_pretrained(path)`` and plain ``PaliGemmaForConditionalGeneration.from_pretrained``
    / ``AutoProcessor.from_pretrained`` load the result. The tokenizer is a byte-fallback BPE (Gemma's layout)
    trained on the schemas' JSON, with digits kept as single tokens like Gemma's; a pallet-label document is a
    few hundred tokens. The text embeddings start at ``initializer_range=0.3`` so the tied output layer gives
    usable logits and a LoRA adapter alone can make the model memorize documents.

    Args:
        path: directory to write (created).
        seed: seeds the weights; the same seed gives the same model.
        image_size: square input resolution of the vision tower.
        patch_size: vision patch size; ``(image_size // patch_size) ** 2`` image tokens per image.
        hidden_size: width of the language model (128 lets a LoRA adapter memorize a few full pallet labels).
        num_layers: layers of the language model.
        num_heads: attention heads of the language model (one key/value head, as in PaliGemma-3B's Gemma).
        vision_hidden_size: width of the vision tower (benchmarks use a larger one than tests).
        vision_layers: layers of the vision tower.
        initializer_range: standard deviation of the language model's initial weights, embeddings included.
        vocab_size: BPE vocabulary size to train (before PaliGemma's 1152 location/segmentation tokens).
        schemas: schemas whose JSON the tokenizer should cover (default: all registered).

    Returns:
        ``path`` as a `Path`.
    """
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(vocab_size, schemas)

    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    total_vocab = len(tokenizer)

    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_hidden_size * 2,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": 1,
            "head_dim": hidden_size // num_heads,
            "vocab_size": total_vocab,
            "initializer_range": initializer_range,
            "max_position_embeddings": 2048,
        },
        image_token_index=processor.image_token_id,
        vocab_size=total_vocab,
        projection_dim=hidden_size,
        hidden_size=hidden_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out


IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""SmolVLM's chat template (Idefics3's layout): ``<|im_start|>User:<image>prompt<end_of_utterance>\nAssistant:``."""

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma 3's chat template, reduced to user turns with an image and text."""


def _text_config(
    model_type: str | None,
    tokenizer: Any,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    initializer_range: float,
) -> dict[str, Any]:
    config = {
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": 1,
        "head_dim": hidden_size // num_heads,
        "vocab_size": len(tokenizer),
        "initializer_range": initializer_range,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if model_type is not None:
        config["model_type"] = model_type
    return config


def _vision_config(image_size: int, patch_size: int, hidden_size: int, layers: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def build_tiny_idefics3(
    path: str | Path,
    seed: int = 0,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    max_edge: int = 128,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 700,
    num_heads: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 1,
    initializer_range: float = 0.3,
    schemas: Sequence[str | SchemaSpec] | None = None,
) -> Path:
    """Build a tiny random Idefics3 (SmolVLM's architecture), fully offline, and save it at ``path``.

    The real ``Idefics3Processor`` with SmolVLM's chat template and special tokens (``<image>``,
    ``<fake_token_around_image>``, ``<global-img>``, the tile tokens, ``<end_of_utterance>``): a page is cut into
    ``image_size`` tiles up to ``max_edge`` pixels plus the whole page, so documents of different shapes give
    prompts of different lengths, as with the real model. Arguments as `build_tiny_paligemma`.
    """
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *tiles]
    tokenizer = _tiny_tokenizer(vocab_size, schemas, specials)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": max_edge}, max_image_size={"longest_edge": image_size}
    )
    scale = 2
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale**2,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        vision_config=_vision_config(image_size, patch_size, vision_hidden_size, vision_layers),
        text_config=_text_config("llama", tokenizer, hidden_size, num_layers, num_heads, initializer_range),
        scale_factor=scale,
        image_token_id=processor.image_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    return _save_tiny(model, processor, tokenizer, out, "<end_of_utterance>")


def build_tiny_gemma3(
    path: str | Path,
    seed: int = 0,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    tokens_per_image: int = 4,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 700,
    num_heads: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 1,
    initializer_range: float = 0.1,
    schemas: Sequence[str | SchemaSpec] | None = None,
) -> Path:
    """Build a tiny random Gemma 3 (image-text), fully offline, and save it at ``path``.

    The real ``Gemma3Processor`` with Gemma 3's chat template and image tokens (``<start_of_image>``,
    ``<image_soft_token>``, ``<end_of_image>``), the image pooled to ``tokens_per_image`` tokens; image tokens attend
    to each other both ways (``token_type_ids``), as in the real model. Arguments as `build_tiny_paligemma`, except
    that the weights start at ``initializer_range=0.1``: Gemma 3's scaled embeddings and extra norms make 0.3 start at
    a loss of 32.
    """
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    specials = [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    tokenizer = _tiny_tokenizer(
        vocab_size,
        schemas,
        specials,
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    vision = {
        **_vision_config(image_size, patch_size, vision_hidden_size, vision_layers),
        "vision_use_head": False,
    }
    text = _text_config(None, tokenizer, hidden_size, num_layers, num_heads, initializer_range)
    config = Gemma3Config(
        vision_config=vision,
        # Attention scaled by the head width, as in the real models (whose query_pre_attn_scalar equals head_dim).
        text_config={**text, "sliding_window": 512, "query_pre_attn_scalar": hidden_size // num_heads},
        mm_tokens_per_image=tokens_per_image,
        image_token_index=tokenizer.image_token_id,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with (
        torch.no_grad()
    ):  # transformers starts the projector at zero (checkpoints overwrite it): give it weights
        projector = model.model.multi_modal_projector.mm_input_projection_weight
        projector.normal_(0.0, vision_hidden_size**-0.5)
    return _save_tiny(model, processor, tokenizer, out, "<end_of_turn>")


QWEN_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL's chat template (with its default system turn), reduced to turns of images and text."""


def _tiny_byte_level_tokenizer(
    vocab_size: int, schemas: Sequence[str | SchemaSpec] | None, specials: list[str]
) -> Any:
    """A byte-level BPE in Qwen2's layout (its pre-tokenizer: digits single, bytes as characters)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated")
    vocab, merges = _byte_level(vocab_size, schemas, specials, split)
    # As the instruct checkpoints: a turn ends the answer (<|im_end|> is EOS), <|endoftext|> pads.
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=specials[1:],
    )


def build_tiny_qwen_vl(
    path: str | Path,
    seed: int = 0,
    *,
    version: str = "2",
    patch_size: int | None = None,
    max_pixels: int = 112 * 112,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 700,
    num_heads: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 1,
    initializer_range: float = 0.1,
    schemas: Sequence[str | SchemaSpec] | None = None,
) -> Path:
    """Build a tiny random Qwen2-VL (``version="2"``), Qwen2.5-VL (``"2.5"``) or Qwen3-VL (``"3"``), offline.

    The family's real processor (image processor, video processor, tokenizer) with Qwen's chat template and special
    tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``...), a byte-level BPE like
    Qwen2's, and dynamic resolution: a page keeps its shape within ``max_pixels`` (the processor's own setting; the
    family's document budget replaces it unless ``image_options`` say otherwise), so pages of different shapes give
    prompts of different lengths. Needs torchvision (Qwen's video processor). Other arguments as
    `build_tiny_paligemma`, except that the weights start at ``initializer_range=0.1``: at 0.3 the first layer's
    heads put over 0.9 of their weight on one text token and none on the page, so pages reach the answer's first
    token almost alike and a LoRA adapter cannot tell some of them apart.
    """
    import torch
    import transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    versions = {
        "2": (
            "Qwen2VLConfig",
            "Qwen2VLForConditionalGeneration",
            "Qwen2VLProcessor",
            "Qwen2VLVideoProcessor",
            14,
        ),
        "2.5": (
            "Qwen2_5_VLConfig",
            "Qwen2_5_VLForConditionalGeneration",
            "Qwen2_5_VLProcessor",
            "Qwen2VLVideoProcessor",
            14,
        ),
        "3": (
            "Qwen3VLConfig",
            "Qwen3VLForConditionalGeneration",
            "Qwen3VLProcessor",
            "Qwen3VLVideoProcessor",
            16,
        ),
    }
    if version not in versions:
        raise ValueError(f"version must be one of {', '.join(versions)}, got {version!r}.")
    config_name, model_name, processor_name, video_name, default_patch = versions[version]
    patch = patch_size or default_patch
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tokenizer = _tiny_byte_level_tokenizer(vocab_size, schemas, specials)
    factor = patch * 2
    processor = getattr(transformers, processor_name)(
        image_processor=Qwen2VLImageProcessor(
            patch_size=patch, size={"shortest_edge": factor * factor, "longest_edge": max_pixels}
        ),
        tokenizer=tokenizer,
        video_processor=getattr(transformers, video_name)(patch_size=patch),
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    head_dim = hidden_size // num_heads
    third = 3 * head_dim // 16  # Qwen's 16/24/24 split of a 128-wide head's 64 frequencies, scaled
    text = {
        **_text_config(None, tokenizer, hidden_size, num_layers, num_heads, initializer_range),
        "bos_token_id": None,
        "eos_token_id": end,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [head_dim // 2 - 2 * third, third, third],
            **({"mrope_interleaved": True} if version == "3" else {}),
        },
    }
    vision: dict[str, Any] = {
        "depth": vision_layers,
        "num_heads": 2,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": initializer_range,
    }
    if version == "2":
        vision.update(embed_dim=vision_hidden_size, hidden_size=hidden_size)
    else:
        vision.update(
            hidden_size=vision_hidden_size,
            intermediate_size=vision_hidden_size * 2,
            out_hidden_size=hidden_size,
        )
        if version == "2.5":
            vision.update(fullatt_block_indexes=[vision_layers - 1], window_size=patch * 4)
        else:
            vision.update(num_position_embeddings=64, deepstack_visual_indexes=[])
    config = getattr(transformers, config_name)(
        vision_config=vision,
        text_config=text,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    return _save_tiny(model, processor, tokenizer, out, "<|im_end|>")


def build_tiny_florence2(
    path: str | Path,
    seed: int = 0,
    *,
    image_size: int = 64,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 700,
    num_heads: int = 2,
    initializer_range: float = 0.1,
    schemas: Sequence[str | SchemaSpec] | None = None,
) -> Path:
    """Build a tiny random Florence-2 (DaViT encoder, BART encoder-decoder), offline, and save it at ``path``.

    The real ``Florence2Processor`` (it wraps the prompt in the image tokens and ``<s>``...``</s>`` for the encoder)
    with a byte-level BPE in BART's layout; the vision tower's four stages stride the page down 32 times, so a
    ``image_size`` page gives ``(image_size // 32) ** 2 + 1`` image tokens. Arguments as `build_tiny_paligemma`.
    """
    import torch
    from transformers import (
        BartTokenizer,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]
    vocab, merges = _byte_level(vocab_size, schemas, specials)
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        crop_size={"height": image_size, "width": image_size},
    )
    image_processor.image_seq_length = (image_size // 32) ** 2 + 1  # the stages' tokens and one pooled token
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = Florence2Config(
        vision_config={
            "depths": [1, 1, 1, 1],
            "embed_dim": [16, 32, 32, 64],
            "num_heads": [1, 2, 2, 2],
            "num_groups": [1, 2, 2, 2],
            "window_size": 2,
            "projection_dim": hidden_size,
            "drop_path_rate": 0.0,
            "initializer_range": initializer_range,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "d_model": hidden_size,
            "encoder_layers": 1,
            "decoder_layers": num_layers,
            "encoder_attention_heads": num_heads,
            "decoder_attention_heads": num_heads,
            "encoder_ffn_dim": hidden_size * 2,
            "decoder_ffn_dim": hidden_size * 2,
            "max_position_embeddings": 1024,
            "init_std": initializer_range,
            "dropout": 0.0,  # a memorisation run reads training-mode accuracy: no dropout noise in it
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.eos_token_id,
            "forced_bos_token_id": None,
            "forced_eos_token_id": None,
        },
        image_token_id=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out


def _save_tiny(model: Any, processor: Any, tokenizer: Any, out: Path, end_token: str) -> Path:
    """Save a tiny chat model whose generation stops at its end-of-turn token, as the real checkpoints do."""
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids(end_token),
        tokenizer.eos_token_id,
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out


TINY_BUILDERS: dict[str, Callable[..., Path]] = {
    "paligemma": build_tiny_paligemma,
    "idefics3": build_tiny_idefics3,
    "gemma3": build_tiny_gemma3,
    "qwen_vl": build_tiny_qwen_vl,
    "florence2": build_tiny_florence2,
}
"""A tiny random model builder for each family in `invoice_vlm.families`."""


def build_tiny_model(family: str, path: str | Path, seed: int = 0, **sizes: Any) -> Path:
    """Build a tiny random model of ``family`` at ``path`` (see the family's own builder for ``sizes``).

    Raises:
        ValueError: no builder for that family.
    """
    try:
        builder = TINY_BUILDERS[family]
    except KeyError:
        raise ValueError(
            f"No tiny model builder for family {family!r}; known: {', '.join(TINY_BUILDERS)}."
        ) from None
    return builder(path, seed, **sizes)


Response = (
    str | dict[str, Any] | Generation | BaseException | Callable[["Image.Image", GenerationRequest], Any]
)


class FakeBackend:
    """A backend that returns the outputs you give it, for testing code built on `InvoiceExtractor`.

    Args:
        responses: one output used for every image; a list of outputs returned in call order (an error when they run
            out); or a function ``(image, request) -> output``. An output is model text (a str), a document (a
            dict, returned as structured ``data``) or a `Generation`; a list entry that is an exception is raised for
            that image, to test failure handling.

    Attributes:
        calls: ``(image size, prompt)`` of every image seen, in order.
        requests: the `GenerationRequest` of every call.
    """

    name = "fake"

    def __init__(self, responses: Response | Sequence[Response]) -> None:
        self._responses = responses
        self._next = 0
        self.calls: list[tuple[tuple[int, int], str]] = []
        self.requests: list[GenerationRequest] = []

    @staticmethod
    def _generation(item: object) -> Generation:
        if isinstance(item, Generation):
            return item
        if isinstance(item, str):
            return Generation(text=item)
        if isinstance(item, dict):
            return Generation(data=item)
        raise TypeError(f"FakeBackend responses are str, dict or Generation, got {type(item).__name__}.")

    def _one(self, image: Image.Image, request: GenerationRequest) -> Generation:
        self.calls.append((image.size, request.prompt))
        if isinstance(self._responses, (str, dict, Generation)):
            return self._generation(self._responses)
        if callable(self._responses):
            return self._generation(self._responses(image, request))
        assert isinstance(self._responses, Sequence)
        if self._next >= len(self._responses):
            raise IndexError(f"FakeBackend ran out of responses after {len(self._responses)}.")
        item = self._responses[self._next]
        self._next += 1
        if isinstance(item, BaseException):
            raise item
        return self._generation(item)

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Generation]:
        """Return the next response for each image.

        Like a real backend, the answer belongs to the image, not to the call: when a batch fails, the responses of
        its other images are handed out again on the next call (`InvoiceExtractor` retries a failed batch one image
        at a time), and a single image that fails consumes its response.
        """
        start, calls = self._next, len(self.calls)
        self.requests.append(request)
        try:
            return [self._one(image, request) for image in images]
        except BaseException:
            if len(images) > 1:
                self._next = start
                del self.calls[calls:]
            raise

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, **options: Any) -> FakeBackend:
        """Build one whose every answer is the text of file ``model`` (so it can be registered as a plugin)."""
        if model is None:
            raise ValueError("FakeBackend.from_pretrained needs a path to a file holding the response text.")
        return cls(Path(model).read_text(encoding="utf-8"))


def stop_when_memorised(max_loss: float = 0.01, patience: int = 5) -> Any:
    """A ``transformers.TrainerCallback`` that ends training once the training documents are memorised.

    A test that trains for a fixed number of steps passes or fails on float rounding: the same run lands at loss 0.01
    on one CPU and 0.06 on another, and only the first reproduces its documents. Stopping on what the test means is
    robust: every logged step's loss under ``max_loss`` and TRL's ``mean_token_accuracy`` (the model's top token
    equals the target token at every trained position, so greedy decoding writes the targets) at 1.0, ``patience``
    logged steps in a row. Give the run a generous ``num_train_epochs`` as the cap and ``logging_steps=1``.

    Args:
        max_loss: the highest training loss that counts as memorised.
        patience: how many logged steps in a row must count as memorised.

    Returns:
        The callback; its ``memorised_at`` is the step training stopped at (``None`` while it has not).
    """
    from transformers import TrainerCallback

    class StopWhenMemorised(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.streak = 0
            self.memorised_at: int | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" not in logs:
                return
            accurate = logs.get("mean_token_accuracy", 0.0) >= 1.0
            self.streak = self.streak + 1 if logs["loss"] <= max_loss and accurate else 0
            if self.streak >= patience:
                self.memorised_at = state.global_step
                control.should_training_stop = True

    return StopWhenMemorised()
