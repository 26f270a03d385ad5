#!/usr/bin/env bash
# KNN evaluation of the paper-protocol runs (CIFAR-100, Tiny-ImageNet) with the monitor of each
# method's code base.
# Usage: knn.sh METHOD CHECKPOINT TRAIN_DIR VAL_DIR [extra knn flags ...]
#   mocov2plus: k 200, T 0.1, cosine on the normalised 128-d head output (Un-Mix unmix_c100.py)
#   byol, simclr: k 5, Euclidean, unweighted majority vote on the backbone (W-MSE eval/knn.py)
#   simsiam: k 200, T 0.1, cosine on the backbone (PatrickHua/SimSiam tools/knn_monitor.py)
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 METHOD CHECKPOINT TRAIN_DIR VAL_DIR [knn flags ...]" >&2
  exit 2
fi
method="$1"; checkpoint="$2"; train="$3"; val="$4"; shift 4
case "$method" in
  mocov2plus) flags=(--k 200 --temperature 0.1 --distance cosine --feature projector) ;;
  byol|simclr) flags=(--k 5 --distance euclidean --vote majority) ;;
  simsiam) flags=(--k 200 --temperature 0.1 --distance cosine) ;;
  *) echo "error: unknown method '$method': use mocov2plus, byol, simclr or simsiam" >&2; exit 2 ;;
esac
exec solo-mixmask knn "$checkpoint" --train-path "$train" --val-path "$val" \
  --method "$method" "${flags[@]}" "$@"
