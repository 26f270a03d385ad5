"""Golden first steps: every shipped pretraining config's first optimizer step on fixed real images.

Each case's config runs in its smallest faithful form (below); the table records what the step
computed and what it was computed from.

The cases: every shipped config, five of the paper's CIFAR configs again with ``data.format:
device``, and four branch variants of MixMask-MoCo v2 that no config ships. For each:

- ``config``: a digest of each section of the validated config as shipped (before the small-form
  overrides), so that a changed recipe value, loss weight or schema default shows up even where the
  step's random draws would not reveal it;
- ``metrics``: every value the step logged (the loss and each MixMask term, lambda);
- ``weights``: the sum and the sum of squares (float64) of every module's tensors after the step
  and the momentum update.

``tests/test_golden_steps.py`` recomputes each family and compares; regenerate the table after a
deliberate change and review the diff it prints::

    python tests/golden.py            # rewrites tests/data/golden_first_steps.json, prints changes
    python tests/golden.py --check    # prints changes only

The small form: 8 images per batch (SplitBatchNorm's 8 groups divide it), ResNet width 0.25, one
step, no KNN, no checkpoint, no logger; 224 px configs crop at 96 px, which keeps the ImageNet stem
(the CIFAR stem is chosen at 64 px and below) and every mask grid (8 x 8 cells of 12 px), so nothing
the step tests depends on the crop. Data: the first images of the session's real image trees
(``conftest.py``): CIFAR-10 for the CIFAR folders, Tiny-ImageNet, Imagenette for the 224 px ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).parent / "data" / "golden_first_steps.json"
PRETRAIN = REPO / "scripts" / "pretrain"
#: tolerance of a comparison (relative and absolute): on one machine and thread count the step
#: repeats exactly; another thread count or CPU changes the reduction order of the convolutions.
#: Measured, 1 against 2 threads on one machine: at most 7.4e-7 apart on a loss term (SimSiam's are
#: near 0) and 2e-9 relative on a weight sum; the table written on an Intel Xeon against an AMD
#: EPYC: 7.2e-5 on BYOL's loss of the 224 px custom configs (1.8e-5 relative). A changed sign or
#: weight moves a term by far more.
TOL = 1e-4
#: which image tree each config folder trains on, and the dataset it is then declared as
DATA = {"cifar": ("cifar", "cifar10"), "cifar100": ("cifar", "cifar10"),
        "tiny-imagenet": ("tiny", None), "imagenet": ("imagenette", "custom"),
        "imagenet-100": ("imagenette", "custom"), "custom": ("imagenette", None)}
#: the unpacked trees: (npz below the shared data folder, images per class)
TREES = {"cifar": ("cifar10-jpeg/train.npz", 50), "tiny": ("tiny-imagenet-200-32px/train.npz", 2),
         "imagenette": ("imagenette2-224px/train_200pc.npz", 10)}
SMALL_CROP = 96
#: the paper's CIFAR configs trained again from images held on the device (batched crops): every
#: method and every branch once, both recipes (symmetric; BYOL's asymmetric one)
DEVICE_CASES = ("mocov2plus.yaml", "mocov2plus_mixmask.yaml", "byol_mixmask_star.yaml",
                "simclr_erase.yaml", "simsiam_unmix.yaml")
#: branch variants of MixMask-MoCo v2 (paper CIFAR config) that no shipped config holds
VARIANTS = {
    "discrete-random-per-sample": ["method_kwargs.mixmask.pattern=discrete",
                                   "method_kwargs.mixmask.permutation=random",
                                   "method_kwargs.mixmask.per_sample=true",
                                   "method_kwargs.mixmask.grid=4"],
    "erase-zero-both-crops": ["method_kwargs.mixmask.fill=zero", "method_kwargs.mixmask.crops=both"],
    "ratio-range": ["method_kwargs.mixmask.ratio=[0.3,0.7]"],
    "one-key-target": ["method_kwargs.mixmask.targets=other"],
}


def shipped_configs() -> list[Path]:
    return sorted(PRETRAIN.glob("*/*.yaml")) + sorted((PRETRAIN / "paper").glob("*/*.yaml"))


def family(path: Path) -> str:
    rel = path.relative_to(PRETRAIN)
    return str(rel.parent)


def cases() -> dict[str, dict[str, Any]]:
    """``{case id: {path, family, overrides}}`` in a stable order."""
    out: dict[str, dict[str, Any]] = {}
    for path in shipped_configs():
        out[str(path.relative_to(PRETRAIN))] = {"path": path, "family": family(path), "extra": []}
    for name in DEVICE_CASES:
        path = PRETRAIN / "paper" / "cifar100" / name
        out[f"device:{path.relative_to(PRETRAIN)}"] = {"path": path, "family": "device-format",
                                                        "extra": ["data.format=device"]}
    base = PRETRAIN / "paper" / "cifar100" / "mocov2plus_mixmask.yaml"
    for name, extra in VARIANTS.items():
        out[f"variant:{name}"] = {"path": base, "family": "branch-variants", "extra": extra}
    return out


def small_form(path: Path, tree: Path, work: Path) -> list[str]:
    _, dataset = DATA[path.parent.name]
    out = [f"data.train_path={tree}", "data.val_path=null", "data.num_workers=0",
           "optimizer.batch_size=8", "limit_train_batches=1", "knn_eval.enabled=false",
           "checkpoint.enabled=false", "auto_resume.enabled=false", "enable_progress_bar=false",
           "enable_model_summary=false", f"checkpoint.dir={work}", "backbone.kwargs.width=0.25",
           f"data.device.cache_dir={work.parent / 'resident'}"]
    return out + ([f"data.dataset={dataset}"] if dataset else [])


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_digest(cfg: Any) -> dict[str, str]:
    """A digest per section of a validated config (the top-level scalars together; data paths left
    out)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in ("train_path", "val_path"):
        values["data"].pop(key, None)
    sections = {k: v for k, v in values.items() if isinstance(v, (dict, list))}
    scalars = {k: v for k, v in values.items() if k not in sections}
    return {"(top level)": digest(scalars), **{k: digest(v) for k, v in sorted(sections.items())}}


class StepMetrics(Callback):
    """What the first step logged, read right after it."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx == 0:  # ``x_step`` repeats ``x`` on the first step
            self.values = {k: float(v) for k, v in trainer.callback_metrics.items()
                           if torch.is_tensor(v) and v.numel() == 1 and not k.endswith("_step")}


def weight_sums(model: torch.nn.Module) -> dict[str, list[float]]:
    """``{top-level module: [sum, sum of squares]}`` of its floating tensors, in float64."""
    sums: dict[str, list[float]] = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        group = key.split(".")[0]
        v = value.detach().double()
        s = sums.setdefault(group, [0.0, 0.0])
        s[0] += float(v.sum())
        s[1] += float((v * v).sum())
    return {group: [float(f"{x:.12g}") for x in pair] for group, pair in sums.items()}


def first_step(case: dict[str, Any], trees: dict[str, Path], work: Path) -> dict[str, Any]:
    """The case's config as shipped (its digest), then its small form's first step."""
    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg, pretrain

    path = case["path"]
    shipped = load_config(str(path.parent), path.name)
    tree = trees[DATA[path.parent.name][0]]
    cfg = OmegaConf.merge(shipped, OmegaConf.from_dotlist(small_form(path, tree, work)
                                                          + list(case["extra"])))
    if DATA[path.parent.name][0] == "imagenette":
        for aug in cfg.augmentations:
            aug.crop_size = SMALL_CROP
    metrics = StepMetrics()
    result = pretrain(cfg, callbacks=[metrics], trainer_kwargs={"logger": False, "max_steps": 1})
    return {"config": config_digest(parse_pretrain_cfg(shipped)), "metrics": metrics.values,
            "weights": weight_sums(result.model)}


def compute(ids: list[str], trees: dict[str, Path], work: Path) -> dict[str, Any]:
    table = cases()
    return {case_id: first_step(table[case_id], trees, work / str(i)) for i, case_id in
            enumerate(ids)}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Human-readable differences between two tables (only the cases in ``got``)."""
    out = []
    for case_id, new in got.items():
        old = expected.get(case_id)
        if old is None:
            out.append(f"{case_id}: new case")
            continue
        for section, value in new["config"].items():
            if old["config"].get(section) != value:
                out.append(f"{case_id}: config section {section!r} changed")
        out += [f"{case_id}: config section {s!r} removed" for s in old["config"]
                if s not in new["config"]]
        for key in sorted(set(old["metrics"]) | set(new["metrics"])):
            a, b = old["metrics"].get(key), new["metrics"].get(key)
            if a is None or b is None or not _close(a, b):
                out.append(f"{case_id}: {key} {a} -> {b}")
        for group in sorted(set(old["weights"]) | set(new["weights"])):
            a, b = old["weights"].get(group), new["weights"].get(group)
            if a is None or b is None or not all(_close(x, y) for x, y in zip(a, b)):
                out.append(f"{case_id}: weights of {group} {a} -> {b}")
    return out


def load_table() -> dict[str, Any]:
    return json.loads(TABLE.read_text()) if TABLE.is_file() else {}


def main(argv: Optional[list[str]] = None) -> int:
    from solo_mixmask.data.npz import shared_data_dir, unpack_npz

    p = argparse.ArgumentParser(description="Regenerates the golden first-step table.")
    p.add_argument("--check", action="store_true", help="print the differences, write nothing")
    p.add_argument("--only", default=None, help="cases whose id contains this text")
    args = p.parse_args(argv)
    torch.set_num_threads(2)  # as the test suite runs (conftest.py)
    root = shared_data_dir()
    if root is None:
        print("error: the real images (../shared/data) are needed", file=sys.stderr)
        return 2
    ids = [c for c in cases() if args.only is None or args.only in c]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {k: unpack_npz(root / npz, Path(tmp) / k, per_class) for k, (npz, per_class)
                 in TREES.items()}
        got = compute(ids, trees, Path(tmp) / "runs")
    old = load_table()
    changes = differences(old, got)
    removed = [c for c in old if c not in cases()]
    for line in changes + [f"{c}: removed" for c in removed]:
        print(line)
    print(f"{len(changes) + len(removed)} differences in {len(got)} cases")
    if not args.check:
        table = {c: v for c, v in old.items() if c in cases()}
        table.update(got)
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(json.dumps({c: table[c] for c in cases() if c in table}, indent=1) + "\n")
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
