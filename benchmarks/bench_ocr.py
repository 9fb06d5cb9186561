"""Seconds per page of the offline OCR backend on this machine, against the 3 s/page goal.

    python benchmarks/bench_ocr.py [--pages 6]

Pages of both schemas, clean and photo, are generated first; the ratio column is measured seconds per page over the
3-second goal (below 1.0 meets it), all measured in this one run.
"""

from __future__ import annotations

import argparse
import time

from invoice_vlm import InvoiceExtractor
from invoice_vlm.data.synth import generate

GOAL_S = 3.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=6)
    args = parser.parse_args()
    start = time.perf_counter()
    extractors = {
        s: InvoiceExtractor.from_pretrained(backend="ocr", schema=s) for s in ("pallet_label", "invoice")
    }
    print(f"engine load: {time.perf_counter() - start:.2f} s (once per extractor)")
    print(f"{'schema':<14}{'style':<8}{'pages':>6}{'s/page':>9}{'vs 3 s goal':>13}")
    for schema, extractor in extractors.items():
        for style in ("clean", "photo"):
            images = [generate(schema, 100 + i, style=style).image for i in range(args.pages)]
            extractor.extract(images[0])  # warm up
            start = time.perf_counter()
            for image in images:
                extractor.extract(image)
            per_page = (time.perf_counter() - start) / len(images)
            print(f"{schema:<14}{style:<8}{len(images):>6}{per_page:>9.2f}{per_page / GOAL_S:>13.2f}")


if __name__ == "__main__":
    main()
