"""Images as data (finetune/data/images.py): only the formats image folders hold are parsed, and deep images are brought
to 8 bits in bounded memory with the same arithmetic as before."""
import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from finetune.data.images import normalized_image

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def test_a_postscript_file_named_png_is_refused_before_any_interpreter_sees_it():
    """PIL opens EPS through Ghostscript where it is installed: bytes of a file named .png reached it."""
    with pytest.raises(ValueError, match=r"not an image of a format read here .*formats: PNG, JPEG, BMP, GIF, TIFF, WEBP, PPM"):
        normalized_image(EPS)


def test_a_16_bit_image_becomes_8_bits_exactly_as_before_in_bounded_memory():
    values = (np.arange(1500 * 1500, dtype=np.uint32) * 29 % 65536).astype(np.uint16).reshape(1500, 1500)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")  # uint16: mode I;16
    tracemalloc.start()
    image = normalized_image(buffer.getvalue())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64)  # the whole-array way, for reference
    expected = np.clip(decoded * (255.0 / 65535.0), 0, 255).astype(np.uint8)
    reference = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.mode == "L" and np.array_equal(np.asarray(image), expected)  # the same pixels to the last bit
    assert peak < 0.5 * reference, f"{peak / 2**20:.1f} MiB vs {reference / 2**20:.1f} MiB converting the whole array"
