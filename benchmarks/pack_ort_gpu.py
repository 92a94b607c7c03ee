"""Packs the onnxruntime-gpu wheel into the two pieces benchmarks/device_check.sh unpacks on a GPU
machine that has no network and takes 64 MiB a call (NOTES.md, "CUDA: what ran").

- ``.gpua/cuda_sm90.so.xz``: the CUDA provider library (~284 MB) with the machine code of every GPU
  architecture but sm_90 (H100/H200) zeroed in its .nv_fatbin section, entry headers kept (the
  driver loads the sm_90 entry), so that xz (-9e) packs it to ~51.4 MB.
- ``.gpub/ortrest.tar.xz``: the rest of the ``onnxruntime`` package without the TensorRT provider
  and the unused C API library (~9.1 MB).

Usage (the folders .gpua, .gpub, .gpu, .whl are git-ignored through .git/info/exclude):
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 -d .whl onnxruntime-gpu==1.31.1
  python3 benchmarks/pack_ort_gpu.py .whl/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
Then ONE device call carrying ``.gpua`` and ``.gpub`` (~60.5 MB = 57.7 MiB, with the ~2.5 MB
working tree under the 64 MiB a call takes) runs ``bash benchmarks/device_check.sh``, which builds
the char GRU bench folder (.gpu/bench) there. If the working tree has grown past what leaves room,
two calls on the same warm machine (it stays warm only ~30 s after a call): a first carrying
``.gpua`` runs ``mkdir -p /tmp/gpua && cp .gpua/* /tmp/gpua/``, and a second carrying ``.gpub``
runs ``bash benchmarks/device_check.sh`` (it reads /tmp/gpua when .gpua did not travel; a call
removes the ignored paths it does not carry).
"""

from __future__ import annotations

import io
import lzma
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

CUDA_LIBRARY = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
# Left out: the TensorRT provider, and the C API library (libonnxruntime.so.VERSION, 29 MB): the
# Python module (onnxruntime_pybind11_state) holds the whole runtime and does not load it.
LEFT_OUT = ("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", "onnxruntime/capi/libonnxruntime.so")
FATBIN_MAGIC = 0xBA55ED50
KEEP_ARCH = 90


def keep_only_sm90(library: bytes) -> bytes:
    """The ELF ``library`` with every .nv_fatbin entry of another architecture zeroed."""
    data = bytearray(library)
    section_offset = struct.unpack_from("<Q", data, 0x28)[0]
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, section_offset + i * entry_size) for i in range(count)]
    names = sections[names_index][4]
    fatbin = next(s for s in sections if data[names + s[0] : names + s[0] + 11] == b".nv_fatbin\0")
    position, end = fatbin[4], fatbin[4] + fatbin[5]
    while position < end:
        magic, _, header, size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8
            continue
        entry, entries_end = position + header, position + header + size
        while entry < entries_end:
            _, _, entry_header, padded = struct.unpack_from("<HHIQ", data, entry)
            if struct.unpack_from("<I", data, entry + 0x1C)[0] != KEEP_ARCH:
                data[entry + entry_header : entry + entry_header + padded] = bytes(padded)
            entry += entry_header + padded
        position = entries_end
    return bytes(data)


def main(wheel: str) -> None:
    Path(".gpua").mkdir(exist_ok=True)
    Path(".gpub").mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        with lzma.open(".gpua/cuda_sm90.so.xz", "wb", preset=9 | lzma.PRESET_EXTREME) as packed:
            packed.write(keep_only_sm90(archive.read(CUDA_LIBRARY)))
        with tarfile.open(".gpub/ortrest.tar.xz", "w:xz") as rest:
            for info in archive.infolist():
                name = info.filename
                if (
                    not name.startswith("onnxruntime/")
                    or name == CUDA_LIBRARY
                    or name.startswith(LEFT_OUT)
                    or info.is_dir()
                ):
                    continue
                member = tarfile.TarInfo(name)
                member.size, member.mode = info.file_size, 0o755 if name.endswith(".so") else 0o644
                rest.addfile(member, io.BytesIO(archive.read(name)))
    for path in (".gpua/cuda_sm90.so.xz", ".gpub/ortrest.tar.xz"):
        print(f"{path}: {Path(path).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
