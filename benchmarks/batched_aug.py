"""The batched recipe (solo_mixmask.data.batched) against torchvision's per-image transforms, and
how launch-light it is.

CIFAR-10's BYOL recipe (scripts/pretrain/cifar/augmentations/asymmetric.yaml: two 32 px crops per
image, random resized crop, colour jitter, grayscale, solarization on the second crop, flip; or
--recipe) on the same real CIFAR-10 training images, in one process. Printed side by side:

* images/s of three ways to make the crops, interleaved within each repetition in alternating order
  (median over repetitions, and the median of the per-repetition ratios, since a shared machine
  drifts): ``torchvision``: the recipe as torchvision.transforms.v2 transforms, image by image (the
  per-image path of solo-learn and of this package before); ``batched``: ``BatchedMultiCrop`` on
  the uint8 batch (the device path, here on --device); ``collate``: ``apply_images`` as a DataLoader
  worker's collate function runs it when image sizes differ (torchvision's resized crop per image,
  then the batched pixel stage);
* the eager op count of one two-crop batch: aten operators that compute (views and allocations
  left out), counted with a dispatch mode, by kind;
* the compiled graph: ``torch.compile(apply, fullgraph=True, dynamic=False)``, the aten operators
  of its graph (AOT-traced) and, with --inductor, the kernels inductor generates for it;
* host synchronisations in one training step of MixMask-MoCo v2 on the device path
  (``host_syncs.py``).

    python benchmarks/batched_aug.py                      # CPU, torch's default thread count
    python benchmarks/batched_aug.py --threads 1          # one core, as one DataLoader worker
    python benchmarks/batched_aug.py --device cuda --inductor
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omegaconf import OmegaConf  # noqa: E402
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from solo_mixmask.config.datasets import DATASETS  # noqa: E402
from solo_mixmask.config.schema import AugmentationConfig  # noqa: E402
from solo_mixmask.data import batched  # noqa: E402
from solo_mixmask.data.batched import BatchedMultiCrop  # noqa: E402
from solo_mixmask.data.npz import load_npz, shared_data_dir  # noqa: E402
from solo_mixmask.data.recipe import ASPECT_RATIO, CropRecipe, Recipe  # noqa: E402

RECIPE = REPO / "scripts" / "pretrain" / "cifar" / "augmentations" / "asymmetric.yaml"
#: aten operators that allocate or only change metadata: no kernel
NO_KERNEL = {"empty", "empty_strided", "empty_like", "lift_fresh", "detach", "alias",
             "_unsafe_view", "scalar_tensor"}


def load_images(data: Path, count: int) -> torch.Tensor:
    """The first ``count`` CIFAR-10 training images, decoded to one uint8 (N, 3, 32, 32) tensor."""
    z = load_npz(data / "cifar10-jpeg" / "train.npz")
    jpeg, offsets = z["jpeg"], z["offsets"]
    blobs = [torch.from_numpy(jpeg[offsets[i]:offsets[i + 1]].copy()) for i in range(count)]
    return torch.stack(decode_jpeg(blobs, mode=ImageReadMode.RGB))


def load_recipe(path: Path) -> Recipe:
    entries = OmegaConf.load(path)
    schema = OmegaConf.structured(AugmentationConfig)
    info = DATASETS["cifar10"]
    return Recipe(tuple(CropRecipe.from_config(OmegaConf.merge(schema, e)) for e in entries),
                  info.mean, info.std)


def torchvision_crop(r: CropRecipe, mean: Sequence[float],
                     std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One crop of the recipe as torchvision.transforms.v2 writes it (per image)."""
    mode = v2.InterpolationMode(r.interpolation)
    ops: list[Any] = [v2.RandomResizedCrop(r.size, scale=r.scale, ratio=ASPECT_RATIO,
                                           interpolation=mode, antialias=True) if r.rrc else
                      v2.Compose([v2.Resize(r.size, interpolation=mode, antialias=True),
                                  v2.CenterCrop(r.size)])]
    if r.jitter_prob > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(r.brightness, r.contrast, r.saturation, r.hue)],
                                  p=r.jitter_prob))
    if r.gray_prob > 0:
        ops.append(v2.RandomGrayscale(r.gray_prob))
    if r.blur_prob > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(r.kernel_size, r.sigma)], p=r.blur_prob))
    if r.solarize_prob > 0:
        ops.append(v2.RandomSolarize(128, r.solarize_prob))
    if r.equalize_prob > 0:
        ops.append(v2.RandomEqualize(r.equalize_prob))
    if r.flip_prob > 0:
        ops.append(v2.RandomHorizontalFlip(r.flip_prob))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


class OpCount(TorchDispatchMode):
    """Counts the aten operators that compute (views and allocations left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        view = any(r.alias_info is not None and not r.alias_info.is_write
                   for r in func._schema.returns)
        name = func.overloadpacket.__name__
        if not view and name not in NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def accelerator_form() -> Iterator[None]:
    """Runs the recipe's dense form (what an accelerator runs) on the CPU too."""
    before = batched.DENSE_DEVICE_TYPES
    batched.DENSE_DEVICE_TYPES = (*before, "cpu")
    try:
        yield
    finally:
        batched.DENSE_DEVICE_TYPES = before


def eager_ops(mc: BatchedMultiCrop, x: torch.Tensor) -> Counter[str]:
    """The ops of the form an accelerator runs (dense), counted wherever ``x`` is."""
    uniforms = mc.draw(x.shape[0], torch.Generator(device=x.device).manual_seed(0))
    with accelerator_form():
        mc.apply(x, uniforms)  # tables built outside the count
        with OpCount() as count:
            mc.draw(x.shape[0], torch.Generator(device=x.device).manual_seed(1))
            mc.apply(x, uniforms)
    return count.ops


def compiled_ops(mc: BatchedMultiCrop, x: torch.Tensor, inductor: bool) -> dict[str, Any]:
    """aten operators in the AOT graph of the compiled ``apply``; inductor's kernel count."""
    from torch._dynamo.backends.common import aot_autograd

    uniforms = mc.draw(x.shape[0], torch.Generator(device=x.device).manual_seed(0))
    ref = mc.apply(x, uniforms)
    nodes: list[int] = []

    def count(gm: torch.fx.GraphModule, _inputs: Any) -> Callable[..., Any]:
        nodes.append(sum(1 for n in gm.graph.nodes if n.op == "call_function"
                         and getattr(n.target, "is_view", False) is False))
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(mc._apply, fullgraph=True, dynamic=False,
                        backend=aot_autograd(fw_compiler=count))(x, uniforms)
    result: dict[str, Any] = {"graph_ops": sum(nodes), "graphs": len(nodes),
                              "equal": all(torch.equal(a, b) for a, b in zip(out, ref))}
    if inductor:
        from torch._inductor import metrics

        torch._dynamo.reset()
        metrics.reset()
        fn = torch.compile(mc._apply, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        out = fn(x, uniforms)
        result["inductor_kernels"] = metrics.generated_kernel_count
        result["inductor_compile_s"] = round(time.perf_counter() - start, 1)
        result["inductor_equal"] = all(torch.equal(a, b) for a, b in zip(out, ref))
    return result


def speed(recipe: Recipe, images: torch.Tensor, device: torch.device, batch: int,
          reps: int) -> dict[str, Any]:
    mc = BatchedMultiCrop(recipe)
    per_image = [torchvision_crop(r, recipe.mean, recipe.std) for r in recipe.crops]
    x_dev = images.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    sizes = [images[i, :, : 32 - (i % 2), :] for i in range(len(images))]  # two sizes: per-image crops

    def run_torchvision(lo: int) -> None:
        for img in images[lo:lo + batch]:
            for t in per_image:
                t(img)

    def run_batched(lo: int) -> None:
        mc(x_dev[lo:lo + batch], gen)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_collate(lo: int) -> None:
        mc.apply_images(sizes[lo:lo + batch], mc.draw(batch, torch.Generator().manual_seed(lo)))

    paths = {"torchvision": run_torchvision, "batched": run_batched, "collate": run_collate}
    for fn in paths.values():  # warm-up: tables, allocator, kernels
        fn(0)
    rates: dict[str, list[float]] = {k: [] for k in paths}
    n_batches = len(images) // batch
    for rep in range(reps):
        order = list(paths) if rep % 2 == 0 else list(reversed(paths))
        for name in order:
            start = time.perf_counter()
            for b in range(n_batches):
                paths[name](b * batch)
            rates[name].append(n_batches * batch / (time.perf_counter() - start))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in rates.items()}
    for name in ("batched", "collate"):
        out[f"{name}/torchvision"] = statistics.median(
            a / b for a, b in zip(rates[name], rates["torchvision"]))
    return out


def step_syncs(images: torch.Tensor, device: torch.device) -> tuple[int, list[str]]:
    """Host synchronisations in one training step of the paper's CIFAR MixMask-MoCo v2 (ResNet-18
    at 0.25x, batch 128) on a batch of these images made by the device path's recipe."""
    import host_syncs

    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import build_model, parse_pretrain_cfg

    path = REPO / "scripts" / "pretrain" / "paper" / "cifar100" / "mocov2plus_mixmask.yaml"
    cfg = OmegaConf.merge(load_config(str(path.parent), path.name), OmegaConf.from_dotlist([
        f"data.train_path={REPO}", "data.val_path=null", "data.dataset=cifar10",
        "optimizer.batch_size=128", "backbone.kwargs.width=0.25", "knn_eval.enabled=false"]))
    cfg = parse_pretrain_cfg(cfg)
    model = build_model(cfg).to(device)
    x = images[:128].to(device)
    recipe = Recipe.from_sections(cfg.augmentations, cfg.data)
    crops = BatchedMultiCrop(recipe)(x, torch.Generator(device=device).manual_seed(0))
    batch = [torch.arange(len(x), device=device), crops, torch.zeros(len(x), dtype=torch.long,
                                                                      device=device)]
    return host_syncs.count_step_syncs(model, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="an augmentations YAML list")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--inductor", action="store_true", help="also compile with inductor")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = args.data or shared_data_dir()
    recipe = load_recipe(args.recipe)
    images = load_images(data, args.images)
    print(f"recipe {args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe}"
          f": {recipe.num_crops} crops; batch {args.batch}; device {device}; "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}")
    s = speed(recipe, images, device, args.batch, args.reps)
    print(f"images/s (median of {args.reps})   torchvision {s['torchvision']:.0f}   "
          f"batched {s['batched']:.0f}   collate {s['collate']:.0f}")
    print(f"paired ratio to torchvision  batched {s['batched/torchvision']:.2f}x   "
          f"collate {s['collate/torchvision']:.2f}x")
    mc = BatchedMultiCrop(recipe)
    ops = eager_ops(mc, images[:args.batch].to(device))
    print(f"eager ops per two-crop batch: {sum(ops.values())} "
          f"({', '.join(f'{k} {v}' for k, v in ops.most_common(8))}, ...)")
    with accelerator_form():
        c = compiled_ops(mc, images[:args.batch].to(device), args.inductor)
    print(f"compiled (fullgraph=True): {c['graphs']} graph, {c['graph_ops']} aten ops, "
          f"same crops as eager: {c['equal']}"
          + (f"; inductor: {c['inductor_kernels']} kernels in {c['inductor_compile_s']} s, "
             f"same crops: {c['inductor_equal']}" if "inductor_kernels" in c else ""))
    count, where = step_syncs(images, device)
    print(f"host syncs in one training step (paper CIFAR MixMask-MoCo v2, device path): {count}"
          + (f" at {', '.join(where)}" if where else ""))


if __name__ == "__main__":
    main()
