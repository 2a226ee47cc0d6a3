"""Small encoded files that declare huge images (decompression bombs).

Generated, never committed: a PNG of 20000 x 20000 zeros compresses to
~400 KB but would decode to 1.2 GB of RGB.
"""

import functools
import struct
import zlib

import numpy as np
import tensorflow as tf


@functools.lru_cache(maxsize=None)
def png_bomb(side: int = 20000) -> bytes:
  """A valid greyscale PNG of side x side zeros, compressed row by row."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
  compressor = zlib.compressobj(9)
  row = bytes(side + 1)  # filter byte 0 + the row's pixels
  idat = b"".join(compressor.compress(row) for _ in range(side))
  idat += compressor.flush()
  ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
          + chunk(b"IEND", b""))


def jpeg_claiming(height: int, width: int) -> bytes:
  """A real 8x8 JPEG whose frame header (SOF0) claims another size."""
  data = bytearray(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def bmp_claiming(height: int, width: int) -> bytes:
  header = bytearray(54)
  header[0:2] = b"BM"
  struct.pack_into("<IiiHH", header, 14, 40, width, -height, 1, 24)
  struct.pack_into("<I", header, 10, 54)
  return bytes(header)


def gif_claiming(height: int, width: int) -> bytes:
  return b"GIF89a" + struct.pack("<HH", width, height) + bytes(20)
