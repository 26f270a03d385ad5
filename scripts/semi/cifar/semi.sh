#!/usr/bin/env bash
# Semi-supervised evaluation on cifar. Usage: semi.sh PERCENT CHECKPOINT [key=value ...]
#   PERCENT: 1 or 10 (picks {1,10}pct.yaml here); add finetune=true to fine-tune the backbone
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 2 ]]; then
  echo "usage: $0 PERCENT CHECKPOINT [key=value ...]" >&2
  exit 2
fi
pct="$1"; checkpoint="$2"; shift 2
exec solo-mixmask semi --config-path "$here" --config-name "${pct}pct.yaml" \
  pretrained_feature_extractor="$checkpoint" "$@"
