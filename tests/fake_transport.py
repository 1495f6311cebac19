"""An in-memory stand-in for an asyncio transport, to drive a RESP connection without
sockets (tests and the hot-path microbenchmark)."""

from __future__ import annotations


class RecordingTransport:
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep  # False: count writes only (benchmarks)
        self.chunks: list[bytes] = []
        self.write_count = 0
        self.paused = 0
        self.resumed = 0
        self.closed = False

    @property
    def written(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        self.write_count += 1
        if self.keep:
            self.chunks.append(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
