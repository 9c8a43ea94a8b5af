"""Choosing the torch device (CUDA, then Apple MPS, then CPU), and moving image data onto it."""

from __future__ import annotations

import numpy as np

#: Image dtypes that go to a device as they are: each becomes float32 there exactly as it does
#: on the host, and int16 CT crosses and stays in half the bytes. Others are made float32 first.
DEVICE_DTYPES = (np.dtype(np.float32), np.dtype(np.int16), np.dtype(np.uint8), np.dtype(np.int8))

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | None = "auto"):
    """Return a ``torch.device`` for ``name`` ("auto", "cpu", "cuda", "cuda:N", "mps").

    Asking for a device that is not there is a ValueError, not a silent CPU fallback: a user
    who picked CUDA should learn that it is missing.
    """
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                             "use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} was asked for but only {torch.cuda.device_count()} CUDA "
                             "device(s) exist")
        return device
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for but Apple MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)} or cuda:N")


def to_device(array: np.ndarray, device):
    """``array`` as a tensor on ``device``, in its own dtype when that is one of
    :data:`DEVICE_DTYPES` (float32 otherwise). On the CPU a contiguous, writeable array is
    shared, not copied; to CUDA it goes through pinned memory, asynchronously (later work on
    the device's stream is ordered after the copy)."""
    import torch

    device = torch.device(device)
    array = np.asarray(array)
    if array.dtype not in DEVICE_DTYPES:
        array = array.astype(np.float32)
    if not array.flags.c_contiguous or not array.flags.writeable:
        array = np.array(array, order="C")  # torch shares only writeable contiguous memory
    host = torch.from_numpy(array)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
