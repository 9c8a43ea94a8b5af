"""Choosing the torch device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

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
