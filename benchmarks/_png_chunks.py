"""PNG chunk surgery for the benchmarks: replace a signed PNG's pixels and keep its other chunks (the C2PA
manifest), which is what an edit by a tool that keeps unknown chunks produces."""
from __future__ import annotations

import struct
import zlib


def chunks(png: bytes):
    """(type, body) of each chunk after the signature."""
    i = 8
    while i + 8 <= len(png):
        n = struct.unpack(">I", png[i:i + 4])[0]
        yield png[i + 4:i + 8], png[i + 8:i + 8 + n]
        i += 12 + n


def chunk(t: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)


def replace_pixels(signed: bytes, pixels_png: bytes) -> bytes:
    """``signed`` with the image data (IHDR, IDAT) of ``pixels_png``; its other chunks kept in place."""
    ihdr = next(b for t, b in chunks(pixels_png) if t == b"IHDR")
    idat = b"".join(b for t, b in chunks(pixels_png) if t == b"IDAT")
    out, done = [signed[:8]], False
    for t, b in chunks(signed):
        if t == b"IHDR":
            out.append(chunk(t, ihdr))
        elif t == b"IDAT":
            if not done:
                out.append(chunk(t, idat))
                done = True
        else:
            out.append(chunk(t, b))
    return b"".join(out)
