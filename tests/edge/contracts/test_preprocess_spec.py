"""The preprocessing contract is strict: a value the device does not implement is refused."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from edge.contracts.manifest import BundleError, Manifest, read_manifest
from edge.contracts.preprocess_spec import _RULES, PreprocessError, PreprocessSpec
from edge.model.bundle import load_bundle
from tests.edge.daemon_helpers import make_bundle


def test_spec_round_trips_through_json_and_hash_tracks_content() -> None:
    spec = PreprocessSpec(height=300, width=300, contrast="hist_eq", artefact_mask=True)
    again = PreprocessSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec and again.sha256() == spec.sha256()
    assert PreprocessSpec(height=300, width=300).sha256() != spec.sha256()


def test_an_integer_clip_limit_is_the_same_spec_and_the_same_hash() -> None:
    spec = PreprocessSpec.from_dict({"contrast": "clahe", "clahe_clip": 3})
    assert spec.clahe_clip == 3.0 and isinstance(spec.clahe_clip, float)
    assert spec.sha256() == PreprocessSpec(contrast="clahe", clahe_clip=3.0).sha256()


def test_every_field_has_a_rule() -> None:
    assert set(_RULES) == {f.name for f in fields(PreprocessSpec)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"colour_normalisation": "macenko"},
            "preprocessing.colour_normalisation='macenko' is invalid: "
            "expected one of none, reinhard",
        ),
        ({"contrast": "equalize"}, "contrast='equalize' is invalid: expected one of none, hist_eq"),
        ({"scaling": "div255"}, "scaling='div255' is invalid: expected one of none, unit"),
        ({"resize_policy": "squash"}, "resize_policy='squash' is invalid: expected one of pad"),
        ({"interpolation": "lanczos"}, "interpolation='lanczos' is invalid: expected one of area"),
        ({"scaling": None}, "scaling=None is invalid"),
        # The string "no" is truthy: accepted, it would have switched the step on.
        ({"artefact_mask": "no"}, "preprocessing.artefact_mask='no' is invalid: expected true or"),
        ({"channel_mean_filter": 0}, "channel_mean_filter=0 is invalid: expected true or false"),
        ({"channel_mean_filter": "false"}, "channel_mean_filter='false' is invalid"),
        # bool is an int in Python, never in the contract.
        ({"height": True}, "preprocessing.height=True is invalid: expected an integer from 8"),
        ({"height": 2}, "preprocessing.height=2 is invalid: expected an integer from 8 to 4096"),
        ({"width": 224.0}, "preprocessing.width=224.0 is invalid: expected an integer"),
        ({"mask_window": 4}, "mask_window=4 is invalid: expected an odd integer >= 3"),
        ({"mask_window": True}, "mask_window=True is invalid"),
        ({"clahe_clip": "2.0"}, "clahe_clip='2.0' is invalid: expected a number from 0.1 to 40"),
        ({"clahe_clip": True}, "clahe_clip=True is invalid: expected a number"),
        ({"clahe_clip": float("nan")}, "clahe_clip=nan is invalid"),
        ({"clahe_tile": 8.0}, "clahe_tile=8.0 is invalid: expected an integer from 1 to 64"),
        ({"pad_value": 256}, "pad_value=256 is invalid: expected an integer from 0 to 255"),
        ({"pad_value": False}, "pad_value=False is invalid"),
        ({"contrastt": "clahe"}, "unknown key(s) ['contrastt']"),
    ],
)
def test_bad_spec_names_the_key_the_value_and_what_is_allowed(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(PreprocessError) as info:
        PreprocessSpec.from_dict(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_constructor_is_as_strict_as_from_dict() -> None:
    with pytest.raises(PreprocessError, match="colour_normalisation='macenko'"):
        PreprocessSpec(colour_normalisation="macenko")  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="artefact_mask=1 is invalid"):
        PreprocessSpec(artefact_mask=1)  # type: ignore[arg-type]


def _reseal(bundle: Path, **changes: Any) -> None:
    """Edit manifest.json and recompute its digest, as a program writing manifests would: a
    hand edit alone is refused by the digest, and the refusal to test sits behind it."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    data["digest"] = Manifest.model_validate(data).compute_digest()
    path.write_text(json.dumps(data))


def test_a_real_bundle_whose_manifest_says_macenko_is_refused(
    tmp_path: Path, tiny_tflite: bytes
) -> None:
    bundle = make_bundle(tmp_path / "bundle", tiny_tflite)
    assert load_bundle(bundle).spec.colour_normalisation == "none"
    _reseal(bundle, preprocessing={"colour_normalisation": "macenko"})
    expected = (
        "manifest.json: preprocessing.colour_normalisation='macenko' is invalid: "
        "expected one of none, reinhard"
    )
    for load in (read_manifest, load_bundle):
        with pytest.raises(BundleError) as info:
            load(bundle)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_real_bundle_whose_manifest_switches_a_step_on_with_a_string_is_refused(
    tmp_path: Path, tiny_tflite: bytes
) -> None:
    bundle = make_bundle(tmp_path / "bundle", tiny_tflite)
    _reseal(bundle, preprocessing={"artefact_mask": "no"})
    with pytest.raises(BundleError, match="artefact_mask='no' is invalid: expected true or false"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"quantization": "int4"},
            "quantization: Input should be 'float32', 'float16', 'dynamic' or 'int8'",
        ),
        ({"form": "ensemble"}, "form: Input should be 'classifier' or 'backbone_head'"),
        ({"input": {"dtype": "int4"}}, "input.dtype: Input should be 'float32', 'float16'"),
    ],
)
def test_the_manifest_refuses_unknown_values_naming_the_key_and_the_allowed_ones(
    tmp_path: Path, tiny_tflite: bytes, changes: dict[str, Any], fragment: str
) -> None:
    bundle = make_bundle(tmp_path / "bundle", tiny_tflite)
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(data))  # the schema check comes before the digest's
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert fragment in str(info.value) and "\n" not in str(info.value)
