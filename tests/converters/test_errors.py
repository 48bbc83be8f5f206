"""Bad inputs get one clear line and exit 1 (usage errors exit 2), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converters.cli import main


def _one_line_error(capsys) -> str:  # type: ignore[no-untyped-def]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("converters: error: ")
    return err[0]


def test_missing_model_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["export", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "b")]) == 1
    assert "nope.keras: no such file" in _one_line_error(capsys)


def test_non_keras_model_files(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    assert main(["export", str(text), "--out", str(tmp_path / "b")]) == 1
    assert "not a Keras model file (suffix '.txt')" in _one_line_error(capsys)
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    assert main(["export", str(fake), "--out", str(tmp_path / "b")]) == 1
    assert "a .keras file is a zip archive" in _one_line_error(capsys)
    assert main(["verify", str(tmp_path / "nobundle"), "--data", str(tmp_path)]) == 1
    assert "not a bundle directory" in _one_line_error(capsys)


def test_unknown_quantisation_is_a_usage_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(["export", "m.keras", "--out", str(tmp_path), "--quantize", "int4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'int4'" in err and "float32" in err and "int8" in err


@pytest.mark.slow
def test_empty_calibration_folder(trained_run: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    (empty / "WBC").mkdir(parents=True)
    args = ["export", str(trained_run / "model.keras"), "--out", str(tmp_path / "b")]
    assert main([*args, "--calibration", str(empty)]) == 1
    assert "empty: no images found" in _one_line_error(capsys)
    assert main([*args, "--calibration", str(tmp_path / "missing")]) == 1
    assert "missing: no such folder" in _one_line_error(capsys)
    assert not (tmp_path / "b").exists()  # nothing half-written


@pytest.mark.slow
def test_int8_without_any_calibration_source(trained_run: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "model.keras", run)
    info = json.loads((trained_run / "training.json").read_text())
    info["split_file"] = "absent.json"
    (run / "training.json").write_text(json.dumps(info))
    assert main(["export", str(run / "model.keras"), "--out", str(tmp_path / "b")]) == 1
    assert "int8 needs calibration images" in _one_line_error(capsys)
    # Float exports need no calibration; they just have no golden set to self-test with.
    args = ["export", str(run / "model.keras"), "--out", str(tmp_path / "f"), "--quantize"]
    assert main([*args, "float16"]) == 0
    assert "cannot self-test" in capsys.readouterr().err


@pytest.mark.slow
def test_labels_and_preprocessing_must_fit_the_model(
    trained_run: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    args = ["export", str(trained_run / "model.keras"), "--out", str(tmp_path / "b")]
    assert main([*args, "--labels", "WBC,RBC"]) == 1
    assert "contradicts" in _one_line_error(capsys)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(trained_run / "model.keras", alone)
    spec = json.loads((trained_run / "training.json").read_text())["preprocessing"]
    spec["height"] = spec["width"] = 64
    (tmp_path / "spec64.json").write_text(json.dumps(spec))
    args = ["export", str(alone / "model.keras"), "--out", str(tmp_path / "b")]
    args += ["--calibration", str(trained_run), "--preprocessing", str(tmp_path / "spec64.json")]
    assert main([*args, "--labels", "a,b,c"]) == 1
    assert "model input 32x32 differs from the preprocessing 64x64" in _one_line_error(capsys)
    (tmp_path / "bad.json").write_text(json.dumps({"height": 32, "colour": "blue"}))
    args[-1] = str(tmp_path / "bad.json")
    assert main([*args, "--labels", "a,b"]) == 1
    assert "unknown key(s) ['colour']" in _one_line_error(capsys)


def test_export_options_are_checked_before_the_model_is_loaded(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from converters.errors import ConverterError
    from converters.export import ExportOptions, export

    missing = tmp_path / "never-read.keras"
    with pytest.raises(ConverterError, match=r"unknown quantisation 'int4'; choose one of .*int8"):
        export(ExportOptions(model=missing, out=tmp_path / "b", quantization="int4"))
    with pytest.raises(ConverterError, match="unknown form 'split'"):
        export(ExportOptions(model=missing, out=tmp_path / "b", form="split"))  # type: ignore[arg-type]
    base = ["export", str(missing), "--out", str(tmp_path / "b")]
    assert main([*base, "--calibration-count", "0"]) == 1
    assert "--calibration-count 0: must be >= 1" in _one_line_error(capsys)
    assert main([*base, "--golden-atol", "2"]) == 1
    assert "--golden-atol 2.0: must be in (0, 1]" in _one_line_error(capsys)
    assert not (tmp_path / "b").exists()


def test_benchmark_settings_are_checked(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["benchmark", str(tmp_path), "--max-threads", "0"]) == 1
    assert "--max-threads 0, --runs 50, --warmup 5: need >= 1" in _one_line_error(capsys)
    assert main(["benchmark", str(tmp_path / "nobundle")]) == 1
    assert "not a bundle directory" in _one_line_error(capsys)


def test_progress_goes_to_a_terminal_only(caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import io

    from converters import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    previous = progress.set_console(tty)
    try:
        progress.stage("converting to int8 (classifier)")
        assert list(progress.progress(range(3), 3, "calibrating")) == [0, 1, 2]
        assert "converters: converting to int8 (classifier)" in tty.getvalue()
        assert "calibrating" in tty.getvalue()  # the tqdm bar
        piped = io.StringIO()  # CI logs, pipes: no bar, the stage goes to the log (-v)
        progress.set_console(piped)
        with caplog.at_level("INFO", logger="converters.progress"):
            progress.stage("writing bundle b")
            assert list(progress.progress(range(2), 2, "verifying")) == [0, 1]
        assert piped.getvalue() == "" and "writing bundle b" in caplog.text
    finally:
        progress.set_console(previous)


def test_conversion_uses_a_static_batch_so_reshapes_fold() -> None:
    """Squeeze-excite reshapes must not leave SHAPE/STRIDED_SLICE ops that split XNNPACK."""
    import keras
    import numpy as np

    from converters.conversion import convert
    from edge.model.runtime import LiteRTModel

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    se = keras.layers.Reshape((1, 1, 8))(keras.layers.GlobalAveragePooling2D()(x))
    x = keras.layers.Multiply()([x, keras.layers.Activation("sigmoid")(se)])
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    lite = LiteRTModel(convert(model, "float32"))
    ops = lite.op_counts()
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(ops), ops
    x_in = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(lite.run(x_in), model.predict(x_in, verbose=0), atol=1e-5)
