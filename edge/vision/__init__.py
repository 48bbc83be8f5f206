"""Images: reading frames from files or bytes, and the one preprocessing implementation."""

from edge.vision.image_io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    decode_image,
    list_images,
    list_subfolders,
    read_image,
)
from edge.vision.preprocessing import normalise_colour, preprocess, preprocess_uint8, resize

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "decode_image",
    "list_images",
    "list_subfolders",
    "normalise_colour",
    "preprocess",
    "preprocess_uint8",
    "read_image",
    "resize",
]
