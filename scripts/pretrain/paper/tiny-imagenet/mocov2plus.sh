#!/usr/bin/env bash
# mocov2plus on Tiny-ImageNet, the paper's protocol. Usage: mocov2plus.sh [VARIANT] [key=value ...]
#   VARIANT: vanilla (default), unmix, mixmask, mixmask_star, erase
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
variant="vanilla"
if [[ $# -gt 0 && "$1" != *=* ]]; then variant="$1"; shift; fi
config="mocov2plus"
[[ "$variant" != "vanilla" ]] && config="mocov2plus_$variant"
exec solo-mixmask pretrain --config-path "$here" --config-name "$config.yaml" "$@"
