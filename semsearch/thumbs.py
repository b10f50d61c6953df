"""Thumbnail cache: one small WebP per indexed image, made once, kept inside the collection directory.

Files are named ``<collection>/thumbs/<id>-<sha256 prefix>.webp``, so an image whose content changed (same
id, new hash) gets a new thumbnail instead of a stale one. Writes are atomic (temporary file in the same
folder, then ``os.replace``), so concurrent requests for the same thumbnail never see a half-written file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from semsearch.errors import DecodeError
from semsearch.media import MAX_PIXELS, SUPPORTED_FORMATS
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
    """A WebP of `source` whose longer side is at most `size` pixels (aspect kept, EXIF rotation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                if img.format not in SUPPORTED_FORMATS:
                    raise DecodeError(f"unsupported image format ({img.format})")
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise DecodeError("image too large")
                img.draft("RGB", (size, size))
                img.load()
                img = ImageOps.exif_transpose(img) or img
                if img.mode not in ("RGB", "RGBA"):
                    img = img.convert(
                        "RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"
                    )
                img.thumbnail((size, size), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                img.save(out, format="WEBP", quality=THUMB_QUALITY, method=4)
                return out.getvalue()
    except DecodeError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DecodeError(f"cannot make a thumbnail ({str(exc)[:80] or type(exc).__name__})") from None


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
