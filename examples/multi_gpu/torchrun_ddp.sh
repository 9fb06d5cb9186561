#!/usr/bin/env bash
# DDP with plain torchrun, no accelerate config: one process per GPU on this machine.
#   bash examples/multi_gpu/torchrun_ddp.sh examples/finetune_pallet_label.yaml [more finetune flags]
# GPUS (default: all visible) sets the process count; on several machines add --nnodes/--node-rank/--rdzv-endpoint.
set -euo pipefail
config="${1:?usage: torchrun_ddp.sh CONFIG.yaml [finetune flags]}"
shift
gpus="${GPUS:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}"
exec torchrun --standalone --nproc_per_node "$gpus" -m invoice_vlm.cli finetune --config "$config" "$@"
