"""`finetune`: LoRA / QLoRA / full fine-tuning over TRL's ``SFTTrainer``, guarded and reproducible.

Every family in `invoice_vlm.families` trains here; the family's entry says how its batches are built and checked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends._hf import (
    apply_adapter,
    load_processor,
    load_weights,
    quiet_peft,
    resolve_device_dtype,
    resolve_refs,
)
from invoice_vlm.backends.vlm import TransformersBackend
from invoice_vlm.config import ExtractorConfig, GenerationSettings
from invoice_vlm.errors import (
    ConfigError,
    GuardError,
    InvoiceVLMWarning,
    ModelLoadError,
    TrainingError,
    require,
)
from invoice_vlm.families import Family, family_for_model_type, get_family, read_model_type
from invoice_vlm.finetune.collator import ChatCollator, PaliGemmaCollator
from invoice_vlm.finetune.config import DEFAULT_LORA_TARGETS, FinetuneConfig
from invoice_vlm.finetune.guards import check_attention, check_batch, check_chat_batch, check_lora_scope
from invoice_vlm.schemas import SchemaSpec, resolve_schema

if TYPE_CHECKING:
    from invoice_vlm.evaluation import EvaluationReport

__all__ = ["FinetuneResult", "finetune", "lora_target_regex"]

EVAL_SPLITS = ("valid", "validation", "val")
CHECKPOINTS = "checkpoints"


@dataclass
class FinetuneResult:
    """What `finetune` returns.

    Attributes:
        output_dir: the directory `InvoiceExtractor.from_pretrained` loads.
        metrics: final numbers: training (``train_loss``, ``global_step``, ``train_samples_per_second``...) and, when
            the data has a test or validation split, its evaluation (``field_accuracy``, ``document_accuracy``...).
        report: the final `EvaluationReport`, if an evaluation split existed.
    """

    output_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    report: EvaluationReport | None = None


def lora_target_regex(names: list[str], vision: bool, family: Family | None = None) -> str:
    """A PEFT ``target_modules`` regex for the projections named, in the language model (and vision tower)."""
    return (family or get_family("paligemma")).lora_target_regex(names, vision)


def _splits(dataset: Any) -> tuple[Any, Any, Any]:
    if "train" not in dataset:
        raise TrainingError(f"The dataset has no 'train' split (it has {', '.join(sorted(dataset))}).")
    eval_name = next((s for s in EVAL_SPLITS if s in dataset), None)
    return (
        dataset["train"],
        dataset[eval_name] if eval_name else None,
        dataset["test"] if "test" in dataset else None,
    )


def _one_page(split: Any, name: str) -> Any:
    """The split without its documents of several pages (they train nothing: see the warning), and its page column."""
    if split is None or "pages" not in split.column_names:
        return split
    keep = [i for i, pages in enumerate(split["pages"]) if not pages]
    if len(keep) < len(split):
        warnings.warn(
            f"{len(split) - len(keep)} document(s) of several pages in the {name} split are not trained on: the model "
            "reads one page at a time, and a correction of a whole document does not say which page holds what. "
            "They are scored whole (pages merged) where the split is evaluated.",
            InvoiceVLMWarning,
            stacklevel=3,
        )
    return split.select(keep).remove_columns("pages")


def _check_prompts(dataset: Any, prompt: str, config: FinetuneConfig, spec: SchemaSpec) -> None:
    found: set[str] = set()
    for split in dataset.values():
        found.update(split["prefix"])
    if found != {prompt}:
        raise GuardError(
            "prompt",
            f"the data is labelled with prompt(s) {sorted(found)!r} but this run trains and saves prompt {prompt!r}; "
            "set prompt= to the data's prompt or relabel the data, so training and inference ask the same question.",
        )
    if config.adapter and ExtractorConfig.exists(config.adapter):
        saved = ExtractorConfig.load(config.adapter)
        if saved.prompt != prompt or saved.schema != spec.name:
            raise GuardError(
                "prompt",
                f"adapter {config.adapter} was trained with prompt {saved.prompt!r} for schema {saved.schema!r}; this "
                f"run uses {prompt!r} for {spec.name!r}. Continue it with the same prompt and schema.",
            )


def _constrainable(targets: list[str], spec: SchemaSpec) -> bool:
    """Whether constrained decoding can write every training target exactly as it is (else it would fight the model)."""
    from invoice_vlm.constraints import target_mismatch

    try:
        for index, target in enumerate(targets):
            reason = target_mismatch(target, spec)
            if reason is not None:
                warnings.warn(
                    f"training target {index} is not written the way constrained decoding writes it ({reason}); "
                    "the model is saved with constrained=false, so inference follows what it learned. Write targets "
                    "with SchemaSpec.dumps to train for constrained decoding.",
                    InvoiceVLMWarning,
                    stacklevel=3,
                )
                return False
    except ConfigError as exc:
        warnings.warn(f"saving constrained=false: {exc}", InvoiceVLMWarning, stacklevel=3)
        return False
    return True


def _longest_target_tokens(processor: Any, targets: list[str]) -> int:
    tokenizer = processor.tokenizer
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets) + 1  # + <eos>


def _load_model(config: FinetuneConfig, device: str, dtype: Any) -> tuple[Any, Any, Family]:
    """The base weights, processor and family, through the same plumbing as the transformers backend."""
    from transformers import AutoModelForImageTextToText

    from invoice_vlm.backends.vlm import check_processor

    if config.method == "qlora" and not device.startswith("cuda"):
        raise TrainingError(
            "QLoRA needs a CUDA GPU (4-bit bitsandbytes kernels); use method='lora' on this machine."
        )
    refs = resolve_refs(config.base_model, config.adapter)
    family = family_for_model_type(read_model_type(refs.base))
    family.require()
    processor = load_processor(refs.processor)
    check_processor(family, processor, refs.processor)
    model = load_weights(
        AutoModelForImageTextToText, refs.base, device, dtype, quantize_4bit=config.method == "qlora"
    )
    if "token_type_ids" in family.token_inputs:
        check_attention(model, family)
    return model, processor, family


def _prepare_trainable(model: Any, config: FinetuneConfig, family: Family) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    if config.method == "full":
        for name, param in model.named_parameters():
            in_vision = family.in_vision(name)
            in_projector = family.in_projector(name)
            param.requires_grad = (
                (not in_vision and not in_projector)
                or (in_vision and config.train_vision_tower)
                or (in_projector and config.train_projector)
            )
        return model
    if config.adapter:
        model = apply_adapter(model, config.adapter, trainable=True, base=config.base_model)
    else:
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=family.lora_target_regex(_lora_targets(config, family), config.train_vision_tower),
            modules_to_save=list(family.projector) if config.train_projector else None,
            task_type="SEQ_2_SEQ_LM" if family.encoder_decoder else "CAUSAL_LM",
        )
        with quiet_peft():
            model = get_peft_model(model, lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise TrainingError(
            f"No parameter is trainable: lora_targets {config.lora_targets} matched no module."
        )
    if not config.train_vision_tower and any(family.in_vision(n) for n in trainable):
        raise GuardError(
            "vision_tower", "the vision tower would be trained although train_vision_tower is False."
        )
    check_lora_scope(model, family, config.train_vision_tower)
    return model


def _lora_targets(config: FinetuneConfig, family: Family) -> list[str]:
    """The projections LoRA adapts: the config's, or the family's own names when the config keeps the default."""
    if family.lora_targets and list(config.lora_targets) == list(DEFAULT_LORA_TARGETS):
        return list(family.lora_targets)
    return list(config.lora_targets)


def _trainer_class() -> Any:
    from trl import SFTTrainer

    class InvoiceSFTTrainer(SFTTrainer):  # type: ignore[misc]
        """SFTTrainer that guards the first batch and evaluates by generating and scoring fields."""

        def __init__(self, *args: Any, invoice: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.invoice = invoice
            self._guarded = False

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            truncated = inputs.pop("truncated", None)
            images = inputs.pop("guard_images", None)
            if not self._guarded and model.training:
                family: Family = self.invoice["family"]
                if family.prompt_style == "prefix":
                    check_batch(inputs, self.invoice["processor"], self.invoice["prompt"], truncated)
                else:
                    if images is None:
                        raise GuardError(
                            "prompt",
                            "the batch does not carry its images (guard_images), so its prompts cannot be checked "
                            f"against inference's; use invoice_vlm's ChatCollator for {family.title}.",
                        )
                    check_chat_batch(
                        inputs,
                        self.invoice["processor"],
                        self.invoice["prompt"],
                        family,
                        images,
                        truncated,
                        self.invoice["image_options"],
                    )
                self._guarded = True
            if self.invoice["family"].encoder_decoder:
                return self._decoder_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.invoice["answer_only_logits"]:
                return self._answer_only_loss(model, inputs, return_outputs, num_items_in_batch)
            return self._full_logits_loss(model, inputs, return_outputs, num_items_in_batch)

        def _answer_only_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool, num_items_in_batch: Any
        ) -> Any:
            """The loss with the output layer run only where it is taken: the positions whose next label is a target.

            The model's own forward (through PEFT and any DDP/FSDP wrapper) with a boolean ``logits_to_keep``:
            its logits are one row per target token, in one matrix product, nothing computed twice.
            """
            import torch

            labels = inputs["labels"]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100
            model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
            targets = labels[:, 1:][keep[:, :-1]]
            loss = self._target_loss(model, inputs, outputs.logits.float(), targets, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

        def _decoder_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool, num_items_in_batch: Any
        ) -> Any:
            """An encoder-decoder's loss: every decoder position is a target, its logits aligned with its label.

            The labels go in with the inputs (the model builds the decoder's inputs from them); the loss is summed
            over the target tokens and divided by their count across the accumulated batches, as on the other path.
            """
            labels = inputs["labels"]
            outputs = model(**inputs, use_cache=False)
            mask = labels != -100
            loss = self._target_loss(
                model, inputs, outputs.logits[mask].float(), labels[mask], num_items_in_batch
            )
            return (loss, outputs) if return_outputs else loss

        def _target_loss(
            self, model: Any, inputs: dict[str, Any], logits: Any, targets: Any, num_items_in_batch: Any
        ) -> Any:
            """Cross-entropy summed over the target rows, divided by the target tokens across accumulated batches."""
            import torch
            import torch.nn.functional as F

            count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
            loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            self._log_token_metrics(model, inputs, logits, targets)
            return loss

        def _full_logits_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool, num_items_in_batch: Any
        ) -> Any:
            """The loss from every position's logits (a plain forward)."""
            from transformers import Trainer

            inputs["use_cache"] = False
            loss, outputs = Trainer.compute_loss(
                self, model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            inputs.pop("use_cache")
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            self._log_token_metrics(model, inputs, outputs.logits[:, :-1][mask].float(), labels[mask])
            return (loss, outputs) if return_outputs else loss

        def _log_token_metrics(self, model: Any, inputs: dict[str, Any], logits: Any, targets: Any) -> None:
            """TRL's metrics from the target positions' logits: token accuracy, entropy, tokens seen."""
            import torch

            mode = "train" if model.training else "eval"
            with torch.no_grad():
                gather = self.accelerator.gather_for_metrics
                valid = gather(torch.as_tensor(targets.numel(), device=logits.device)).sum()
                correct = gather((logits.argmax(-1) == targets).sum()).sum()
                # In slices of rows: a second (positions x vocabulary) tensor would double the logits' memory.
                entropy = logits.new_zeros(())
                for rows in logits.detach().split(256):
                    logp = rows.log_softmax(-1)
                    entropy -= (logp.exp() * logp).sum()
                entropy = gather(entropy).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            self._metrics[mode]["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
            if mode == "train" and "attention_mask" in inputs:
                self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> Any:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            dataset = eval_dataset if eval_dataset is not None else self.invoice["eval_documents"]
            if dataset is None:
                return metrics
            report = _generate_and_score(self.accelerator.unwrap_model(self.model), dataset, self.invoice)
            extra = {
                f"{metric_key_prefix}_{k}": report.metrics[k]
                for k in ("field_accuracy", "document_accuracy", "schema_valid_rate", "json_valid_rate")
            }
            metrics.update(extra)
            self.log(extra)
            return metrics

    return InvoiceSFTTrainer


def _generate_and_score(model: Any, dataset: Any, invoice: dict[str, Any]) -> EvaluationReport:
    from invoice_vlm.evaluation import evaluate
    from invoice_vlm.extractor import InvoiceExtractor

    was_training = model.training
    model.eval()
    backend = TransformersBackend(
        model,
        invoice["processor"],
        family=invoice["family"],
        image_options=invoice["image_options"],
        device=invoice["device"],
        generation=GenerationSettings(
            max_new_tokens=invoice["max_new_tokens"], constrained=invoice["constrained"]
        ),
    )
    extractor = InvoiceExtractor(
        backend, invoice["schema"], prompt=invoice["prompt"], backend_name=invoice["family"].backend
    )
    limit = invoice["eval_max_documents"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvoiceVLMWarning)
        report = evaluate(extractor, dataset, batch_size=invoice["batch_size"], progress=False, limit=limit)
    if was_training:
        model.train()
    return report


def _workers(config: FinetuneConfig, device: str) -> int:
    if config.dataloader_num_workers is not None:
        return config.dataloader_num_workers
    return min(4, (os.cpu_count() or 2) // 2) if device.startswith("cuda") else 0


def _sft_config(config: FinetuneConfig, has_eval: bool, device: str, dtype: Any) -> Any:
    import torch
    from trl import SFTConfig

    epoch_based = config.eval_steps is None and config.save_steps is None
    eval_steps = config.eval_steps or config.save_steps
    save_steps = config.save_steps or config.eval_steps
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(config.output_dir) / CHECKPOINTS),
        "num_train_epochs": config.num_train_epochs,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": config.weight_decay,
        "lr_scheduler_type": "linear",
        "logging_steps": config.logging_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "report_to": config.report_to or "none",
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "max_length": None,
        "bf16": device.startswith("cuda") and dtype == torch.bfloat16,
        "save_strategy": "epoch" if epoch_based else "steps",
        "save_only_model": False,
        "use_cpu": not device.startswith("cuda"),
        "dataloader_pin_memory": device.startswith("cuda"),
        "dataloader_num_workers": _workers(config, device),
        "dataloader_persistent_workers": _workers(config, device) > 0,
        "push_to_hub": False,  # the final directory is pushed by us, with its model card
    }
    if not epoch_based:
        kwargs["save_steps"] = save_steps
    if has_eval:
        kwargs.update(
            eval_strategy="epoch" if epoch_based else "steps",
            load_best_model_at_end=True,
            metric_for_best_model="eval_field_accuracy",
            greater_is_better=True,
        )
        if not epoch_based:
            kwargs["eval_steps"] = eval_steps
    else:
        kwargs["eval_strategy"] = "no"
    # transformers 5 renamed gradient checkpointing to activation checkpointing; use whichever this release has.
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}
        else "gradient_checkpointing"
    )
    kwargs[checkpointing] = config.gradient_checkpointing
    if config.gradient_checkpointing:
        kwargs[f"{checkpointing}_kwargs"] = {"use_reentrant": False}
    return SFTConfig(**kwargs)


def finetune(
    config: FinetuneConfig,
    *,
    collator: Any = None,
    callbacks: list[Any] | None = None,
) -> FinetuneResult:
    """Fine-tune PaliGemma on a dataset and write a directory `InvoiceExtractor.from_pretrained` loads.

    The first batch of every run is checked (see `invoice_vlm.finetune.guards`): ``token_type_ids`` reach the
    model, labels cover exactly the target tokens, every target ends with EOS, the image token count is right, and
    the prompt is the one saved next to the weights. The data's prompts must equal the run's prompt.

    Args:
        config: the settings.
        collator: replaces `PaliGemmaCollator` (advanced; the guards still check its batches).
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Returns:
        A `FinetuneResult` with the output directory and final metrics.

    Raises:
        GuardError: the first batch or the data would train the wrong thing.
        TrainingError: the run cannot start (no train split, QLoRA without CUDA...).

    Examples:
        >>> # result = finetune(FinetuneConfig(base_model="google/paligemma-3b-pt-448", data="data/pallets",
        >>> #                                  schema="pallet_label", output_dir="out/pallets"))
        >>> # InvoiceExtractor.from_pretrained(result.output_dir).extract("label.jpg")
    """
    require("Fine-tuning", "train", "torch", "transformers", "peft", "trl", "datasets")
    import transformers

    from invoice_vlm.data import load

    spec = resolve_schema(config.schema)
    prompt = config.prompt or spec.prompt
    if "<image>" in prompt:
        raise ConfigError(
            "The prompt must not contain '<image>'; the processor adds the image tokens.", key="prompt"
        )
    dataset = load(config.data, schema=spec, on_error=config.on_error)  # type: ignore[arg-type]
    train, val_documents, test = _splits(dataset)
    _check_prompts(dataset, prompt, config, spec)
    train = _one_page(train, "train")
    if len(train) == 0:
        raise TrainingError(f"The train split of {config.data} has no one-page document to train on.")
    val = _one_page(val_documents, "validation")
    if val is not None and len(val) == 0:
        val = val_documents = None
    device, dtype = resolve_device_dtype(config.device, None)
    transformers.set_seed(config.seed)
    model, processor, family = _load_model(config, device, dtype)
    image_options = _image_options(config, family, processor)
    model = _prepare_trainable(model, config, family)

    longest = _longest_target_tokens(processor, list(train["target"]))
    constrainable = _constrainable(list(train["target"]), spec)
    max_new_tokens = math.ceil(longest * 1.25) + 16
    invoice = {
        "processor": processor,
        "family": family,
        "image_options": image_options,
        "prompt": prompt,
        "schema": spec,
        "device": device,
        "max_new_tokens": max_new_tokens,
        "constrained": None if constrainable else False,
        "eval_max_documents": config.eval_max_documents,
        "batch_size": config.per_device_train_batch_size,
        "answer_only_logits": config.answer_only_logits,
        "eval_documents": val_documents,  # scored whole, multi-page documents included
    }
    callbacks = list(callbacks or [])
    if config.early_stopping_patience:
        if val is None:
            raise ConfigError(
                "early_stopping_patience needs a validation split (valid/validation) in the data."
            )
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = _trainer_class()(
        model=model,
        args=_sft_config(config, val is not None, device, dtype),
        data_collator=collator or _collator(family, processor, prompt, config.max_length, image_options),
        train_dataset=train,
        eval_dataset=val,
        processing_class=processor,
        callbacks=callbacks,
        invoice=invoice,
    )
    resume: str | bool | None = config.resume_from_checkpoint
    if resume == "latest":
        resume = True
    train_output = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, float] = {
        k: float(v) for k, v in train_output.metrics.items() if isinstance(v, (int, float))
    }
    metrics["global_step"] = float(trainer.state.global_step)
    out = Path(config.output_dir)
    # Under FSDP each process holds a shard of every weight: gathering them and generating are collective, so every
    # process takes part in both (greedy decoding gives each the same outputs; transformers keeps their steps in
    # sync). Under DDP or on one device the state dict is the model's own and only the main process generates.
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False))
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    report = None
    final_split = test if test is not None else val_documents
    if final_split is not None and (sharded or trainer.is_world_process_zero()):
        invoice["eval_max_documents"] = None
        report = _generate_and_score(trainer.accelerator.unwrap_model(trainer.model), final_split, invoice)
        report.info.update(split="test" if test is not None else "valid", base_model=config.base_model)
    if trainer.is_world_process_zero():
        if report is not None:
            metrics.update(report.metrics)
        generation = GenerationSettings(
            max_new_tokens=max_new_tokens, constrained=None if constrainable else False
        )
        _save(
            trainer,
            state_dict,
            processor,
            family,
            image_options,
            config,
            spec,
            prompt,
            generation,
            out,
            dataset,
            metrics,
            report,
            longest,
        )
    return FinetuneResult(output_dir=out, metrics=metrics, report=report)


def _collator(
    family: Family, processor: Any, prompt: str, max_length: int | None, image_options: dict[str, Any]
) -> Any:
    """The family's training collator: PaliGemma's prefix-LM one, or the chat-template one."""
    if family.prompt_style == "prefix":
        return PaliGemmaCollator(processor, prompt, max_length)
    return ChatCollator(processor, prompt, family, max_length, image_options)


def _image_options(config: FinetuneConfig, family: Family, processor: Any) -> dict[str, Any]:
    """The image settings the run trains and saves: the config's, else the family's document defaults."""
    from invoice_vlm.backends.vlm import check_image_options

    if config.image_options is None:
        return dict(family.image_options)
    if family.prompt_style == "prefix" and config.image_options:
        raise ConfigError(
            f"{family.title} reads every page at its one fixed resolution; image_options do not apply to it.",
            key="image_options",
        )
    try:
        return check_image_options(processor, config.image_options, family)
    except ModelLoadError as exc:
        raise ConfigError(str(exc), key="image_options") from None


def _save(
    trainer: Any,
    state_dict: dict[str, Any],
    processor: Any,
    family: Family,
    image_options: dict[str, Any],
    config: FinetuneConfig,
    spec: SchemaSpec,
    prompt: str,
    generation: GenerationSettings,
    out: Path,
    dataset: Any,
    metrics: dict[str, float],
    report: EvaluationReport | None,
    longest: int,
) -> None:
    from invoice_vlm.finetune.card import model_card

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(
        str(out), state_dict=state_dict, safe_serialization=True
    )  # gathered: whole under FSDP
    processor.save_pretrained(str(out))
    ExtractorConfig(
        schema=spec.name,
        prompt=prompt,
        backend=family.backend,
        generation=dataclasses.asdict(generation),
        schema_version=spec.version,
        base_model=config.base_model,
        image_options=image_options,
    ).save(out)
    (out / "finetune_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out / "training_log.json").write_text(
        json.dumps(trainer.state.log_history, indent=2) + "\n", encoding="utf-8"
    )
    if report is not None:
        report.save(out / "evaluation")
    splits = {name: split.num_rows for name, split in dataset.items()}
    (out / "README.md").write_text(
        model_card(config, spec, prompt, splits, metrics, report, longest, generation.max_new_tokens, family),
        encoding="utf-8",
    )
    if config.push_to_hub and config.hub_model_id:
        from huggingface_hub import create_repo, upload_folder

        create_repo(config.hub_model_id, exist_ok=True)
        upload_folder(repo_id=config.hub_model_id, folder_path=str(out), ignore_patterns=[f"{CHECKPOINTS}/*"])
