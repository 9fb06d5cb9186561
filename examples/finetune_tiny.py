"""Fine-tune, reload and evaluate end to end on a CPU in about two minutes, offline.

A tiny random model stands in for the real one (same code paths); it memorizes four generated pallet labels. Any
family in invoice_vlm.families works (qwen_vl needs torchvision).

    python examples/finetune_tiny.py [WORKDIR] [--family paligemma|idefics3|gemma3|qwen_vl]
"""

import argparse
import json
from pathlib import Path

from PIL import ImageDraw

from invoice_vlm import InvoiceExtractor, get_schema
from invoice_vlm.data.synth import generate
from invoice_vlm.finetune import FinetuneConfig, finetune
from invoice_vlm.testing import build_tiny_model


def main(work: Path, family: str) -> None:
    base = build_tiny_model(family, work / f"tiny-{family}")
    spec = get_schema("pallet_label")
    train = work / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows, docs = [], []
    for i, color in enumerate(["red", "green", "blue", "orange"]):
        doc = generate(spec, i)
        image = doc.image.copy()
        # A 64-pixel tiny model cannot read text; a coloured band lets it tell the four pages apart.
        ImageDraw.Draw(image).rectangle([0, 0, image.width, image.height // 3], fill=color)
        image.save(train / f"{i}.png")
        rows.append({"image": f"{i}.png", "prefix": spec.prompt, "suffix": spec.dumps(doc.data)})
        docs.append((image, doc.data))
    (train / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = finetune(
        FinetuneConfig(
            base_model=str(base),
            data=str(work / "data"),
            schema="pallet_label",
            output_dir=str(work / "out"),
            num_train_epochs=200,
            learning_rate=1e-2 if family == "gemma3" else 5e-3,
            per_device_train_batch_size=4,
        )
    )
    extractor = InvoiceExtractor.from_pretrained(result.output_dir)
    for image, truth in docs:
        got = extractor.extract(image)
        print(got.valid, got.to_dict() == truth, got.to_dict().get("shipment_id"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", nargs="?", default="tiny-finetune", type=Path)
    parser.add_argument("--family", default="paligemma", help="(default: paligemma)")
    args = parser.parse_args()
    main(args.workdir, args.family)
