#!/usr/bin/env bash
# Linear evaluation of the paper's Tiny-ImageNet runs. Usage: linear.sh METHOD CHECKPOINT [key=value ...]
#   METHOD: byol, simclr (picks METHOD.yaml here)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 2 ]]; then
  echo "usage: $0 METHOD CHECKPOINT [key=value ...]" >&2
  exit 2
fi
method="$1"; checkpoint="$2"; shift 2
exec solo-mixmask linear --config-path "$here" --config-name "$method.yaml" \
  pretrained_feature_extractor="$checkpoint" "$@"
