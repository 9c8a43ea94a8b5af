"""What an image file's header promises, checked against what the file holds, before ITK reads it.

ITK reads damaged files as if they were whole: a ``.nii.gz`` cut short in its gzip stream or a
header claiming more voxels than the file holds come back as images whose missing voxels are
zeros, and its NIfTI reader turns NaN voxels into 0 without a word. For medical data that is
the most dangerous failure, so :func:`check_image_file` reads the header itself (NIfTI-1/2,
MetaImage, NRRD), and refuses, with the expected and found sizes:

- a data part shorter than the header's size x type says (also for a header claiming far more
  voxels than the file holds: nothing is allocated before this check);
- a gzip / zlib stream that ends early or fails its checksum;
- a negative voxel spacing (NIfTI ``pixdim[1..3]``, MetaImage ``ElementSpacing``, NRRD
  ``spacings``): readers disagree on what it means (ITK flips the axis, the NIfTI-1 reference
  library ignores the sign), so the file's geometry is ambiguous. Rewrite the file with
  positive spacings and the flip in its direction (qform/sform, TransformMatrix).

It returns the flat indices of NaN/Inf voxels of a float NIfTI (which ITK would hide). This
module imports nothing heavy (numpy only to scan float data), so the CLI can check its inputs
before torch or SimpleITK load.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

_CHUNK = 1 << 20


class ImageReadError(ValueError):
    """The file is missing, unreadable, damaged or not a 3D scalar image."""


class _StreamEnded(Exception):
    """A compressed stream ended before its end marker."""


def suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


@dataclass
class DataLayout:
    """Where a header says its voxels are and how many bytes they take."""

    sizes: tuple[int, ...]
    type_name: str
    bytes_per_value: int | None  # None: a type this check does not size (the check is skipped)
    data_file: Path
    offset: int
    compression: str | None = None  # None, "gzip" (whole file) or "zlib"/"gzip-data" (after offset)
    float_dtype: str | None = None  # numpy dtype of float data to scan for NaN (NIfTI only)
    spacings: tuple[float, ...] = ()

    @property
    def expected_bytes(self) -> int | None:
        if self.bytes_per_value is None:
            return None
        count = 1
        for size in self.sizes:
            count *= size
        return count * self.bytes_per_value

    def describe(self) -> str:
        return f"{' x '.join(map(str, self.sizes))} {self.type_name} voxels"


@dataclass
class FileCheck:
    """What the check found beyond "the file is whole"."""

    nonfinite_indices: list = field(default_factory=list)  # flat indices (file order) of NaN/Inf voxels
    voxel_count: int = 0


def check_image_file(path: str | os.PathLike) -> FileCheck:
    """Raise :class:`ImageReadError` when the file's data does not match its header (see the
    module docstring); a format this module does not parse passes unchecked."""
    path = Path(path)
    kind = suffix(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes); expected an image")
    if kind in (".nii", ".nii.gz"):
        layout = _nifti_layout(path, gzipped=kind == ".nii.gz")
    elif kind in (".mha", ".mhd"):
        layout = _metaimage_layout(path)
    elif kind in (".nrrd", ".nhdr"):
        layout = _nrrd_layout(path)
    else:
        return FileCheck()
    for axis, spacing in enumerate(layout.spacings):
        if spacing < 0:
            raise ImageReadError(
                f"{path}: negative voxel spacing {spacing:g} mm on axis {'ijk'[axis] if axis < 3 else axis}; "
                "readers disagree on what that means, so the geometry is ambiguous; expected positive "
                "spacings with any flip in the direction matrix (rewrite the file, e.g. with SimpleITK)")
    return _check_data(path, layout)


def _check_data(path: Path, layout: DataLayout) -> FileCheck:
    expected = layout.expected_bytes
    if not layout.data_file.is_file():
        raise ImageReadError(f"{path}: its header names the data file {layout.data_file}, which does not exist")
    if layout.compression is None:
        found = layout.data_file.stat().st_size - layout.offset
        if expected is not None and found < expected:
            raise ImageReadError(f"{path}: truncated or inconsistent file: the header says {layout.describe()} "
                                 f"({expected:,} bytes of data), the file holds {max(found, 0):,}")
        if layout.float_dtype is None:
            return FileCheck()
        return _scan(path, layout, _raw_chunks(layout.data_file, layout.offset))
    return _scan(path, layout, _decompressed_chunks(path, layout))


def _scan(path: Path, layout: DataLayout, chunks) -> FileCheck:
    """Count the (decompressed) data bytes; for float data, note the NaN/Inf voxels."""
    expected = layout.expected_bytes
    found, check, pending = 0, FileCheck(), b""
    if layout.float_dtype is not None:
        import numpy as np

        dtype = np.dtype(layout.float_dtype)
    try:
        for chunk in chunks:
            found += len(chunk)
            if layout.float_dtype is not None and (expected is None or found - len(chunk) < expected):
                data = pending + chunk
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data[:usable], dtype)
                first = (found - len(data)) // dtype.itemsize
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    check.nonfinite_indices.append(bad + first)
                pending = data[usable:]
    except _StreamEnded:
        size = f"{expected:,} bytes of data" if expected is not None else "its data"
        raise ImageReadError(f"{path}: truncated file: its compressed data stream ends early, after {found:,} of "
                             f"{size} ({layout.describe()}); the download or copy was cut short") from None
    if expected is not None and found < expected:
        raise ImageReadError(f"{path}: truncated or inconsistent file: the header says {layout.describe()} "
                             f"({expected:,} bytes of data), the file holds {found:,}")
    if expected is not None and layout.bytes_per_value:
        check.voxel_count = expected // layout.bytes_per_value
    return check


def _raw_chunks(data_file: Path, offset: int):
    with open(data_file, "rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(_CHUNK):
            yield chunk


def _decompressed_chunks(path: Path, layout: DataLayout):
    """Decompress the data stream (all gzip members), raising on a cut or corrupt stream."""
    whole_file_gzip = layout.compression == "gzip"
    wbits = 16 + zlib.MAX_WBITS if layout.compression in ("gzip", "gzip-data") else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    skip = layout.offset if whole_file_gzip else 0
    try:
        with open(layout.data_file, "rb") as handle:
            handle.seek(0 if whole_file_gzip else layout.offset)
            while True:
                compressed = handle.read(_CHUNK)
                if not compressed:
                    break
                while compressed:
                    data = decompressor.decompress(compressed)
                    if skip:
                        taken = min(skip, len(data))
                        data, skip = data[taken:], skip - taken
                    if data:
                        yield data
                    if decompressor.eof:
                        compressed = decompressor.unused_data
                        if whole_file_gzip and compressed.strip(b"\0"):
                            decompressor = zlib.decompressobj(wbits)  # next gzip member
                        else:
                            compressed = b""
                            break
                    else:
                        compressed = b""
                if decompressor.eof and not whole_file_gzip:
                    break
    except zlib.error as error:
        raise ImageReadError(f"{path}: damaged compressed data ({error}); the file is corrupt") from None
    if not decompressor.eof:
        raise _StreamEnded


# --- NIfTI ---------------------------------------------------------------------------------
#: NIfTI datatype code -> (name, bytes per value, numpy dtype of float types)
_NIFTI_TYPES = {2: ("uint8", 1, None), 4: ("int16", 2, None), 8: ("int32", 4, None), 16: ("float32", 4, "f4"),
                32: ("complex64", 8, None), 64: ("float64", 8, "f8"), 128: ("rgb24", 3, None),
                256: ("int8", 1, None), 512: ("uint16", 2, None), 768: ("uint32", 4, None), 1024: ("int64", 8, None),
                1280: ("uint64", 8, None), 1792: ("complex128", 16, None), 2304: ("rgba32", 4, None)}


def _nifti_layout(path: Path, gzipped: bool) -> DataLayout:
    head = _read_head(path, gzipped, 540)
    if len(head) < 348:
        raise ImageReadError(f"{path}: truncated file or not NIfTI: {len(head)} bytes, shorter than a NIfTI header "
                             "(348 bytes)")
    for order in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
        if sizeof_hdr in (348, 540):
            break
    else:
        raise ImageReadError(f"{path}: not a NIfTI file (its header size field is not 348 or 540)")
    if len(head) < sizeof_hdr:
        raise ImageReadError(f"{path}: truncated file: {len(head)} bytes, shorter than a NIfTI header "
                             f"({sizeof_hdr} bytes)")
    if sizeof_hdr == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        datatype, bitpix = struct.unpack(order + "2h", head[70:74])
        pixdim = struct.unpack(order + "8f", head[76:108])
        (vox_offset,) = struct.unpack(order + "f", head[108:112])
    else:
        datatype, bitpix = struct.unpack(order + "2h", head[12:16])
        dims = struct.unpack(order + "8q", head[16:80])
        pixdim = struct.unpack(order + "8d", head[104:168])
        (vox_offset,) = struct.unpack(order + "q", head[168:176])
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]):
        raise ImageReadError(f"{path}: damaged NIfTI header (dimensions {list(dims[:max(1, min(ndim, 7)) + 1])})")
    name, size, float_dtype = _NIFTI_TYPES.get(datatype, (f"datatype {datatype}", None, None))
    if size is not None and bitpix != 8 * size:
        raise ImageReadError(f"{path}: inconsistent NIfTI header: datatype {name} has {8 * size} bits, "
                             f"bitpix says {bitpix}")
    if float_dtype is not None:
        float_dtype = order + float_dtype
    return DataLayout(tuple(dims[1:ndim + 1]), name, size, path, int(vox_offset) or sizeof_hdr + 4,
                      "gzip" if gzipped else None, float_dtype, tuple(pixdim[1:min(ndim, 3) + 1]))


def _read_head(path: Path, gzipped: bool, count: int) -> bytes:
    if not gzipped:
        with open(path, "rb") as handle:
            return handle.read(count)
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as handle:
        try:
            head = decompressor.decompress(handle.read(64 * 1024), count)
        except zlib.error as error:
            raise ImageReadError(f"{path}: cannot read image (not gzip-compressed NIfTI data: {error})") from None
    return head


# --- MetaImage -----------------------------------------------------------------------------
_MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _metaimage_layout(path: Path) -> DataLayout:
    fields, header_end = _text_header(path, separator="=", last_key="elementdatafile")
    try:
        sizes = tuple(int(v) for v in fields["dimsize"].split())
    except (KeyError, ValueError):
        raise ImageReadError(f"{path}: damaged MetaImage header (no valid DimSize)") from None
    type_name = fields.get("elementtype", "?")
    per_value = _MET_TYPES.get(type_name)
    channels = fields.get("elementnumberofchannels", "1")
    if per_value is not None and channels.isdigit():
        per_value *= int(channels)
    data_name = fields.get("elementdatafile", "")
    if data_name.upper() == "LOCAL":
        data_file, offset = path, header_end
    elif data_name and " " not in data_name and "%" not in data_name and data_name.upper() != "LIST":
        data_file, offset = path.parent / data_name, 0
    else:
        per_value, data_file, offset = None, path, 0  # lists of slice files: not sized here
    header_size = fields.get("headersize", "0")
    if data_file != path and header_size.lstrip("-").isdigit() and int(header_size) > 0:
        offset = int(header_size)
    elif header_size not in ("0", ""):
        per_value = None  # HeaderSize = -1 (data at the end) and other rarities: not sized here
    compressed = fields.get("compresseddata", "false").lower() == "true"
    spacing = fields.get("elementspacing") or fields.get("elementsize") or ""
    return DataLayout(sizes, type_name, per_value, data_file, offset, "zlib" if compressed else None,
                      spacings=_floats(spacing))


def _text_header(path: Path, separator: str, last_key: str | None) -> tuple[dict, int]:
    """Fields of a "key = value" (MetaImage) or "key: value" (NRRD) header, lower-case keys, and
    the byte offset where the header ends."""
    fields, offset = {}, 0
    with open(path, "rb") as handle:
        for _ in range(10_000):
            line = handle.readline(1 << 16)
            if not line:
                break
            offset += len(line)
            text = line.decode("latin-1").rstrip("\r\n")
            if last_key is None and not text.strip():
                break  # NRRD: a blank line ends the header
            if text.startswith("#") or separator not in text:
                continue
            key, _, value = text.partition(separator)
            key = key.strip().lower()
            fields.setdefault(key, value.strip())
            if key == last_key:
                break
    return fields, offset


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split())
    except ValueError:
        return ()


# --- NRRD ----------------------------------------------------------------------------------
_NRRD_TYPES = {}
for _names, _size in ((("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
                      (("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                        "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
                      (("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                        "float"), 4),
                      (("longlong", "long long", "long long int", "signed long long", "signed long long int",
                        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                        "uint64_t", "double"), 8)):
    _NRRD_TYPES.update(dict.fromkeys(_names, _size))


def _nrrd_layout(path: Path) -> DataLayout:
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if not magic.startswith(b"NRRD"):
        raise ImageReadError(f"{path}: not a NRRD file (it does not start with 'NRRD000')")
    fields, header_end = _text_header(path, separator=":", last_key=None)
    try:
        sizes = tuple(int(v) for v in fields["sizes"].split())
    except (KeyError, ValueError):
        raise ImageReadError(f"{path}: damaged NRRD header (no valid 'sizes' field)") from None
    type_name = fields.get("type", "?")
    per_value = _NRRD_TYPES.get(type_name.lower())
    encoding = fields.get("encoding", "raw").lower()
    compression = {"raw": None, "gzip": "gzip-data", "gz": "gzip-data"}.get(encoding, "other")
    if compression == "other" or "byte skip" in fields or "line skip" in fields:
        per_value, compression = None, None  # text, bzip2 and skipped data: not sized here
    data_name = fields.get("data file") or fields.get("datafile")
    if data_name is None:
        data_file, offset = path, header_end
    elif " " in data_name.strip() or data_name.strip().upper() == "LIST":
        data_file, offset, per_value, compression = path, 0, None, None  # file lists: not sized here
    else:
        data_file, offset = path.parent / data_name.strip(), 0
    spacings = tuple(v for v in _floats(fields.get("spacings", "")) if not math.isnan(v))  # nan: a non-spatial axis
    return DataLayout(sizes, type_name, per_value, data_file, offset, compression, spacings=spacings)
