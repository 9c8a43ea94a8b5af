"""Safe checkpoint loading: safetensors, or torch pickles with ``weights_only=True``.

Nothing here runs code from a file. Torch pickles may hold only tensors, plain containers and
the numpy scalar globals that released research checkpoints carry (``epoch`` and
``best_val_loss`` saved as numpy scalars). Those are allowlisted for the duration of one load,
under their numpy 1.x names (``numpy.core.multiarray.scalar``, ``numpy.dtype``) and their
numpy 2 names (``numpy._core.multiarray.scalar``, ``numpy.dtypes.*DType``); rebuilding a
numpy scalar only copies bytes into a value of a known dtype.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What the loader accepts, for error messages.
ACCEPTED_FORMATS = ("safetensors", "a torch.save file of tensors, lists and dicts (loaded with weights_only=True)")


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, unsafe to load or of the wrong kind."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint's content as loaded, plus where it came from.

    ``content`` is the unpickled object (usually a dict) for torch files, or the dict of tensors
    for safetensors. ``metadata`` holds safetensors' string metadata, and for any format the
    JSON object of a ``<file>.json`` / ``<stem>.json`` config beside the file when there is one.
    """

    path: Path
    format: str  # "safetensors" or "torch"
    content: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    sidecar: dict[str, Any] | None = None


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if the file starts like a safetensors file (u64 header length, then a JSON object)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 100_000_000 and head[8:9] == b"{"


def numpy_safe_globals() -> list:
    """The numpy scalar-reconstruction globals, under their numpy 1.x and numpy 2 names."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    entries: list = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                     (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            value = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(value, type):
                entries.append((value, f"numpy.dtypes.{name}"))
    return entries


def _sidecar_config(path: Path) -> dict | None:
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate != path and candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError) as error:
                raise CheckpointError(f"{candidate}: the JSON config beside the checkpoint is unreadable "
                                      f"({error})") from None
            if not isinstance(data, dict):
                raise CheckpointError(f"{candidate}: expected a JSON object beside the checkpoint, "
                                      f"got {type(data).__name__}")
            return data
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint safely (never executing code from the file); see the module docstring.

    Raises :class:`CheckpointError` (a ValueError) with a one-line reason for a missing,
    truncated or damaged file, and for a pickle that holds anything but tensors, containers
    and numpy scalars (naming the offending globals).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty; expected {' or '.join(ACCEPTED_FORMATS)}")
    sidecar = _sidecar_config(path)
    if is_safetensors(path) or path.suffix.lower() == ".safetensors":
        _check_safetensors_header(path)
        return _load_safetensors(path, map_location, sidecar)
    return LoadedCheckpoint(path, "torch", _load_torch(path, map_location), sidecar=sidecar)


def _check_safetensors_header(path: Path) -> None:
    """The u64 header length must fit the file, before safetensors (or torch.load, which hands
    ``.safetensors`` files to it) reads it: an absurd length is a damaged file, not a crash."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes; expected an 8-byte header "
                              "length and a JSON header)")
    (length,) = struct.unpack("<Q", head[:8])
    if length > size - 8 or head[8:9] != b"{":
        raise CheckpointError(f"{path}: damaged or truncated safetensors file: its header length field says "
                              f"{length:,} bytes of JSON header, the file holds {size - 8:,} bytes after it"
                              + ("" if head[8:9] == b"{" else " and no JSON object follows"))


def _load_safetensors(path: Path, map_location: str, sidecar: dict | None) -> LoadedCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({error})") from None
    return LoadedCheckpoint(path, "safetensors", tensors, metadata, sidecar)


def _load_torch(path: Path, map_location: str) -> Any:
    import pickle
    import zipfile

    import torch

    with torch.serialization.safe_globals(numpy_safe_globals()):
        try:
            # mmap keeps large tensors file-backed until they are copied into a model.
            return torch.load(path, map_location=map_location, weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as error:
            unsafe = _unsafe_globals(path) or re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
            if unsafe:
                raise CheckpointError(
                    f"{path}: refusing to load: the file holds Python objects other than tensors and plain "
                    f"containers ({', '.join(unsafe[:5])}); expected {ACCEPTED_FORMATS[1]} or "
                    f"{ACCEPTED_FORMATS[0]}") from None
            raise CheckpointError(f"{path}: damaged or not a checkpoint ({_first_line(error)}); expected "
                                  f"{' or '.join(ACCEPTED_FORMATS)}") from None
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError,
                struct.error, zipfile.BadZipFile) as error:
            raise CheckpointError(f"{path}: damaged or truncated checkpoint ({_first_line(error)}); expected "
                                  f"{' or '.join(ACCEPTED_FORMATS)}") from None


_HARMLESS_MODULES = ("torch", "collections", "_codecs", "builtins", "__builtin__")


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a pickle refers to beyond tensors, containers and numpy scalars (read, not run)."""
    import pickle
    import zipfile

    import torch

    allowed = {name for _, name in numpy_safe_globals()}
    if zipfile.is_zipfile(path):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
            # a damaged file: the caller reports the load error instead
            return []
    else:
        names = _plain_pickle_globals(path)
        names = [n for n in names if n.split(".")[0] not in _HARMLESS_MODULES]
    return [name for name in names if name not in allowed]


def _plain_pickle_globals(path: Path, max_pickles: int = 8) -> list[str]:
    """The "module.name" globals of the pickles in a non-zip file, found by disassembling the
    opcodes with :mod:`pickletools` (nothing is unpickled)."""
    import io
    import pickletools

    names: list[str] = []
    with open(path, "rb") as handle:
        stream = io.BytesIO(handle.read())
    for _ in range(max_pickles):
        strings: list[str] = []
        try:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL":
                    names.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(argument, str):
                    strings.append(argument)
        except (ValueError, EOFError, struct.error, UnicodeDecodeError):
            # end of data or not a pickle: what was found so far is the answer
            break
        if stream.tell() >= len(stream.getbuffer()):
            break
    return list(dict.fromkeys(names))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(error).__name__
