"""Image inputs: PIL images, local file paths or base64 data URLs, checked before any model work.

Every failure is one StdecError sentence that names the image and the fix: not an image,
truncated, too large, a network URL (never fetched), or images sent to a text-only model.
"""

import base64
import binascii
import io
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from stdec.errors import StdecError

__all__ = ["IMAGE_PLACEHOLDER", "MAX_BYTES", "MAX_PIXELS", "ImageInput", "load_image",
           "load_images", "require_vision", "sees_images", "tokenize_with_images"]

MAX_PIXELS = 8192 * 8192  # LLaDA-V sees at most a 2304 x 2304 grid; beyond this is an error
MAX_BYTES = 32 * 2**20
IMAGE_PLACEHOLDER = "<image>"  # where an image goes in a prompt (LLaVA's convention)
ImageInput = Image.Image | str | Path
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(.*)", re.DOTALL)


def _name(source: ImageInput) -> str:
    if isinstance(source, Image.Image):
        return "the PIL image"
    text = str(source)
    if len(text) <= 48:
        return repr(text)
    # a data URL by its type, a path by its file name
    return f"{text[:40]!r}..." if text.startswith("data:") else f"'...{text[-40:]}'"


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.UnidentifiedImageError, OSError, ValueError):
        raise StdecError(f"image {name} is not an image (PIL cannot read it); give a PNG, "
                         "JPEG, GIF, BMP or WebP file.") from None
    except Image.DecompressionBombError:
        raise StdecError(f"image {name} is too large (over {max_pixels} pixels).") from None
    return _checked(image, name, max_pixels)


def _checked(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    w, h = image.size
    if w * h > max_pixels:  # checked on the header, before decoding the pixels
        raise StdecError(f"image {name} is too large: {w}x{h} is over {max_pixels} pixels; "
                         "resize it first.")
    if w < 1 or h < 1:
        raise StdecError(f"image {name} is empty ({w}x{h}).")
    try:
        image.load()
    except OSError as err:  # Pillow reports a cut-off file as an OSError on load
        what = "is truncated" if "truncat" in str(err) else f"cannot be decoded ({err})"
        raise StdecError(f"image {name} {what}; send the whole file.") from None
    return image.convert("RGB")


def load_image(source: ImageInput, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a local path or a data:image/...;base64 URL.
    `name`: what an error calls the image (default: from `source`)."""
    name = name or _name(source)
    if isinstance(source, Image.Image):
        return _checked(source, name, max_pixels)
    if not isinstance(source, str | Path):
        raise StdecError(f"image {name} is a {type(source).__name__}; give a PIL image, a file "
                         "path or a base64 data URL.")
    text = str(source)
    if re.match(r"(https?|ftp)://", text):
        raise StdecError(f"image {name} is a network URL; stdec never fetches images, so give a "
                         "local path or a data:image/...;base64 URL.")
    if text.startswith("data:"):
        m = _DATA_URL.fullmatch(text)
        if not m:
            raise StdecError(f"image {name} is a data URL but not data:image/<type>;base64,...")
        if len(m.group(1)) * 3 // 4 > max_bytes:
            raise StdecError(f"image {name} is too large: over {max_bytes} bytes.")
        try:
            data = base64.b64decode(m.group(1), validate=True)
        except (binascii.Error, ValueError):
            raise StdecError(f"image {name} is not valid base64.") from None
        return _open(data, name, max_pixels)
    path = Path(text)
    if not path.is_file():
        raise StdecError(f"image {name} is not a file (no such path); give an image file, a PIL "
                         "image or a base64 data URL.")
    if path.stat().st_size > max_bytes:
        raise StdecError(f"image {name} is too large: {path.stat().st_size} bytes, over "
                         f"{max_bytes}.")
    return _open(path.read_bytes(), name, max_pixels)


def load_images(sources: Sequence[ImageInput], **limits) -> list[Image.Image]:
    return [load_image(s, **limits) for s in sources]


def sees_images(model) -> bool:
    """Whether a model (or its class) takes images: a vision-language model expands them."""
    return hasattr(model, "encode_prompts")


def require_vision(model, n_images: int):
    """Fail, before any work, when images go to a model that cannot see them."""
    if n_images and not sees_images(model):
        raise StdecError(f"{n_images} image(s) were given, but {type(model).__name__} is a "
                         "text-only model; use a vision-language checkpoint (LLaDA-V or LaViDa).")


def tokenize_with_images(text: str, tokenizer, n_images: int, image_id: int,
                         drop_after_image: bool = False) -> list[int]:
    """Token ids of `text` with `image_id` where each "<image>" stands, each piece tokenized
    alone.

    `drop_after_image` (LLaDA-V's and LaViDa's checkpoints): as LLaVA's tokenizer_image_token
    (mm_utils.py of both) does, when the first piece starts with BOS the first token of every
    later piece is dropped, whatever it is. Under LLaDA's chat template (BOS first, none added
    per piece) that is the token after each "<image>", usually its newline; those models were
    trained on prompts built so. Otherwise (stdec's own checkpoints, trained so) only a BOS
    that the tokenizer puts at the front of a later piece is dropped."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != n_images:
        raise StdecError(f"the prompt has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders but "
                         f"{n_images} images were given; put one {IMAGE_PLACEHOLDER} per image.")
    chunks = [tokenizer(piece).input_ids for piece in pieces]
    bos = getattr(tokenizer, "bos_token_id", None)
    starts_with_bos = bos is not None and chunks[0][:1] == [bos]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        drop = starts_with_bos if drop_after_image else bos is not None and chunk[:1] == [bos]
        ids += [image_id, *chunk[int(drop):]]
    return ids
