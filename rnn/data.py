"""Training series: the reference sine, or a user's CSV or .npy file (a series or a table of inputs). Numpy only."""

from __future__ import annotations

import array
import hashlib
import math
import os
import stat
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from runtime.errors import DataError, ToolkitError

# The reference series: SEQ_LENGTH + 1 points of sin(t) for t in [T_START, T_STOP].
SEQ_LENGTH = 20
T_START = 2.0
T_STOP = 10.0

# The most points a series file may hold (800 MB as float64): far more than these models train
# or predict on; a file claiming more (an .npy header says so before any data is read) is refused.
MAX_SERIES_POINTS = 10**8
MAX_CSV_LINE_BYTES = 4096  # a number, or a header, is far shorter
MAX_INPUT_COLUMNS = 4096  # input features of one row of an inputs table (rnn.config.MAX_SIZE's order)


def sine_times(seq_length: int = SEQ_LENGTH, start: float = T_START, stop: float = T_STOP) -> np.ndarray:
    """``linspace(start, stop, seq_length + 1)``: the reference's time points."""
    return np.linspace(start, stop, seq_length + 1)


def sine_series(seq_length: int = SEQ_LENGTH) -> np.ndarray:
    """``sin(t)`` at the reference's ``seq_length + 1`` time points (float64)."""
    return np.sin(sine_times(seq_length))


def pairs(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``series[:-1]`` and targets ``series[1:]``: the target is the next point."""
    return series[:-1], series[1:]


def open_regular(path: str | os.PathLike, error: type[ToolkitError] = DataError, what: str = "data file") -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file (symlinks followed).

    A folder, named pipe, socket or device is refused with ``error`` saying "is not a regular
    file" before anything is read: the file is opened non-blocking (a pipe with no writer would
    otherwise block forever) and checked with fstat on the open descriptor, so the file checked
    is the file read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} does not exist") from None
    except OSError as failure:
        raise error(f"{what} {str(path)!r} cannot be read: {failure.strerror}") from None
    try:
        regular = stat.S_ISREG(os.fstat(descriptor).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(descriptor)
        raise error(f"{what} {str(path)!r} is not a regular file (a folder, named pipe or device is never read)")
    return os.fdopen(descriptor, "rb")


def load_series(path: str | os.PathLike) -> np.ndarray:
    """Reads a one-column series from ``.csv`` (an optional header line) or ``.npy`` (1-D or (N, 1)).

    Raises DataError for anything else: not a regular file, other suffixes, several columns,
    text that is not a number, NaN or infinity, fewer than 2 points, more than
    ``MAX_SERIES_POINTS`` (an .npy header claiming more is refused before its data is read).

    Error messages never quote the file's contents, only where the problem is (a line number,
    an index, a shape): the path may be a recorded one, or a link to a file the reader of the
    message should not see, and a line of text is no help in a one-line error anyway.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with open_regular(path) as handle:
        if suffix == ".npy":
            series = _read_npy(path, handle)
        elif suffix == ".csv":
            series = _read_csv(path, handle)
        else:
            raise DataError(f"data file {path} must be .csv or .npy, got {suffix or 'no suffix'!r}")
    if series.ndim == 2 and series.shape[1] == 1:
        series = series[:, 0]
    if series.size < 2:
        raise DataError(f"{path} must hold at least 2 points (an input and its next value), got {series.size}")
    if series.dtype.kind == "f" and not np.isfinite(series).all():
        raise DataError(f"{path} contains NaN or infinity at index {int(np.argmin(np.isfinite(series)))}")
    return series.astype(np.float64)


@dataclass(frozen=True)
class InputsFile:
    """An inputs table read by `load_inputs`: its values and the sha256 of the file's bytes."""

    values: np.ndarray  # float64, (steps,), (steps, input_size) or (steps, batch, input_size)
    sha256: str  # of the bytes read, so a report can name exactly the data it ran on


def load_inputs(path: str | os.PathLike) -> InputsFile:
    """Reads a model's input series from ``.csv`` or ``.npy``, as `load_series` reads a series.

    ``.csv``: one column (a series) or several, comma-separated (one input feature a column, one
    step a row), with an optional header line. ``.npy``: real numbers of shape (steps,),
    (steps, input_size) or (steps, batch, input_size). DataError for anything else: other
    suffixes, rows of unequal widths, text that is not a number, NaN or infinity, no steps, more
    than ``MAX_SERIES_POINTS`` values. Errors name where the problem is, never the contents.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with open_regular(path) as handle:
        if suffix == ".npy":
            values = _read_npy(path, handle, max_ndim=3)
        elif suffix == ".csv":
            values = _read_csv(path, handle, several_columns=True)
        else:
            raise DataError(f"data file {path} must be .csv or .npy, got {suffix or 'no suffix'!r}")
        handle.seek(0)
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if values.size == 0:
        raise DataError(f"{path} holds no values (shape {values.shape})")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise DataError(f"{path} contains NaN or infinity at index {where[0] if len(where) == 1 else where}")
    return InputsFile(values.astype(np.float64), digest)


MAX_NPZ_MEMBER_BYTES = 1 << 30  # the arrays of an .npz, uncompressed, all together


def load_named_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """({name: array}, sha256 of the file) of an ``.npz`` (numpy's zip of ``.npy`` arrays), for
    models whose inputs have names. Arrays of real numbers only; nothing is unpickled; members
    whose stated sizes pass MAX_NPZ_MEMBER_BYTES together are refused before any is inflated, and
    no member is inflated past its stated size. DataError (one line, naming the file) for
    anything else: not a zip, truncated, a CRC mismatch, encrypted or unknown compression, not
    .npy members, object arrays."""
    import lzma
    import zipfile
    import zlib

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"data file {path} must be .npz (one array per input name), got {path.suffix or 'no suffix'!r}")
    arrays: dict[str, np.ndarray] = {}
    with open_regular(path) as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        handle.seek(0)
        try:
            with zipfile.ZipFile(handle) as archive:
                total = sum(member.file_size for member in archive.infolist())
                if total > MAX_NPZ_MEMBER_BYTES:
                    raise DataError(f"{path} holds {total} bytes of arrays, more than {MAX_NPZ_MEMBER_BYTES}")
                for member in archive.infolist():
                    name = member.filename.removesuffix(".npy")
                    if not member.filename.endswith(".npy") or not name:
                        raise DataError(f"{path} holds {member.filename!r}, not an .npy array")
                    if member.file_size > MAX_NPZ_MEMBER_BYTES:
                        raise DataError(f"{path}: array {name!r} is larger than {MAX_NPZ_MEMBER_BYTES} bytes")
                    if name in arrays:
                        raise DataError(f"{path} holds the array {name!r} twice")
                    with archive.open(member) as stream:
                        raw = stream.read(member.file_size + 1)  # never more than the zip says it holds
                    if len(raw) != member.file_size:
                        raise DataError(f"{path}: array {name!r} is not the {member.file_size} bytes the zip says")
                    arrays[name] = _npy_from_bytes(raw, f"{path}: array {name!r}")
        except DataError:
            raise
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            zlib.error,
            lzma.LZMAError,
            NotImplementedError,  # a compression method or encryption zipfile does not read
            RuntimeError,  # an encrypted member
            ValueError,
            OSError,
            EOFError,
            SyntaxError,
            TypeError,
        ) as error:
            raise DataError(
                f"{path} is not a readable .npz file ({type(error).__name__}: {str(error)[:120]})"
            ) from None
    if not arrays:
        raise DataError(f"{path} holds no arrays")
    return arrays, digest


def _npy_header(handle: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy file at ``handle``, read and checked before any
    data: versions 1.0 and 2.0, real numbers only (Python objects are never unpickled)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise DataError(f"{where} is .npy format version {version[0]}.{version[1]}; only 1.0 and 2.0 are read")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, RecursionError, tokenize.TokenError) as error:
        # numpy parses the header with ast.literal_eval: a broken one raises any of these
        raise DataError(f"{where} is not a readable .npy array ({type(error).__name__} in its header)") from None
    if dtype.hasobject or dtype.kind not in "fiu":
        raise DataError(
            f"{where} must hold real numbers, got dtype {dtype.kind!r} (Python objects are never unpickled)"
        )
    return shape, fortran_order, dtype


def _npy_from_bytes(raw: bytes, where: str) -> np.ndarray:
    """The array of an .npy file's bytes, its header checked (`_npy_header`, the size it claims
    present in the bytes) before anything is allocated."""
    import io

    handle = io.BytesIO(raw)
    shape, fortran_order, dtype = _npy_header(handle, where)
    count = math.prod(shape)
    size = count * dtype.itemsize
    left = len(raw) - handle.tell()
    if left < size:
        raise DataError(f"{where} is truncated: its header says {shape} ({size} bytes), it holds {left} bytes")
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=handle.tell())
    return values.reshape(shape, order="F" if fortran_order else "C")


def _read_npy(path: Path, handle: BinaryIO, max_ndim: int = 0) -> np.ndarray:
    """The array of an .npy file, its header checked (`_npy_header`, shape, size on disk) before
    its data is read. One column of numbers, or with ``max_ndim`` any shape of 1 to ``max_ndim`` axes."""
    shape, fortran_order, dtype = _npy_header(handle, str(path))
    if max_ndim:
        if not 1 <= len(shape) <= max_ndim or min(shape) < 0:
            raise DataError(f"{path} must be an array of 1 to {max_ndim} axes, got shape {shape}")
    elif len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or min(shape) < 0:
        raise DataError(f"{path} must be one column of numbers, got shape {shape}")
    count = math.prod(shape)
    if count > MAX_SERIES_POINTS:
        raise DataError(f"{path} claims {count} points, more than the {MAX_SERIES_POINTS} a series may have")
    size = count * dtype.itemsize
    left = os.fstat(handle.fileno()).st_size - handle.tell()
    if left < size:
        raise DataError(f"{path} is truncated: its header says {count} points ({size} bytes), it holds {left} bytes")
    data = handle.read(size)
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")


def _read_csv(path: Path, handle: BinaryIO, several_columns: bool = False) -> np.ndarray:
    """One column of numbers; with ``several_columns`` a (rows, columns) table of comma-separated
    numbers (a single column still comes back 1-D)."""
    values = array.array("d")
    number = 0  # the line's number in the file
    text_lines = 0  # lines that are not blank
    width = 0  # the columns of the first row of numbers
    while True:
        raw = handle.readline(MAX_CSV_LINE_BYTES + 1)
        if not raw:
            break
        number += 1
        if len(raw) > MAX_CSV_LINE_BYTES and not raw.endswith(b"\n"):
            raise DataError(f"{path} line {number} is longer than {MAX_CSV_LINE_BYTES} bytes")
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text (line {number})") from None
        if not line:
            continue
        text_lines += 1
        if several_columns:
            fields = line.split(",")
        elif "," in line or ";" in line or "\t" in line:
            raise DataError(f"{path} line {number}: expected one column, got several")
        else:
            fields = [line]
        try:
            row = [float(field) for field in fields]
        except ValueError:
            if text_lines == 1:
                continue  # a header line
            raise DataError(
                f"{path} line {number} is not {'a row of numbers' if several_columns else 'a number'}"
            ) from None
        if not width:
            width = len(row)
            if width > MAX_INPUT_COLUMNS:
                raise DataError(f"{path} line {number} has {width} columns, more than {MAX_INPUT_COLUMNS}")
        elif len(row) != width:
            raise DataError(f"{path} line {number} has {len(row)} columns, the first row {width}")
        values.extend(row)
        if len(values) > MAX_SERIES_POINTS:
            raise DataError(f"{path} holds more than the {MAX_SERIES_POINTS} points a series may have")
    table = np.frombuffer(values, dtype=np.float64) if values else np.zeros(0)
    return table.reshape(-1, width) if width > 1 else table
