"""blastscope edge runtime: preprocessing, model bundles, LiteRT inference and the capture daemon.

This package must import with no TensorFlow installed (a Raspberry Pi cannot afford it).
"""

from edge.bundle import Bundle, BundleError, Manifest, load_bundle, write_bundle
from edge.errors import BlastscopeError
from edge.image_io import ImageReadError, decode_image, read_image
from edge.preprocessing import PreprocessSpec, preprocess

__version__ = "0.1.0"

__all__ = [
    "BlastscopeError",
    "Bundle",
    "BundleError",
    "ImageReadError",
    "Manifest",
    "PreprocessSpec",
    "__version__",
    "decode_image",
    "load_bundle",
    "preprocess",
    "read_image",
    "write_bundle",
]
