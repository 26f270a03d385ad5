#!/usr/bin/env bash
# Downloads the ImageNet-1K checkpoints of the model zoo and converts them to this package's format.
# Usage: zoo/imagenet.sh [DEST_DIR]   (default: trained_models/zoo/imagenet)
# Entries without a published sha256 are reported as unverified: check them, then run
# `solo-mixmask zoo pin NAME --dir DEST_DIR` once (docs/zoo.md).
set -euo pipefail
dest="${1:-trained_models/zoo/imagenet}"
for name in $(solo-mixmask zoo list --dataset imagenet --names); do
  solo-mixmask zoo download "$name" --dir "$dest" --convert
done
