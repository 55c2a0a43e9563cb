"""One function that turns any accepted image into the dataset's conventions.

Fashion-MNIST items are 28x28 grayscale, a light garment on a black background, centred, the longer
side filling the frame. Photos (a labelled folder of a shop's own pictures) keep their colour: the
network's input is the picture, upright, padded to a square with the median colour of its border (so
the padding continues the floor or backdrop it was shot on, not a black bar) and scaled to the
dataset's side; what is catalogued also gets a display copy, the picture at most DISPLAY_SIDE pixels on
its longer side, kept as a JPEG. A JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale that
still covers what is made of it (libjpeg's DCT scaling): a query from a 400x534 photo decodes 100x134.
Search, the page's upload, the folder source and the drop folder all go through `normalise_image`, so
an item is stored exactly as a query of the same file is searched.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from storage.dataset import FASHION_MNIST, PHOTO, DatasetDescription
from storage.errors import UserError
from storage.files import read_regular_file

MULTI_PICTURE_JPEG = "MPO"  # what phones and cameras save: a JPEG whose first picture is the photo
ACCEPTED_FORMATS = ("PNG", "JPEG", MULTI_PICTURE_JPEG)
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 40 megapixels: any phone photo, far below a decompression bomb
MIN_SIDE = 8  # fewer pixels than this on a side cannot show a garment; upscaling it only makes a blob
WORKING_SIDE = 1024  # larger images are box-averaged down first: the result is 28x28 anyway, memory stays flat
DISPLAY_QUALITY = 90  # JPEG quality of display copies
BACKGROUND_MARGIN = 24  # grey levels above the background that count as "object" when cropping


class ImageRejected(UserError, ValueError):
    """The input cannot be used as an image; str(error) says why, in words a user can act on."""


class ImageTooLarge(ImageRejected):
    """The input is past the size limits: MAX_FILE_BYTES, or MAX_PIXELS once decoded (HTTP 413)."""


@dataclass(frozen=True)
class NormalisedImage:
    pixels: np.ndarray  # the dataset's pixel_shape, uint8: what the network sees
    source_format: str
    source_size: tuple[int, int]
    display: bytes = field(default=b"", repr=False)  # the display copy (photos, when asked for): JPEG

    @property
    def content_hash(self) -> str:
        """Equal hashes mean the same item: of the display copy for photos, else of the pixels."""
        return content_hash(self.pixels, self.display)


def content_hash(pixels: np.ndarray, display: bytes = b"") -> str:
    """sha256 of an item's display copy when it has one (independent of the network's input side), else
    of its normalised pixels."""
    data = display or np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return hashlib.sha256(data).hexdigest()


def _open_checked(data: bytes, draft_side: int = 0) -> Image.Image:
    if len(data) == 0:
        raise ImageRejected("empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLarge(
            f"file is {len(data) / 2**20:.1f} MB, above the {MAX_FILE_BYTES / 2**20:.0f} MB limit; "
            "resize it before adding it"
        )
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image: the data is neither PNG nor JPEG (is it really an image file?)") from None
    except Image.DecompressionBombError as error:
        raise _too_many_pixels(error) from None
    except (OSError, SyntaxError, ValueError) as error:  # a known header cut short or garbled
        raise ImageRejected(f"image data is damaged or truncated ({error})") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected(f"unsupported format {image.format}; use PNG or JPEG")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels, above the {MAX_PIXELS / 1e6:.0f}-megapixel limit"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(
            f"image is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side to show "
            "a garment"
        )
    if image.format == MULTI_PICTURE_JPEG:
        image.seek(0)  # the later pictures are depth maps, previews or a stereo twin of the first
    elif getattr(image, "n_frames", 1) > 1:
        raise ImageRejected(f"animated {image.format} with {image.n_frames} frames; use a still image")
    image.info["source_size"] = image.size  # before the draft below makes it smaller
    if draft_side and image.format in ("JPEG", MULTI_PICTURE_JPEG):
        image.draft("RGB", (draft_side, draft_side))  # decode at 1/2, 1/4 or 1/8 scale when that is still larger
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(f"image data is damaged or truncated ({error})") from None
    return image


def _too_many_pixels(error: Exception) -> ImageRejected:
    return ImageTooLarge(f"image too large in pixels ({error}); the limit is {MAX_PIXELS / 1e6:.0f} megapixels, "
                         "resize it before adding it")


def _shrink(image: Image.Image) -> Image.Image:
    """Box-average an image larger than WORKING_SIDE down by an integer factor (single-band modes only)."""
    factor = max(image.size) // WORKING_SIDE
    return image.reduce(factor) if factor > 1 else image


# EXIF orientation -> the transpose that shows the picture upright (what ImageOps.exif_transpose uses)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. Not ImageOps.exif_transpose: it also rewrites the
    EXIF block, which fails on damaged metadata (fuzzing: TypeError, struct.error) although the pixels
    are fine; EXIF too damaged to read leaves the picture as stored."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    except Exception:  # noqa: BLE001 - unreadable metadata is not a reason to refuse the picture
        method = None
    return image.transpose(method) if method is not None else image


def _wide_grey(image: Image.Image) -> np.ndarray | None:
    """A 16-bit or float grey image as floats in [0, 255] (box-averaged down when large); None for other modes."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(_shrink(image.convert("F")), dtype=np.float64)
        top = 65535.0 if wide.max() > 255 else 255.0
        return np.clip(wide * (255.0 / top), 0, 255)
    if image.mode == "F":
        return np.clip(np.asarray(_shrink(image), dtype=np.float64), 0, 255)
    return None


def _on_white(image: Image.Image) -> Image.Image:
    """Transparency over white (the usual product-shot backdrop); an opaque image as it is."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """Grayscale float array in [0, 255], upright; transparency becomes white."""
    image = _upright(image)
    wide = _wide_grey(image)
    return wide if wide is not None else np.asarray(_shrink(_on_white(image).convert("L")), dtype=np.float64)


def _dataset_conventions(gray: np.ndarray, side: int) -> np.ndarray:
    """Light object on black, cropped to the object, padded square (aspect kept), side x side (28)."""
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray = 255.0 - gray
        border = 255.0 - border
    background = float(np.median(border))
    scale = max(255.0 - background, 1.0)
    gray = np.clip((gray - background) * (255.0 / scale), 0, 255)
    rows = np.flatnonzero((gray > BACKGROUND_MARGIN).any(axis=1))
    cols = np.flatnonzero((gray > BACKGROUND_MARGIN).any(axis=0))
    if rows.size == 0:
        raise ImageRejected("no object found: the image is a single flat colour")
    gray = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    height, width = gray.shape
    square_side = max(height, width)
    square = np.zeros((square_side, square_side), dtype=np.float64)
    top, left = (square_side - height) // 2, (square_side - width) // 2
    square[top: top + height, left: left + width] = gray
    resized = Image.fromarray(square.astype(np.uint8), mode="L").resize((side, side), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """The picture upright in RGB; transparency becomes white, 16-bit grey is scaled to 8 bits."""
    image = _upright(image)
    wide = _wide_grey(image)
    if wide is not None:
        return Image.fromarray(wide.astype(np.uint8), mode="L").convert("RGB")
    return _on_white(image).convert("RGB")


def display_picture(image: Image.Image, display_side: int) -> np.ndarray:
    """The upright RGB picture, shrunk to at most `display_side` pixels on its longer side."""
    image = _to_rgb(image)
    image.thumbnail((display_side, display_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.asarray(image, dtype=np.uint8)


def photo_input(picture: np.ndarray, side: int) -> np.ndarray:
    """The network's input for a photo: padded to a square with the median colour of its border, then
    scaled to side x side (RGB uint8)."""
    height, width = picture.shape[:2]
    border = np.concatenate([picture[0], picture[-1], picture[:, 0], picture[:, -1]])
    square_side = max(height, width)
    square = np.empty((square_side, square_side, 3), np.uint8)
    square[:] = np.median(border, axis=0).astype(np.uint8)
    top, left = (square_side - height) // 2, (square_side - width) // 2
    square[top: top + height, left: left + width] = picture
    return np.asarray(Image.fromarray(square).resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0))


def encode_display(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=DISPLAY_QUALITY)
    return buffer.getvalue()


def input_from_display(display: bytes, dataset: DatasetDescription) -> np.ndarray:
    """A catalogued photo's network input re-derived from its display copy (a run at another side)."""
    return photo_input(decode_display(display), dataset.side)


def normalise_image(data: bytes, dataset: DatasetDescription = FASHION_MNIST,
                    with_display: bool = False) -> NormalisedImage:
    """Validate and normalise an encoded PNG/JPEG. Raises ImageRejected with the reason, and nothing else:
    whatever a damaged file makes PIL raise (fuzzing found TypeError and struct.error from malformed
    EXIF, for example) is that file's rejection, never a failed run or a traceback on the page.
    `with_display`: also make a photo's display copy (what is catalogued needs it, a query does not)."""
    try:
        return _normalise(data, dataset, with_display)
    except ImageRejected:
        raise
    except MemoryError:
        raise ImageRejected("image needs more memory to decode than this machine has free") from None
    except Exception as error:  # noqa: BLE001 - see the docstring
        detail = " ".join(str(error).split())[:200]  # one line, whatever the library put in it
        raise ImageRejected(f"image data is damaged or cannot be decoded ({type(error).__name__}: {detail})") from None


def _open(data: bytes, draft_side: int = 0) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _open_checked(data, draft_side)
        except Image.DecompressionBombWarning as error:
            raise _too_many_pixels(error) from None


def _normalise(data: bytes, dataset: DatasetDescription, with_display: bool) -> NormalisedImage:
    photo = dataset.conventions == PHOTO
    image = _open(data, dataset.side if photo else 0)
    fmt, size = image.format, image.info["source_size"]
    if photo:
        display = b""
        if with_display:
            display = encode_display(display_picture(_open(data, dataset.display_side), dataset.display_side))
        return NormalisedImage(photo_input(np.asarray(_to_rgb(image)), dataset.side), fmt, size, display)
    if size == (dataset.side, dataset.side) and image.mode == "L":
        already = np.asarray(image, dtype=np.uint8)
        border = np.concatenate([already[0], already[-1], already[:, 0], already[:, -1]])
        if np.median(border) < 32:  # already in the dataset's conventions: keep it bit-exact
            return NormalisedImage(already.copy(), fmt, size)
    return NormalisedImage(_dataset_conventions(_to_grayscale(image), dataset.side), fmt, size)


def normalise_file(path, dataset: DatasetDescription = FASHION_MNIST, with_display: bool = False) -> NormalisedImage:
    """normalise_image of a file, read without blocking and at most MAX_FILE_BYTES + 1 bytes of it; a
    file that cannot be read (missing, a FIFO, no permission) is rejected like a bad image."""
    try:
        data, _ = read_regular_file(path, MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ImageRejected(f"cannot be read ({error.strerror or error})") from None
    return normalise_image(data, dataset, with_display)


def encode_png(pixels: np.ndarray) -> bytes:
    """Normalised pixels (grey (side, side) or RGB (side, side, 3)) as a PNG file."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_display(display: bytes) -> np.ndarray:
    """A display copy (as the catalogue and the gallery keep it) as an RGB array; ImageRejected when damaged."""
    try:
        return np.asarray(Image.open(io.BytesIO(display)).convert("RGB"))
    except Exception as error:  # noqa: BLE001 - a damaged copy is shown as a reason, never a traceback
        raise ImageRejected(f"the display copy cannot be decoded ({type(error).__name__})") from None
