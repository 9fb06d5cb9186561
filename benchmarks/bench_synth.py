"""How fast the synthetic generator writes documents, per schema and style, against the issue's budget.

    python benchmarks/bench_synth.py [--n 200]

Goal: 200 documents of either schema in well under a minute on 2 CPU cores. The ratio column is elapsed time over
that 60 s budget (below 1.0 meets it), measured in this one run for every schema and style side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from invoice_vlm.data.synth import write_dataset

BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="documents per schema and style (default: 200)")
    args = parser.parse_args()
    print(f"{'schema':<14}{'style':<8}{'docs':>6}{'seconds':>10}{'docs/s':>9}{'vs 60s budget (n=200)':>24}")
    for schema in ("pallet_label", "invoice"):
        for style in ("clean", "photo", "mixed"):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                write_dataset(schema, args.n, tmp, seed=0, style=style)  # type: ignore[arg-type]
                elapsed = time.perf_counter() - start
            scaled = elapsed * 200 / args.n
            print(
                f"{schema:<14}{style:<8}{args.n:>6}{elapsed:>10.1f}{args.n / elapsed:>9.1f}{scaled / BUDGET_S:>24.2f}"
            )


if __name__ == "__main__":
    main()
