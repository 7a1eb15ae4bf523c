"""Where tensors live and how many threads small torch calls use."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


def pick_device(device: str | None = None) -> "torch.device":  # noqa: F821
    """The torch device to use: the one asked for, else CUDA when present, else CPU."""
    import torch

    if device not in (None, "", "auto"):
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the few small torch calls (rays, projection) on one thread: on a busy machine, waking
    torch's thread pool for arrays this small costs 40x more than the arithmetic."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
