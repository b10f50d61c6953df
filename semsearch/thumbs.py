"""Thumbnail cache: one small WebP per indexed image, made once, kept inside the collection directory.

Files are named ``<collection>/thumbs/<id>-<sha256 prefix>.webp``, so an image whose content changed (same
id, new hash) gets a new thumbnail instead of a stale one. Writes are atomic (temporary file in the same
folder, then ``os.replace``), so concurrent requests for the same thumbnail never see a half-written file.
"""

from __future__ import annotations

import io
from pathlib import Path

from semsearch.media import decode, to_rgb
from semsearch.paths import write_atomically

THUMBS_DIR = "thumbs"
THUMB_SIZE = 256
THUMB_QUALITY = 80
MEDIA_TYPE = "image/webp"


def thumb_path(root: Path, image_id: int, sha256: str) -> Path:
    """Where the thumbnail of an image (id, content hash) lives; only ints and hex digits in the name."""
    digest = "".join(c for c in sha256[:16] if c in "0123456789abcdef")
    return Path(root) / THUMBS_DIR / f"{int(image_id)}-{digest}.webp"


def render_thumbnail(source: Path, size: int = THUMB_SIZE) -> bytes:
    """A WebP of `source` whose longer side is at most `size` pixels (aspect kept, EXIF rotation applied,
    transparency kept); decoded within `semsearch.media`'s limits."""
    from PIL import Image

    def shrink(img: Image.Image) -> Image.Image:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        return img

    small = decode(source, lambda width, height: (size, size), shrink)
    if small.mode not in ("RGB", "RGBA"):
        small = small.convert("RGBA") if "A" in small.getbands() else to_rgb(small)
    out = io.BytesIO()
    small.save(out, format="WEBP", quality=THUMB_QUALITY, method=4)
    return out.getvalue()


def thumbnail(root: Path, image_id: int, sha256: str, source: Path) -> Path | bytes:
    """The cached thumbnail file (made now if missing), or its bytes when the collection is read-only."""
    target = thumb_path(root, image_id, sha256)
    if target.is_file():
        return target
    data = render_thumbnail(source)
    try:
        write_atomically(target, lambda tmp: tmp.write_bytes(data))
    except OSError:  # read-only collection: serve without caching
        return data
    return target
