"""How much an input may hold before it is read: what a decompression bomb would exceed.

Compressed sizes say nothing about memory (a 510 KB ``.npz`` of zeros declares 512 MB of pixels), so
every limit here is on what decoding would produce, and every reader checks it from headers first:
the ``.npy`` header of each array in an npz, the image header of each member of a zip.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one input (an upload, or an ``.npz`` given by path); a refusal names the field it exceeded.

    Attributes
    ----------
    max_files : members of a zip.
    max_bytes : uncompressed bytes: a zip's members, or an npz's arrays as their headers declare them.
    max_pixels : pixels of one image in a zip (Pillow's own bomb guard allows 89 M).
    max_values : decoded values (images × pixels × channels) of the whole data set; each costs 4 bytes as
        float32 in memory, so the default, 2**28, is 1 GiB (MNIST is 55 M values, CIFAR-10 184 M).
    """

    max_files: int = 100_000
    max_bytes: int = 1 << 30
    max_pixels: int = 4096 * 4096
    max_values: int = 1 << 28

    def too_many_values(self, values: int, what: str) -> str | None:
        """The refusal for ``values`` decoded values of ``what``, or None within the limit."""
        if values <= self.max_values:
            return None
        return (f"refused: {what} decode to {values:,} values (images × pixels × channels), more than the limit "
                f"max_values = {self.max_values:,}")
