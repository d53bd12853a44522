"""Process-wide settings a command applies once, before any job runs."""

from __future__ import annotations


def bound_malloc() -> None:
    """Keep glibc from retaining freed multi-MB buffers (upload parts, zstd jobs).

    glibc raises its mmap threshold after each large free, so later part-sized buffers come
    from heap arenas that are rarely returned; a fixed 1 MiB threshold keeps them in mmap.
    Measured: ~14 MB less peak memory for a backup. No effect off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
