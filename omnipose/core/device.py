"""Where tensors live, how many threads small torch calls use, and which parameters take gradients."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from omnipose.core.errors import ConfigError


def pick_device(device: "str | torch.device | None" = None) -> "torch.device":  # noqa: F821
    """The torch device to use: the one asked for, else CUDA when present, else CPU.

    Raises ConfigError for a name torch does not know and for a CUDA device this machine does not
    have, saying what to use instead (torch's own errors surface much later, deep in a run).
    """
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(f"device {device!r} is not a device name: use 'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when present).") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"device {device!r} was asked for but {build}: use --device cpu (or leave --device out).")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} was asked for but Apple's MPS is not available here: use --device cpu.")
    elif chosen.type not in ("cpu", "mps"):
        raise ConfigError(f"device {device!r} is not supported: use 'cpu' or 'cuda' ('cuda:1' for the second GPU).")
    return chosen


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` threads (-1: as it is), then restore its count: a command told to use some threads
    keeps its torch work to them too. torch's threads spin while they wait, so that more of them than free cores
    (another job beside this one) slows its work by an order of magnitude (docs/RESULTS.md)."""
    import torch

    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_OUTER_THREADS: list[int] = []
"""torch's thread count outside each ``one_torch_thread`` now entered, outermost first (one list for the
process, as torch's thread count is)."""


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the few small torch calls (rays, projection) on one thread: on a busy machine, waking
    torch's thread pool for arrays this small costs 40x more than the arithmetic."""
    import torch

    _OUTER_THREADS.append(torch.get_num_threads())
    try:
        with torch_threads(1):
            yield
    finally:
        _OUTER_THREADS.pop()


@contextmanager
def all_torch_threads() -> Iterator[None]:
    """Run one large computation inside ``one_torch_thread`` on the threads torch had outside it: a
    matrix product of tens of millions of multiply-adds gains from each thread what small calls lose."""
    import torch

    # The innermost one_torch_thread that took threads away; one nested in it found one thread already.
    with torch_threads(next((count for count in reversed(_OUTER_THREADS) if count > 1), torch.get_num_threads())):
        yield


@contextmanager
def frozen(module: "torch.nn.Module | None") -> Iterator[None]:  # noqa: F821
    """Switch off gradients of a module's parameters (only the pose, or only the points, is
    differentiated), then restore each one's flag."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
