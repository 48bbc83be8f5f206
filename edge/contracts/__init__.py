"""The contracts: what the trainer, the converters and a lab dashboard code against.

Nothing here imports OpenCV, LiteRT or TensorFlow.
"""

from edge.contracts.manifest import (
    MANIFEST_FILE,
    BundleError,
    DecisionThresholds,
    GoldenInfo,
    HeadInfo,
    HeadKind,
    Manifest,
    Provenance,
    Quantization,
    TensorSpecModel,
    Verification,
    read_manifest,
    sha256_file,
    write_manifest,
)
from edge.contracts.preprocess_spec import (
    SCALING_RANGES,
    ColourNormalisation,
    PreprocessError,
    PreprocessSpec,
)

__all__ = [
    "MANIFEST_FILE",
    "SCALING_RANGES",
    "BundleError",
    "ColourNormalisation",
    "DecisionThresholds",
    "GoldenInfo",
    "HeadInfo",
    "HeadKind",
    "Manifest",
    "PreprocessError",
    "PreprocessSpec",
    "Provenance",
    "Quantization",
    "TensorSpecModel",
    "Verification",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]
