"""The model families the transformers backend and `invoice_vlm.finetune` know, as data: one frozen `Family` each.

A family says how its prompt is built (PaliGemma's prefix, or the chat template with the image), which token ends a
target, which per-token inputs the model needs besides ``input_ids``, the document-friendly image settings its
processor is called with, where its language model and vision tower live (so LoRA stays in the language model and
the vision tower stays frozen), and whether vLLM serves it. Loading, generation, training and the guards read these
fields; there is no class per family.

A model picks its family from the ``model_type`` in its ``config.json``; an unknown one is refused with the list of
known families.

Examples:
    >>> family_for_model_type("smolvlm").name
    'idefics3'
    >>> get_family("paligemma").prompt_style
    'prefix'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from invoice_vlm.errors import ModelLoadError

__all__ = [
    "FAMILIES",
    "Family",
    "family_for_model_type",
    "family_of",
    "get_family",
    "read_model_type",
]

PALIGEMMA_IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class Family:
    """How one model family is prompted, trained and served.

    Attributes:
        name: the family's name (``"paligemma"``, ``"idefics3"``...).
        title: how people call it.
        model_types: the ``model_type`` values in ``config.json`` that belong to it.
        prompt_style: ``"prefix"``: the image token then the prompt, the processor adds the rest (PaliGemma);
            ``"chat"``: one user turn holding the image and the prompt, through the processor's chat template, with
            the generation prompt (the assistant's turn) opened; ``"task"``: the prompt alone, which the processor
            wraps in the image tokens and ``<s>``...``</s>`` for the encoder (Florence-2).
        end_token: the token that ends an answer and every training target (``None``: the tokenizer's EOS).
        language_model: the module name of the language model inside the model (``model.<name>``).
        vision: module names of the vision tower (frozen unless asked).
        projector: module names of the image-to-text projector.
        token_inputs: per-token inputs the model needs besides ``input_ids`` and ``attention_mask`` (a training
            target's tokens get 0 in them).
        image_options: the image processor settings used for documents (saved in ``invoice_vlm.json``).
        nested_images: whether the processor takes one list of images per text.
        backend: the backend name its directories are saved with.
        lora_targets: the language model's projection names LoRA adapts by default, when they are not the usual
            ``q_proj``...``down_proj`` of a decoder-only model (BART's ``out_proj``, ``fc1``, ``fc2``).
        encoder_decoder: the prompt goes to an encoder and the answer is the decoder's, from its start token; labels
            are the target alone (Florence-2).
        needs: packages its processor imports beyond the ``paligemma`` extra (installed by the ``qwen`` extra).
        vllm: whether invoice_vlm's vllm backend serves it (vLLM applies LoRA to its language model).
        sizes: public checkpoints, for the docs and error messages.
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    prompt_style: Literal["prefix", "chat", "task"]
    language_model: str
    vision: tuple[str, ...]
    projector: tuple[str, ...]
    end_token: str | None = None
    token_inputs: tuple[str, ...] = ()
    image_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    nested_images: bool = False
    backend: str = "transformers"
    encoder_decoder: bool = False
    lora_targets: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    vllm: bool = False
    sizes: tuple[str, ...] = ()

    def require(self) -> None:
        """Refuse, with what to install, when a package the family's processor imports is missing.

        Raises:
            MissingDependencyError: the first missing package of `needs`.
        """
        from invoice_vlm.errors import require

        require(
            f"The {self.title} processor",
            "qwen",
            *self.needs,
            advice="install the torchvision build that matches your torch (pip install torchvision, or "
            "pip install 'invoice-vlm[qwen]')",
        )

    def prompt_text(self, processor: Any, prompt: str) -> str:
        """The text given to the processor with the image: the one function training and inference share.

        Raises:
            ModelLoadError: a chat family whose processor has no chat template.
        """
        if self.prompt_style == "prefix":
            return PALIGEMMA_IMAGE_TOKEN + prompt
        if self.prompt_style == "task":
            return prompt
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(
                f"The {self.title} processor has no chat template, so the prompt cannot be built as the model "
                "expects; load the processor saved with the model (its chat_template.jinja)."
            )
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return str(text)

    def images_argument(self, images: Sequence[Any]) -> list[Any]:
        """The images as the processor takes them: one list per text for processors that ask for it."""
        return [[image] for image in images] if self.nested_images else list(images)

    def end_token_ids(self, tokenizer: Any) -> list[int]:
        """The token ids that end an answer: the family's end token and the tokenizer's EOS."""
        ids = {tokenizer.eos_token_id}
        if self.end_token is not None:
            ids.add(tokenizer.convert_tokens_to_ids(self.end_token))
        return sorted(i for i in ids if isinstance(i, int) and i >= 0)

    def target_end_id(self, tokenizer: Any) -> int:
        """The token every training target ends with."""
        if self.end_token is None:
            return int(tokenizer.eos_token_id)
        return int(tokenizer.convert_tokens_to_ids(self.end_token))

    def lora_target_regex(self, names: Sequence[str], vision: bool = False) -> str:
        """A PEFT ``target_modules`` regex: the projections named, in the language model (and the vision tower)."""
        towers = "|".join([self.language_model, *(self.vision if vision else ())])
        return rf".*\.({towers})\..*\.({'|'.join(sorted(set(names)))})"

    def in_language_model(self, module_name: str) -> bool:
        """Whether a module (or parameter) name lies in the language model."""
        return f".{self.language_model}." in f".{module_name}"

    def in_vision(self, module_name: str) -> bool:
        """Whether a module (or parameter) name lies in the vision tower."""
        return any(f".{part}." in f".{module_name}" for part in self.vision)

    def in_projector(self, module_name: str) -> bool:
        """Whether a module (or parameter) name lies in the projector."""
        return any(f".{part}." in f".{module_name}" for part in self.projector)


FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        family.name: family
        for family in (
            Family(
                name="paligemma",
                title="PaliGemma",
                model_types=("paligemma",),
                prompt_style="prefix",
                language_model="language_model",
                vision=("vision_tower",),
                projector=("multi_modal_projector",),
                token_inputs=("token_type_ids",),
                backend="paligemma",
                vllm=True,
                sizes=(
                    "google/paligemma-3b-pt-448",
                    "google/paligemma2-3b-pt-448",
                    "google/paligemma2-10b-pt-448",
                ),
            ),
            Family(
                name="idefics3",
                title="Idefics3 / SmolVLM",
                model_types=("idefics3", "smolvlm"),
                prompt_style="chat",
                end_token="<end_of_utterance>",
                language_model="text_model",
                vision=("vision_model",),
                projector=("connector",),
                # A page is cut into tiles at the vision encoder's resolution plus a downscaled whole: dense
                # documents keep their small print.
                image_options=MappingProxyType({"do_image_splitting": True}),
                nested_images=True,
                vllm=True,
                sizes=(
                    "HuggingFaceTB/SmolVLM-256M-Instruct",
                    "HuggingFaceTB/SmolVLM-500M-Instruct",
                    "HuggingFaceTB/SmolVLM-Instruct",
                    "HuggingFaceM4/Idefics3-8B-Llama3",
                    "ibm-granite/granite-docling-258M",
                ),
            ),
            Family(
                name="gemma3",
                title="Gemma 3",
                model_types=("gemma3",),
                prompt_style="chat",
                end_token="<end_of_turn>",
                language_model="language_model",
                vision=("vision_tower",),
                projector=("multi_modal_projector",),
                token_inputs=("token_type_ids",),
                nested_images=True,
                vllm=True,
                sizes=("google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it"),
            ),
            Family(
                name="qwen_vl",
                title="Qwen2-VL / Qwen2.5-VL / Qwen3-VL",
                model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
                prompt_style="chat",
                end_token="<|im_end|>",
                language_model="language_model",
                vision=("visual",),
                projector=("merger",),
                # Dynamic resolution: a page keeps its shape within a pixel budget. The checkpoints allow 12.8M
                # pixels (about 16,000 tokens for a phone photo); 1280 tokens' worth reads an A4 page's small print.
                image_options=MappingProxyType(
                    {"size": {"shortest_edge": 56 * 56, "longest_edge": 1280 * 28 * 28}}
                ),
                nested_images=True,
                needs=("torchvision",),  # Qwen's video processor, loaded with every Qwen-VL processor
                vllm=True,
                sizes=(
                    "Qwen/Qwen2-VL-2B-Instruct",
                    "Qwen/Qwen2.5-VL-3B-Instruct",
                    "Qwen/Qwen2.5-VL-7B-Instruct",
                    "Qwen/Qwen3-VL-2B-Instruct",
                    "Qwen/Qwen3-VL-8B-Instruct",
                ),
            ),
            Family(
                name="florence2",
                title="Florence-2",
                model_types=("florence2",),
                prompt_style="task",
                language_model="language_model",
                vision=("vision_tower",),
                projector=("multi_modal_projector",),
                encoder_decoder=True,
                lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
            ),
        )
    }
)


def get_family(name: str) -> Family:
    """The family called ``name``.

    Raises:
        ModelLoadError: no such family; the message lists the known ones.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelLoadError(
            f"Unknown model family {name!r}; known families: {', '.join(FAMILIES)}."
        ) from None


def family_for_model_type(model_type: str) -> Family:
    """The family of a ``config.json`` ``model_type``.

    Raises:
        ModelLoadError: no known family has it; the message lists the known families and their model types.
    """
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = "; ".join(f"{f.title} ({', '.join(f.model_types)})" for f in FAMILIES.values())
    raise ModelLoadError(
        f"model_type {model_type!r} is not a model family invoice_vlm knows how to prompt and train. Known: {known}."
    )


def read_model_type(ref: str | Path) -> str:
    """The ``model_type`` of ``config.json`` in a local directory or a Hub repository.

    Raises:
        ModelLoadError: there is no ``config.json``, or it names no ``model_type``.
    """
    from invoice_vlm.backends._hf import is_local

    if is_local(ref):
        path = Path(ref).expanduser() / "config.json"
        if not path.is_file():
            raise ModelLoadError(
                f"Cannot load the processor and weights of {str(ref)!r}: it has no config.json, so neither the "
                "model nor its family can be read. Check the path: a model directory holds config.json beside "
                "its weights (an adapter directory, adapter_config.json).",
                str(ref),
            )
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(str(ref), "config.json"))
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot fetch config.json of {str(ref)!r}: {type(exc).__name__}: {exc}. Check the id, log in for "
                "gated models (hf auth login), or pass a local directory.",
                str(ref),
            ) from None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} cannot be read: {exc}", str(ref)) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{path} names no model_type, so its model family is unknown.", str(ref))
    return model_type


def family_of(model: Any) -> Family:
    """The family of a loaded model (or a PEFT wrapper around one), from its config's ``model_type``."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        base = getattr(model, "get_base_model", None)
        if callable(base):
            return family_of(base())
        raise ModelLoadError(f"{type(model).__name__} has no config.model_type, so its family is unknown.")
    return family_for_model_type(str(model_type))
