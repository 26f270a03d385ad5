"""Host-to-device copies that do not make the host wait for the device."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch


def host_to_device(data: Union[np.ndarray, torch.Tensor],
                   device: Optional[Union[torch.device, str]]) -> torch.Tensor:
    """``data`` (a host array or tensor) as a tensor on ``device``, the values unchanged.

    A blocking copy to a GPU, or an asynchronous one from pageable memory, waits for the work
    already queued on the device; so for CUDA the values go through pinned memory with
    ``non_blocking=True`` (the caching host allocator keeps the pinned block until the copy has
    run). Elsewhere the copy is plain (on the CPU, none: the tensor shares the array's memory).
    ``device=None`` gives the host tensor.
    """
    tensor = torch.as_tensor(data)
    if device is None:
        return tensor
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
