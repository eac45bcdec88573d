"""Read TensorFlow v1 checkpoints (tensor bundles) into numpy arrays, without TensorFlow.

A checkpoint ``PREFIX`` is two files. ``PREFIX.index`` is an SSTable (LevelDB's table format):
data blocks of prefix-compressed key/value entries, an index block pointing at them and a
48-byte footer. Each key is a variable name; its value a ``BundleEntryProto`` (dtype, shape,
shard, offset, size; the empty key holds the ``BundleHeaderProto``). ``PREFIX.data-00000-of-N``
holds the raw little-endian tensor bytes at those offsets. Only what reading a float model
needs is implemented: uncompressed blocks, dense (unsliced) tensors of the numeric dtypes below.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from soundscape.errors import ModelUnavailable

#: LevelDB/TensorFlow table magic number (the last 8 bytes of the .index file)
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
#: block trailer: 1 byte compression type + 4 bytes CRC
BLOCK_TRAILER = 5

#: TensorFlow DataType enum -> numpy dtype (little-endian)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


class CheckpointError(ModelUnavailable):
    """The checkpoint files are missing, damaged or use a feature this reader lacks."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a protobuf/LevelDB base-128 varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint longer than 64 bits")


def _fields(message: bytes) -> dict[int, list[int | bytes]]:
    """A protobuf message's fields: number -> values (varints as int, the rest as bytes)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = message[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = message[pos : pos + 4], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(message):
            raise CheckpointError("truncated protobuf message")
        out.setdefault(number, []).append(value)
    return out


def _block(index: bytes, handle: bytes) -> bytes:
    """The contents of the block a BlockHandle (varint offset, varint size) points at."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    end = offset + size
    if end + BLOCK_TRAILER > len(index):
        raise CheckpointError("block beyond the end of the index file")
    if index[end] != 0:
        raise CheckpointError(f"compressed index block (type {index[end]}) is not supported")
    return index[offset:end]


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one SSTable block (keys share prefixes with their predecessor)."""
    if len(block) < 4:
        raise CheckpointError("block too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError("bad restart count in block")
    out: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + length]))
        pos += length
    return out


def _shape(message: bytes) -> tuple[int, ...]:
    """A TensorShapeProto's dimensions (field 2: Dim {int64 size = 1})."""
    fields = _fields(message)
    if fields.get(3):
        raise CheckpointError("tensor of unknown rank")
    dims = []
    for dim in fields.get(2, []):
        assert isinstance(dim, bytes)
        size = _fields(dim).get(1, [0])[0]
        assert isinstance(size, int)
        dims.append(size)
    return tuple(dims)


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint ``prefix`` (``PREFIX.index`` + ``PREFIX.data-*``) by name.

    Raises ``CheckpointError`` (a ``ModelUnavailable``) when the files are missing or damaged.
    """
    prefix = str(prefix)
    try:
        index = Path(prefix + ".index").read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint index {prefix}.index: {exc}") from exc
    if len(index) < FOOTER_SIZE or struct.unpack_from("<Q", index, len(index) - 8)[0] != (
        TABLE_MAGIC
    ):
        raise CheckpointError(f"{prefix}.index is not a TensorFlow checkpoint index")
    footer = index[len(index) - FOOTER_SIZE :]
    _, pos = _varint(footer, 0)  # metaindex handle (unused): offset, size
    _, pos = _varint(footer, pos)
    entries: dict[str, tuple[int, tuple[int, ...], int, int, int]] = {}
    num_shards = 1
    for _, handle in _entries(_block(index, footer[pos:])):
        for key, value in _entries(_block(index, handle)):
            fields = _fields(value)
            if key == b"":  # BundleHeaderProto: num_shards = 1, endianness = 2 (0 = little)
                num_shards = int(fields.get(1, [1])[0])
                if fields.get(2, [0])[0] != 0:
                    raise CheckpointError("big-endian checkpoints are not supported")
                continue
            if fields.get(7):
                raise CheckpointError(f"sliced tensor {key!r} is not supported")
            dtype, shape_msg = fields.get(1, [0])[0], fields.get(2, [b""])[0]
            shard, offset, size = (fields.get(n, [0])[0] for n in (3, 4, 5))
            assert isinstance(dtype, int) and isinstance(shape_msg, bytes)
            assert isinstance(shard, int) and isinstance(offset, int) and isinstance(size, int)
            entries[key.decode("utf-8")] = (dtype, _shape(shape_msg), shard, offset, size)
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, shape, shard, offset, size) in entries.items():
        if dtype not in DTYPES:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype {dtype}")
        np_dtype = DTYPES[dtype]
        if size != int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize:
            raise CheckpointError(f"tensor {name!r}: {size} bytes do not fit shape {shape}")
        if shard not in shards:
            path = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
            try:
                shards[shard] = Path(path).read_bytes()
            except OSError as exc:
                raise CheckpointError(f"cannot read checkpoint data {path}: {exc}") from exc
        data = shards[shard]
        if offset + size > len(data):
            raise CheckpointError(f"tensor {name!r} lies beyond the end of its data file")
        array = np.frombuffer(data, dtype=np_dtype, count=size // np_dtype.itemsize, offset=offset)
        tensors[name] = array.reshape(shape).astype(np_dtype.newbyteorder("="), copy=True)
    return tensors
