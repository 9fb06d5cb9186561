"""Extract pallet labels with the reference fine-tune (GPU + Hugging Face access to the gated base model).

python examples/extract_pallet_label.py label1.jpg label2.jpg
"""

import json
import sys

from invoice_vlm import InvoiceExtractor


def main(paths: list[str]) -> None:
    ex = InvoiceExtractor.from_pretrained(
        "google/paligemma-3b-pt-448", adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label"
    )
    for result in ex.extract_batch(paths, batch_size=4):
        if result.valid:
            low = {k: round(v, 3) for k, v in result.confidence.items() if v < 0.9}
            print(result.source, json.dumps(result.to_dict()), "low confidence:", low)
        else:
            print(result.source, "INVALID:", "; ".join(result.errors))


if __name__ == "__main__":
    main(sys.argv[1:])
