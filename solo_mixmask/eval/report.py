"""``solo-mixmask report``: tables of result records and training curves of pretraining runs.

Tables are shaped like the paper's Table 5: one row per variant (vanilla, Un-Mix, MixMask,
MixMask*, and erase-based masking when present), one column per method / dataset / epochs, one table
per evaluation protocol. Curves are the KNN accuracy and the training loss against epochs (the
paper's Figure 5), read from the CSV logs of pretraining runs, where a resumed run has one
``logs/version_*`` folder per session: later sessions override earlier ones epoch by epoch.
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..errors import DataError
from .records import VARIANTS, base_method, load_records, read_run_args, variant_of

VARIANT_LABELS = {"vanilla": "Vanilla", "unmix": "Un-Mix", "mixmask": "MixMask",
                  "mixmask_star": "MixMask*", "erase": "Erase-based"}
METHOD_LABELS = {"mocov2plus": "MoCo v2", "byol": "BYOL", "simclr": "SimCLR",
                 "simsiam": "SimSiam"}
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny-imagenet": "Tiny-ImageNet",
                  "imagenet100": "ImageNet-100", "imagenet": "ImageNet", "stl10": "STL-10"}
KNN_COLUMN = "val_knn_acc1"
LOSS_COLUMNS = ("train_loss_epoch", "train_loss")


# ------------------------------------------------------------------------------------ curves
def _version_number(path: Path) -> int:
    m = re.search(r"version_(\d+)$", path.name)
    return int(m.group(1)) if m else -1


def metrics_files(run_dir: str | os.PathLike) -> list[Path]:
    """``logs/version_*/metrics.csv`` of a run, in session order; a flat ``metrics.csv`` beside
    ``args.json`` (a copied run, kept shallow) comes first."""
    run_dir = Path(run_dir)
    versions = sorted(run_dir.glob("logs/version_*"), key=_version_number)
    flat = [run_dir / "metrics.csv"] if (run_dir / "metrics.csv").is_file() else []
    return flat + [v / "metrics.csv" for v in versions if (v / "metrics.csv").is_file()]


def _number(text: Optional[str]) -> Optional[float]:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def epoch_metrics(run_dir: str | os.PathLike) -> dict[str, dict[int, float]]:
    """``{column: {epoch: value}}`` merged over every logging session of a run; for an epoch
    logged twice (a resumed run repeating it), the later session wins."""
    merged: dict[str, dict[int, float]] = defaultdict(dict)
    for path in metrics_files(run_dir):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                epoch = _number(row.get("epoch"))
                if epoch is None:
                    continue
                for column, text in row.items():
                    value = _number(text)
                    if column not in ("epoch", "step") and value is not None:
                        merged[column][int(epoch)] = value
    return dict(merged)


@dataclass
class Run:
    path: Path
    label: str
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    method: str = ""

    def series(self, columns: Sequence[str]) -> tuple[list[int], list[float]]:
        for column in columns:
            points = self.curves.get(column)
            if points:
                epochs = sorted(points)
                return [e + 1 for e in epochs], [points[e] for e in epochs]
        return [], []


def run_label(run_dir: Path, args: Optional[dict[str, Any]] = None) -> str:
    args = (read_run_args(run_dir) or {}) if args is None else args
    method = METHOD_LABELS.get(base_method(args.get("method", "")), args.get("method", "?"))
    variant = VARIANT_LABELS.get(variant_of(args), "?") if args else "?"
    dataset = (args.get("data") or {}).get("dataset", "")
    return f"{method} {variant} {DATASET_LABELS.get(dataset, dataset)} ({run_dir.name})".strip()


def is_run_dir(path: Path) -> bool:
    return (path / "args.json").is_file() and bool(metrics_files(path))


def find_runs(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Pretraining run directories at or below ``roots`` (those with args.json and CSV logs)."""
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for cand in [root, *(p.parent for p in root.rglob("args.json"))]:
            if is_run_dir(cand):
                found.setdefault(str(cand.resolve()), cand)
    return [found[k] for k in sorted(found)]


def load_runs(paths: Iterable[Path]) -> list[Run]:
    runs = []
    for p in paths:
        args = read_run_args(p) or {}
        runs.append(Run(p, run_label(p, args), epoch_metrics(p),
                        base_method(args.get("method", ""))))
    return [r for r in runs if r.curves]


def run_group(run: Run) -> str:
    """Runs that differ only by their seed (a ``-s<N>`` or ``seed<N>`` suffix of the folder name)
    share a group, hence a colour in the plot."""
    return re.sub(r"[-_]?(s|seed)\d+$", "", run.path.name) or run.label


LINE_STYLES = ("-", "--", ":", "-.")


def colour_key(run: Run) -> str:
    """The run's group without its method prefix, so that a variant keeps its colour in every
    method's row (``byol-mixmask-50ep`` and ``mocov2plus-mixmask-50ep`` share one)."""
    group = run_group(run)
    prefix = f"{run.method}-"
    return group[len(prefix):] if run.method and group.startswith(prefix) else group


def curve_panels(runs: Sequence[Run]) -> tuple[dict[str, dict[str, list[Run]]], dict[str, int]]:
    """Runs arranged for the plot: one row per method (in the tables' order), groups of seeds
    within a row, and a colour index per variant shared across rows."""
    rows: dict[str, dict[str, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: (_method_order(r.method), r.method)):
        rows.setdefault(run.method, defaultdict(list))[run_group(run)].append(run)
    counts = Counter(colour_key(run) for run in runs)
    return rows, colour_indices(sorted(counts, key=lambda k: (-counts[k], k)))


#: the variants' own colours (of ``PALETTE``): vanilla blue and MixMask red, as in the paper's
#: Figure 5
VARIANT_COLOURS = {"vanilla": 0, "mixmask": 3, "unmix": 2, "mixmask_star": 1, "erase": 4}
#: tab20's colours, the dark shade of each pair first, then the light ones
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def colour_indices(keys: Sequence[str]) -> dict[str, int]:
    """A distinct palette index per colour key (while there are colours left): the first group of
    each variant in ``keys`` (callers put the most common budget first) takes the variant's
    colour, every other group a free one."""
    out: dict[str, int] = {}
    taken: set[int] = set()
    for key in keys:
        variant = re.sub(r"-\d+ep$", "", key)
        own = VARIANT_COLOURS.get(variant)
        if own is not None and own not in taken:
            out[key] = own
            taken.add(own)
    free = [i for i in range(len(PALETTE)) if i not in taken and i not in VARIANT_COLOURS.values()]
    free += [i for i in range(len(PALETTE)) if i not in taken and i not in free]
    for key in keys:
        if key not in out:
            out[key] = free.pop(0) if free else len(out) % len(PALETTE)
    return out


def plot_curves(runs: Sequence[Run], out: str | os.PathLike) -> Path:
    """KNN top-1 and training loss against epochs as a PNG: one row per method, one colour per
    variant (group of runs that differ by seed), one line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, colour_of = curve_panels(runs)
    colours = PALETTE
    fig, axes = plt.subplots(max(len(rows), 1), 2, figsize=(14, 3.8 * max(len(rows), 1)),
                             squeeze=False)
    for (ax_knn, ax_loss), (method, groups) in zip(axes, rows.items()):
        for members in groups.values():
            for i, run in enumerate(members):
                style = {"color": colours[colour_of[colour_key(run)] % len(colours)],
                         "linestyle": LINE_STYLES[i % len(LINE_STYLES)]}
                for ax, columns in ((ax_knn, (KNN_COLUMN,)), (ax_loss, LOSS_COLUMNS)):
                    x, y = run.series(columns)
                    if x:
                        ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3,
                                label=run.label, **style)
        name = METHOD_LABELS.get(method, method) if method else "runs"
        ax_knn.set(xlabel="epoch", ylabel="KNN top-1 (%)", title=f"{name}: KNN accuracy")
        ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"{name}: loss")
        for ax in (ax_knn, ax_loss):
            ax.grid(alpha=0.3)
        if ax_loss.get_legend_handles_labels()[0]:
            ax_loss.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------ tables
def table_key(record: dict[str, Any]) -> str:
    """The protocol a number belongs to: numbers of different protocols never share a table."""
    s = record.get("settings") or {}
    kind = str(record["eval"])
    if kind == "knn":
        bank = "" if s.get("bank", "clean") == "clean" else ", bank of training crops"
        vote = ", majority vote" if s.get("vote", "weighted") == "majority" else ""
        feature = ", head output" if s.get("feature", "backbone") == "projector" else ""
        temperature = "" if vote else f"T={s.get('temperature', '?')}, "
        return (f"KNN (k={s.get('k', '?')}, {temperature}{s.get('distance', 'cosine')}"
                f"{vote}{feature}{bank})")
    protocol = s.get("protocol", "frozen")
    if kind == "semi":
        return f"Semi-supervised, {s.get('labels', '?')} labels ({protocol})"
    name = "Linear" if kind == "linear" else kind
    return f"{name} ({protocol})"


def column_key(record: dict[str, Any]) -> tuple[str, str, str]:
    epochs = record.get("epochs")
    return (str(record["method"]), str(record["dataset"]), "" if epochs is None else str(epochs))


def _method_order(method: str) -> int:
    order = list(METHOD_LABELS)
    return order.index(method) if method in order else len(order)


def _column_order(col: tuple[str, str, str]) -> tuple[int, str, float]:
    """Methods in the paper's order, then datasets, then epochs as numbers (50 before 100)."""
    method, dataset, epochs = col
    return (_method_order(method), dataset, float(epochs) if epochs.isdigit() else -1.0)


def _column_label(col: tuple[str, str, str]) -> str:
    method, dataset, epochs = col
    label = f"{METHOD_LABELS.get(method, method)} / {DATASET_LABELS.get(dataset, dataset)}"
    return f"{label} ({epochs} ep)" if epochs else label


def _cell(values: list[float]) -> str:
    """One run as its value; repeated runs (seeds) as the mean with the range and the count,
    which with two or three seeds says more than a standard deviation."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return (f"{statistics.mean(values):.2f} ({min(values):.2f}–{max(values):.2f}, "
            f"n={len(values)})")


def markdown_table(records: Sequence[dict[str, Any]], metric: str = "acc1") -> str:
    """One Table-5-shaped markdown table: variants down, method / dataset / epochs across; the
    best mean of each column in bold; repeated runs as mean (range, n)."""
    cells: dict[tuple[str, tuple[str, str, str]], list[float]] = defaultdict(list)
    for r in records:
        value = (r.get("metrics") or {}).get(metric)
        if value is not None:
            cells[(str(r["variant"]), column_key(r))].append(float(value))
    columns = sorted({c for _, c in cells}, key=_column_order)
    present = {v for v, _ in cells}
    rows = [v for v in VARIANTS if v in present or v != "erase"]
    rows += sorted(present - set(VARIANTS))
    means = {key: statistics.mean(v) for key, v in cells.items()}
    best = {c: max(m for (_, col), m in means.items() if col == c) for c in columns}
    filled = {c: sum(1 for (_, col) in means if col == c) for c in columns}
    lines = ["| Variant | " + " | ".join(_column_label(c) for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in rows:
        out = []
        for c in columns:
            values = cells.get((row, c))
            if not values:
                out.append("–")
                continue
            text = _cell(values)
            out.append(f"**{text}**" if filled[c] > 1 and means[(row, c)] == best[c] else text)
        lines.append(f"| {VARIANT_LABELS.get(row, row)} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def render_tables(records: Sequence[dict[str, Any]], metric: str = "acc1") -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[table_key(r)].append(r)
    parts = []
    for key in sorted(groups):
        parts += [f"### {key}, {metric.replace('acc', 'top-')} (%)", "",
                  markdown_table(groups[key], metric), ""]
    return "\n".join(parts)


def _minutes(seconds: Any) -> str:
    return f"{float(seconds) / 60:.1f}" if isinstance(seconds, (int, float)) else "–"


def records_table(records: Sequence[dict[str, Any]]) -> str:
    """Every record on its own row, with where it came from (seed, wall time, commit, device), so a
    reader can check each number behind a table cell; the machines are listed under the table."""
    def order(r: dict[str, Any]) -> tuple:
        s = r.get("settings") or {}
        return (table_key(r), _column_order(column_key(r)),
                VARIANTS.index(r["variant"]) if r["variant"] in VARIANTS else len(VARIANTS),
                str(r["variant"]), str(s.get("seed", "")), str(r.get("created", "")))

    lines = ["| Protocol | Method / dataset | Variant | Seed | Top-1 | Top-5 | Run wall time (min) "
             "| Commit |", "|---|---|---|---|---|---|---|---|"]
    machines: list[str] = []
    for r in sorted(records, key=order):
        s = r.get("settings") or {}
        m = r.get("metrics") or {}
        top = [f"{m[k]:.2f}" if isinstance(m.get(k), (int, float)) else "–" for k in ("acc1", "acc5")]
        lines.append(f"| {table_key(r)} | {_column_label(column_key(r))} "
                     f"| {VARIANT_LABELS.get(r['variant'], r['variant'])} | {s.get('seed', '–')} "
                     f"| {top[0]} | {top[1]} | {_minutes(s.get('wall_time_s'))} "
                     f"| {s.get('commit', '–')} |")
        where = s.get("machine") or s.get("device")
        if where and where not in machines:
            machines.append(str(where))
    lines += [""] + [f"Machine: {m}" for m in machines]
    return "\n".join(lines).rstrip()


@dataclass
class Report:
    markdown: str
    markdown_path: Optional[Path]
    figure_path: Optional[Path]
    records: int
    runs: int


def build_report(results_dir: str | os.PathLike, runs: Sequence[str | os.PathLike] = (),
                 out_dir: Optional[str | os.PathLike] = None, metric: str = "acc1",
                 plot: bool = True) -> Report:
    """The tables as markdown, and with ``out_dir`` also ``report.md`` and ``curves.png`` (when
    training logs are found) written there; without it nothing is written (the records folder is
    an input, never an output by default). Runs come from ``runs``, from the records' ``run_dir``
    and from run folders below ``results_dir``."""
    records = load_records(results_dir)
    run_roots = [Path(r) for r in runs]
    missing = [str(r) for r in run_roots if not r.exists()]
    if missing:
        raise DataError(f"run directory not found: {missing[0]}")
    run_roots += [Path(r["run_dir"]) for r in records
                  if r.get("run_dir") and Path(r["run_dir"]).is_dir()]
    run_roots.append(Path(results_dir))
    loaded = load_runs(find_runs(run_roots))
    if not records and not loaded:
        raise DataError(f"no result records (*.json with schema solo-mixmask/result/1) and no "
                        f"training logs under {results_dir}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out}: this is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
    figure = plot_curves(loaded, out / "curves.png") if plot and loaded and out else None
    lines = ["# Results", ""]
    lines.append(render_tables(records, metric) if records else "No result records.")
    if records:
        lines += ["", "## Records", "", records_table(records)]
    if figure is not None:
        lines += ["", "## Training curves", "", f"![KNN accuracy and loss]({figure.name})", ""]
        lines += [f"- {r.label}: `{r.path}`" for r in loaded]
    markdown = "\n".join(lines).rstrip() + "\n"
    md_path = out / "report.md" if out is not None else None
    if md_path is not None:
        md_path.write_text(markdown)
    return Report(markdown, md_path, figure, len(records), len(loaded))
