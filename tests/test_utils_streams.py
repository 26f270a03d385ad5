"""``made_ahead``: the next batch made while the current one is used (on a side CUDA stream on a
GPU, in line elsewhere), the same items in the same order."""

from __future__ import annotations

import pytest
import torch

from solo_mixmask.utils.streams import made_ahead, tensors_in


def test_each_item_is_made_one_ahead_in_order():
    made: list[int] = []

    def make(b: int) -> list[int]:
        made.append(b)
        return [b, b * b]

    seen = []
    for b, item in enumerate(made_ahead(make, 5)):
        assert made == list(range(min(b + 2, 5)))  # item b + 1 already made when b is handed out
        seen.append(item)
    assert seen == [[b, b * b] for b in range(5)] and made == list(range(5))


@pytest.mark.parametrize("count", [0, 1])
def test_short_runs(count):
    assert list(made_ahead(lambda b: b + 10, count)) == list(range(10, 10 + count))


def test_tensors_in_nested_batches():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    found = list(tensors_in([a, [b, (c, 4)], {"x": a}, "s"]))
    assert len(found) == 4 and all(t is u for t, u in zip(found, [a, b, c, a]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_side_stream_items_equal_inline_ones_and_are_safe_to_read():
    """Made on a side stream, each item's values are complete when the consumer reads them on its
    own stream, and equal the items made in line."""
    x = torch.randn(512, 512, device="cuda")

    def make(b: int) -> list[torch.Tensor]:
        y = x
        for _ in range(20):  # long enough to still be running when the item is handed out
            y = torch.tanh(y @ x) + b
        return [y]

    inline = [item[0].clone() for item in made_ahead(make, 4)]
    stream = torch.cuda.Stream()
    ahead = [item[0].sum(0) for item in made_ahead(make, 4, stream)]
    assert all(torch.equal(a.sum(0), b) for a, b in zip(inline, ahead))
