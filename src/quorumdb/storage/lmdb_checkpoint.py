"""A durable copy of LMDB's two meta pages at a checkpoint, written back after a crash.

Why: the write-ahead log lets LMDB commit without syncing, and flushes LMDB only at
checkpoints. Between them the kernel may write LMDB's pages in any order, so after an
OS crash the meta page on disk can point at pages that never reached it. The pages of
a checkpoint's snapshot, though, were all flushed by the checkpoint and are kept from
reuse by a read transaction held until the next checkpoint is saved
(`LmdbStorage.begin_checkpoint`). So writing the checkpoint's meta pages back before
LMDB opens returns the file to that snapshot, intact; the log replays the rest.

File (`checkpoint.meta` in the environment's directory, replaced atomically):
magic (8 bytes) | page size (4, big-endian) | CRC-32 of the pages (4) | the two pages.
"""

from __future__ import annotations

import os
from struct import Struct
from zlib import crc32

from quorumdb.storage.interface import StorageError

FILE_NAME = "checkpoint.meta"
DATA_FILE_NAME = "data.mdb"
_MAGIC = b"QDBMETA1"
_HEADER = Struct(">8sII")


def read_meta_pages(directory: str, page_size_bytes: int) -> bytes:
    """LMDB's two meta pages as the page cache holds them now (coherent with the map)."""
    with open(os.path.join(directory, DATA_FILE_NAME), "rb") as data_file:
        pages = os.pread(data_file.fileno(), 2 * page_size_bytes, 0)
    if len(pages) != 2 * page_size_bytes:
        raise StorageError(f"LMDB data file in {directory} is shorter than its meta pages")
    return pages


def save(directory: str, page_size_bytes: int, pages: bytes) -> None:
    """Replace the saved meta pages atomically and durably."""
    path = os.path.join(directory, FILE_NAME)
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(_HEADER.pack(_MAGIC, page_size_bytes, crc32(pages)) + pages)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _sync_directory(directory)


def restore(directory: str) -> bool:
    """Write the saved meta pages back into the data file (before LMDB opens it);
    False if there are none (a new environment, or one from before the log)."""
    path = os.path.join(directory, FILE_NAME)
    try:
        with open(path, "rb") as file:
            content = file.read()
    except FileNotFoundError:
        return False
    if len(content) < _HEADER.size:
        raise StorageError(f"{path} is truncated")
    magic, page_size_bytes, checksum = _HEADER.unpack_from(content)
    pages = content[_HEADER.size :]
    if magic != _MAGIC or len(pages) != 2 * page_size_bytes or crc32(pages) != checksum:
        raise StorageError(f"{path} is damaged: cannot return LMDB to its last checkpoint")
    descriptor = os.open(os.path.join(directory, DATA_FILE_NAME), os.O_WRONLY)
    try:
        os.pwrite(descriptor, pages, 0)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


def _sync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
