"""Counting host synchronisations: the points where the host waits for the device.

On a GPU every value read back to the host (``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()``,
``.cpu()``), every result whose size depends on the data (``nonzero``, boolean-mask indexing) and
every blocking host-to-device copy (``torch.as_tensor(array, device=...)``, ``.to(device)`` of a
host tensor without ``non_blocking=True``) makes the host wait until the device has run everything
queued before it, so the host can no longer run ahead and the device idles while the next step is
launched. ``count_host_syncs()`` counts them while a block runs, and says where each came from::

    with count_host_syncs(*step_tensors(model, batch)) as syncs:
        model.training_step(batch, 0)  # without a trainer, ``self.log`` does nothing
    print(syncs.count, syncs.locations)

``count_step_syncs(model, batch)`` counts those of one ``training_step`` inside a short Lightning fit
(so ``self.log`` runs as in training); ``StepSyncs`` is the callback that does it within any fit.
Importing this module changes nothing; only the blocks counted are instrumented.

How a sync is recognised: a ``TorchFunctionMode`` sees every torch call made in the block (the
outermost one: a sync made inside a torch Python function such as ``F.*`` is not seen by it) and
applies the rules below to the tensors that live, or on a GPU would live, on the device.

Which tensors are device tensors. Where the block's tensors are on an accelerator, the ones whose
device is not the CPU. On the CPU every tensor is on the host, so the counter simulates the device:
the tensors given to ``count_host_syncs`` (the model's parameters and buffers, the batch) are device
tensors, and so is

- every result of a call that takes a device tensor (``x[perm]``, ``torch.where(m, x, y)``, ...);
- every tensor made with an explicit ``device=`` other than the string ``"cpu"`` (``torch.zeros(n,
  device=x.device)``), and every result of ``.to(<device>)``, ``.cuda()``.

Everything else is a host tensor: made without a device (``torch.randperm(n, generator=g)``), from
numpy, or by ``.cpu()`` / ``.to("cpu")``. The target of ``.to(...)`` decides the direction: a
``torch.device`` object (``x.device``, ``self.device``) or a tensor names the step's device, which on
a GPU run is the accelerator; only ``.cpu()`` and a target given as a string naming the CPU name the
host. So on the CPU a ``.cpu()`` / ``.to("cpu")`` counts exactly when its tensor is a device tensor,
i.e. when on a GPU it would be a device-to-host copy; on a host tensor it is a no-op and is not
counted. (A literal ``torch.device("cpu")`` target reads as the step's device: write ``.cpu()``.)

What is counted, for a device tensor ``t``:

- reading values: ``t.item()``, ``t.tolist()``, ``t.numpy()``, ``bool(t)``, ``int(t)``,
  ``float(t)``, ``t.__index__()`` (``range(t)``, a list index), ``format(t)``, ``repr(t)``,
  ``x in t``, ``torch.equal``, ``torch.allclose``;
- data-dependent sizes: ``nonzero``, ``argwhere``, ``masked_select``, ``unique``,
  ``torch.where(cond)``, ``bincount``, ``repeat_interleave``, indexing or assigning with a boolean
  tensor (``x[mask]``, ``x[mask] = v``);
- indexing or assigning with a host tensor (``x[host_idx]``, ``x[i] = host_values``; not a 0-dim
  one, which is read on the host): it is copied to the device first, blocking;
- device-to-host copies: ``t.cpu()``, ``t.to("cpu")``, ``host.copy_(t)``;
- blocking host-to-device copies (the source a host tensor, a numpy array or Python values):
  ``.to(device)``, ``.cuda()``, ``dev.copy_(host)`` without ``non_blocking=True``;
  ``torch.tensor`` / ``torch.as_tensor`` / ``torch.asarray`` / ``t.new_tensor`` onto the device.
  On the CPU the counter trusts ``non_blocking=True``; on a GPU the copy is only asynchronous from
  pinned memory, which ``solo_mixmask.utils.transfer.host_to_device`` provides.

Not counted: filling a device tensor from a Python scalar (``torch.full``, ``fill_``,
``x[i] = 1.0``) launches a kernel with the value as an argument, no copy.

On CUDA the counter also turns on ``torch.cuda.set_sync_debug_mode("warn")``: a synchronising CUDA
call that the rules above did not count (inside a torch Python function, in a C++ path) becomes an
event of kind ``cuda``, located by the torch call it happened in or by the warning.

Each event's location is the innermost frame inside the ``solo_mixmask`` package (else the innermost
frame outside torch and this module), as ``path:line``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch.overrides import TorchFunctionMode

import solo_mixmask
from solo_mixmask.utils.streams import tensors_in

PACKAGE = Path(solo_mixmask.__file__).resolve().parent
_ROOT = PACKAGE.parent
_TORCH = Path(torch.__file__).resolve().parent
_HERE = Path(__file__).resolve()

#: Tensor methods that read a value back to the host
VALUE_READS = frozenset({"item", "tolist", "numpy", "__bool__", "__int__", "__float__",
                         "__index__", "__complex__", "__format__", "__repr__", "__array__",
                         "__contains__", "is_nonzero", "equal", "allclose"})
#: calls whose result size depends on the values
DATA_SIZED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
                        "bincount", "repeat_interleave"})
#: factories that copy host data (Python values, numpy, host tensors) onto a given device
COPY_FACTORIES = frozenset({"tensor", "as_tensor", "asarray"})
_SYNC_WARNING = "synchroniz"  # the CUDA sync debug mode's warnings say "synchronizing"


@dataclass(frozen=True)
class SyncEvent:
    """One host synchronisation: what caused it and where (``path:line``)."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.where} {self.kind}"


@dataclass
class HostSyncs:
    """The synchronisations counted in a block."""

    events: list[SyncEvent] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def locations(self) -> list[str]:
        return [str(e) for e in self.events]


def _location() -> str:
    """The innermost frame inside solo_mixmask, else the innermost outside torch and here."""
    frame = sys._getframe(1)
    fallback: Optional[str] = None
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PACKAGE):
            return f"{path.relative_to(_ROOT)}:{frame.f_lineno}"
        if fallback is None and path != _HERE and not path.is_relative_to(_TORCH):
            fallback = f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback or "?"


def _to_target(args: tuple, kwargs: dict) -> tuple[Optional[torch.device], Any, bool]:
    """``Tensor.to``'s arguments (after the tensor): the device it moves to (None: it stays), the
    target as written (a string, device or tensor) and ``non_blocking``."""
    parse = {k: v for k, v in kwargs.items() if k != "copy"}
    device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **parse)
    target = kwargs.get("device", kwargs.get("other", args[0] if args else None))
    return device, target, bool(non_blocking)


def _names_host(target: Any) -> bool:
    """Whether a ``.to``/``device=`` target names the host (see the module docstring)."""
    return isinstance(target, str) and torch.device(target).type == "cpu"


class DeviceTensors:
    """The tensors of the simulated device, by identity (a tensor's ``==`` is elementwise, so no
    WeakSet), held weakly. Give one to consecutive ``count_host_syncs`` blocks so that tensors made
    on the device in one (Lightning's logging state) are device tensors in the next."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        key = id(t)
        self._refs[key] = weakref.ref(t, lambda _, key=key: self._refs.pop(key, None))

    def __contains__(self, t: torch.Tensor) -> bool:
        ref = self._refs.get(id(t))
        return ref is not None and ref() is t


class _SyncMode(TorchFunctionMode):
    def __init__(self, record: HostSyncs, seeds: Iterable[torch.Tensor],
                 caught: Optional[list[warnings.WarningMessage]], device: DeviceTensors) -> None:
        super().__init__()
        self.record = record
        self.caught = caught
        seeds = list(seeds)
        #: whether the device is simulated on the CPU (no tensor given lives elsewhere)
        self.simulated = all(t.device.type == "cpu" for t in seeds)
        self.device = device
        for t in seeds:
            self.device.add(t)

    def on_device(self, t: Any) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        if not self.simulated:
            return t.device.type not in ("cpu", "meta")
        return t in self.device

    def _target_on_device(self, target: Any) -> bool:
        if isinstance(target, torch.Tensor):
            return self.on_device(target)
        if not self.simulated:
            return torch.device(target).type != "cpu"
        return not _names_host(target)

    def _sync(self, func: Callable, args: tuple, kwargs: dict) -> Optional[str]:
        """The kind of synchronisation this call makes, or None."""
        name = getattr(func, "__name__", "")
        this = args[0] if args else None
        if name in VALUE_READS and any(self.on_device(t) for t in tensors_in(args)):
            return f"value read ({name})"
        if name in DATA_SIZED and self.on_device(this):
            return f"data-dependent size ({name})"
        if name == "where" and len(args) + len(kwargs) == 1 and self.on_device(this):
            return "data-dependent size (where)"
        if name in ("__getitem__", "__setitem__", "index_put", "index_put_") and any(
                t.dtype in (torch.bool, torch.uint8) and self.on_device(t)
                for t in tensors_in(args[1:2])):
            return f"data-dependent size (boolean index, {name})"
        if name in ("__getitem__", "__setitem__") and self.on_device(this) and any(
                t.ndim and not self.on_device(t) for t in tensors_in(args[1:3])):
            return f"blocking host-to-device copy (host index or value, {name})"
        if name in ("cpu", "to", "cuda") and isinstance(this, torch.Tensor):
            return self._copy(name, this, args, kwargs)
        if name == "copy_" and isinstance(this, torch.Tensor) and len(args) > 1:
            src, blocking = args[1], not (args[2] if len(args) > 2
                                          else kwargs.get("non_blocking", False))
            if self.on_device(src) and not self.on_device(this):
                return "device-to-host copy (copy_)" if blocking else None
            if blocking and self.on_device(this) and not self.on_device(src):
                return "blocking host-to-device copy (copy_)"
        if name in COPY_FACTORIES and kwargs.get("device") is not None and self._target_on_device(
                kwargs["device"]) and not any(self.on_device(t) for t in tensors_in(args[:1])):
            return f"blocking host-to-device copy (torch.{name})"
        if name == "new_tensor" and self.on_device(this):
            return "blocking host-to-device copy (new_tensor)"
        return None

    def _copy(self, name: str, this: torch.Tensor, args: tuple, kwargs: dict) -> Optional[str]:
        if name == "cpu":
            return "device-to-host copy (cpu)" if self.on_device(this) else None
        if name == "cuda":
            to_device, blocking = True, not kwargs.get("non_blocking", False)
        else:
            device, target, non_blocking = _to_target(args[1:], kwargs)
            if device is None:
                return None
            to_device, blocking = self._target_on_device(target), not non_blocking
        if not to_device:
            return "device-to-host copy (to)" if self.on_device(this) else None
        if blocking and not self.on_device(this):
            return f"blocking host-to-device copy ({name})"
        return None

    def _result_on_device(self, func: Callable, args: tuple, kwargs: dict) -> bool:
        name = getattr(func, "__name__", "")
        this = args[0] if args else None
        if name in ("cpu", "numpy", "pin_memory"):
            return False
        if name == "cuda":
            return True
        if name == "to" and isinstance(this, torch.Tensor):
            device, target, _ = _to_target(args[1:], kwargs)
            return self.on_device(this) if device is None else self._target_on_device(target)
        if kwargs.get("device") is not None:
            return self._target_on_device(kwargs["device"])
        return any(self.on_device(t) for t in tensors_in(args)) or any(
            self.on_device(t) for t in tensors_in(kwargs))

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (),
                           kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        kind = self._sync(func, args, kwargs)
        if kind is not None:
            self.record.events.append(SyncEvent(kind, _location()))
        start = len(self.caught) if self.caught is not None else 0
        out = func(*args, **kwargs)
        if self.caught is not None and len(self.caught) > start:
            self._take_cuda_warnings(start, func, counted=kind is not None)
        if self.simulated and self._result_on_device(func, args, kwargs):
            for t in tensors_in(out):
                self.device.add(t)
        return out

    def _take_cuda_warnings(self, start: int, func: Callable, counted: bool) -> None:
        """The sync debug mode's warnings raised in this call: dropped when the call was counted
        already, else events of kind ``cuda``."""
        assert self.caught is not None
        new = self.caught[start:]
        syncs = [w for w in new if _SYNC_WARNING in str(w.message)]
        del self.caught[start:]
        self.caught.extend(w for w in new if w not in syncs)
        if syncs and not counted:
            name = getattr(func, "__name__", str(func))
            self.record.events.append(SyncEvent(f"cuda ({name})", _location()))


@contextlib.contextmanager
def count_host_syncs(*device_tensors: torch.Tensor,
                     device: Optional[DeviceTensors] = None) -> Iterator[HostSyncs]:
    """Counts the host synchronisations of the block (the module docstring gives the rules).

    ``device_tensors``: the tensors that live on the device when the block starts (the model's
    parameters and buffers, the batch). On the CPU they seed the simulated device (``device``, a
    fresh one unless given); on a GPU the device is real and they only tell the counter that it is.
    """
    record = HostSyncs()
    cuda = torch.cuda.is_available() and any(t.is_cuda for t in device_tensors)
    with contextlib.ExitStack() as stack:
        caught: Optional[list[warnings.WarningMessage]] = None
        if cuda:
            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always")
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            stack.callback(torch.cuda.set_sync_debug_mode, previous)
        stack.enter_context(_SyncMode(record, device_tensors, caught,
                                       device if device is not None else DeviceTensors()))
        yield record
    if caught is not None:
        for w in caught:  # syncs no torch call explained (backward, C++ paths), then the rest
            if _SYNC_WARNING in str(w.message):
                record.events.append(SyncEvent("cuda", f"{w.filename}:{w.lineno}"))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def step_tensors(model: torch.nn.Module, batch: Any) -> list[torch.Tensor]:
    """What lives on the device when a training step starts: parameters, buffers, the batch."""
    return [*model.parameters(), *model.buffers(), *tensors_in(batch)]


class StepSyncs(Callback):
    """Counts the host synchronisations inside each ``training_step`` of a fit (``steps``: one
    ``HostSyncs`` per step). Lightning's own work around the step (the optimizer step, the
    progress bar, the loggers) is not counted."""

    def __init__(self) -> None:
        self.steps: list[HostSyncs] = []
        self.device = DeviceTensors()  # kept across steps, as the device keeps its tensors

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = pl_module.training_step

        def counted(batch: Any, *args: Any, **kwargs: Any) -> Any:
            with count_host_syncs(*step_tensors(pl_module, batch), device=self.device) as syncs:
                out = step(batch, *args, **kwargs)
            self.steps.append(syncs)
            return out

        pl_module.training_step = counted  # type: ignore[method-assign]

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        pl_module.__dict__.pop("training_step", None)


class _Repeat:
    """One batch, ``times`` over, as a loader (a plain list would read as a collection of
    loaders)."""

    def __init__(self, batch: Any, times: int) -> None:
        self.batch, self.times = batch, times

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.times):
            yield self.batch

    def __len__(self) -> int:
        return self.times


def count_step_syncs(model: LightningModule, batch: Any, warmup: int = 1,
                     trainer_kwargs: Optional[dict[str, Any]] = None) -> tuple[int, list[str]]:
    """The host synchronisations of one ``training_step`` of ``model`` on ``batch``: the count and
    where each came from (see the module docstring).

    The step runs in a short fit on that batch, so that ``self.log`` does what it does in training;
    the model takes those optimizer steps. The step counted follows ``warmup`` steps: the first step
    of a fit also creates Lightning's logging state (one blocking copy of host-made zeros per
    logged key), which later steps do not. The trainer runs on the model's device, without logger,
    checkpoints or progress bar; ``trainer_kwargs`` overrides any of that.
    """
    device = next(model.parameters()).device
    counter = StepSyncs()
    kwargs: dict[str, Any] = {
        "accelerator": "cpu" if device.type == "cpu" else device.type, "devices": 1,
        "max_steps": warmup + 1, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    kwargs.update(trainer_kwargs or {})
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), counter]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|"
                                "is not a DataLoader|`training_step` returned).*")
        Trainer(**kwargs).fit(model, train_dataloaders=_Repeat(batch, warmup + 1))
    syncs = counter.steps[-1]
    return syncs.count, syncs.locations
