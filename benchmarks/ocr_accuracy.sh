#!/usr/bin/env bash
# Field accuracy of the offline OCR backend on generated test splits of every template, clean, photo and rotated,
# measured with the public CLI. Usage: bash benchmarks/ocr_accuracy.sh [N_PER_SPLIT] [WORKDIR]
set -euo pipefail
n=${1:-10}
work=${2:-$(mktemp -d)}
printf '%-13s %-11s %-6s %s\n' schema template style "evaluate summary"
for schema in pallet_label invoice; do
  templates=$(python -c "from invoice_vlm.data.synth import TEMPLATES; print(' '.join(sorted(TEMPLATES['$schema'])))")
  for template in $templates; do
    for style in clean photo rotated; do
      data="$work/$schema-$template-$style"
      invoice-vlm synth --schema "$schema" --template "$template" --style "$style" --n "$n" --seed 11 \
        --split 0,0,1 --out "$data" --no-progress > /dev/null
      summary=$(invoice-vlm evaluate --backend ocr --schema "$schema" --data "$data" --split test --no-progress)
      printf '%-13s %-11s %-6s %s\n' "$schema" "$template" "$style" "$summary"
    done
  done
done
