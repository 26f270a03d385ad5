"""Making the next batch on a side CUDA stream while the current one trains."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, TypeVar

import torch

T = TypeVar("T")


def tensors_in(item: Any) -> Iterator[torch.Tensor]:
    """Every tensor in nested lists, tuples and dict values."""
    if isinstance(item, torch.Tensor):
        yield item
    elif isinstance(item, (list, tuple)):
        for x in item:
            yield from tensors_in(x)
    elif isinstance(item, dict):
        for x in item.values():
            yield from tensors_in(x)


def made_ahead(make: Callable[[int], T], count: int,
               stream: Optional[torch.cuda.Stream] = None) -> Iterator[T]:
    """``make(0), ..., make(count - 1)``, each made one item before it is handed out.

    With a CUDA ``stream``, ``make`` runs there: item ``b + 1``'s kernels are queued on the side
    stream before the consumer queues its work on item ``b``, so the two can run at once on the
    GPU. The host does the same work either way; the overlap only helps where the GPU, not the
    host's launches, bounds the step. The stream first waits once for the work already queued
    (the inputs ``make`` reads); each item is handed out after the consumer's stream has been told
    to wait for that item alone, and its tensors are marked as used there, so the caching allocator
    does not give their memory back to the side stream while the consumer still reads it. Without
    a stream the items are made inline, one ahead, the same values in the same order.
    """
    if count <= 0:
        return
    consumer = torch.cuda.current_stream(stream.device) if stream is not None else None

    def launch(b: int) -> tuple[T, Optional[torch.cuda.Event]]:
        if stream is None:
            return make(b), None
        with torch.cuda.stream(stream):
            item = make(b)
            return item, stream.record_event()

    if stream is not None:
        stream.wait_stream(consumer)
    pending = launch(0)
    for b in range(count):
        item, done = pending
        if b + 1 < count:
            pending = launch(b + 1)
        if done is not None:
            consumer.wait_event(done)
            for t in tensors_in(item):
                t.record_stream(consumer)
        yield item
