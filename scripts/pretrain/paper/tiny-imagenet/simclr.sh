#!/usr/bin/env bash
# simclr on Tiny-ImageNet, the paper's protocol. Usage: simclr.sh [VARIANT] [key=value ...]
#   VARIANT: vanilla (default), unmix, mixmask, mixmask_star, erase
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
variant="vanilla"
if [[ $# -gt 0 && "$1" != *=* ]]; then variant="$1"; shift; fi
config="simclr"
[[ "$variant" != "vanilla" ]] && config="simclr_$variant"
exec solo-mixmask pretrain --config-path "$here" --config-name "$config.yaml" "$@"
