"""The `trainer` command line: help everywhere, one-line errors, fast failures on bad data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.conftest import write_image
from trainer.cli import main


@pytest.mark.parametrize(
    "command", ["fit", "evaluate", "compare", "split", "groups", "import-weights"]
)
def test_every_command_has_help_with_defaults(command: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"trainer {command}" in text
    # Every option says its default: argparse's formatter adds it only to options with help.
    import argparse

    from trainer.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert action.help, f"{command} {action.option_strings[0]}: no help, so no default"
            if action.default is argparse.SUPPRESS:
                assert "default" in action.help, action.option_strings
    if command == "fit":
        assert "(default: efficientnet-b3)" in text and "(default: dwell)" in text
        assert "images per step (default: 32)" in text and "(default: auto)" in text


def test_an_empty_class_stops_fit_before_training(
    tmp_path: Path, wbc_crops: list[np.ndarray], capsys: Any
) -> None:
    for i in range(4):
        write_image(tmp_path / "data" / "WBC" / f"{i}.png", wbc_crops[i])
    (tmp_path / "data" / "Blast").mkdir()
    code = main(["fit", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("trainer: error:") and "Blast has no images" in err
    assert err.count("\n") == 1


def test_split_and_groups_commands(
    tmp_path: Path, wbc_crops: list[np.ndarray], rbc_crops: list[np.ndarray], capsys: Any
) -> None:
    for i in range(6):
        write_image(tmp_path / "d" / "WBC" / f"w-{i:03d}.png", wbc_crops[i])
        write_image(tmp_path / "d" / "RBC" / f"r-{i:03d}.png", rbc_crops[i])
    write_image(tmp_path / "d" / "WBC" / "w-100.png", wbc_crops[0])  # an exact copy, far away
    assert main(["groups", "--data", str(tmp_path / "d"), "--run-block", "2"]) == 0
    out = capsys.readouterr().out
    assert "13 readable images" in out and "1 near-duplicate pairs" in out
    # WBC: {000, 001, the copy 100} {002, 003} {004, 005}; RBC: {000, 001} {002, 003} {004, 005}.
    assert "6 groups (largest 3)" in out
    split = tmp_path / "split.json"
    argv = ["split", "--data", str(tmp_path / "d"), "--out", str(split), "--run-block", "2"]
    assert main([*argv, "--split-fractions", "0.34", "0.33", "0.33"]) == 0
    assert "0 groups cross splits" in capsys.readouterr().out
    from trainer.run_files import read_split

    by_path = {r.path: r for r in read_split(split)}
    assert by_path["WBC/w-100.png"].group == by_path["WBC/w-000.png"].group
    assert by_path["WBC/w-100.png"].split == by_path["WBC/w-000.png"].split


def test_weights_that_cannot_work_stop_fit_before_reading_images(
    tmp_path: Path, cells_dir: Path, capsys: Any
) -> None:
    argv = ["fit", "--data", str(cells_dir), "--out", str(tmp_path / "run"), "--model", "tiny"]
    assert main(argv) == 1  # --weights defaults to imagenet, which tiny does not have
    err = capsys.readouterr().err
    assert err.startswith("trainer: error: --weights imagenet: tiny has no ImageNet weights")
    assert "--weights none" in err and err.count("\n") == 1
    assert main([*argv, "--weights", str(tmp_path / "gone.h5")]) == 1
    assert "gone.h5: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["fit", "--out", str(tmp_path / "run")]) == 1
    assert "--data DIR is required (except with --resume)" in capsys.readouterr().err


def test_groups_on_a_folder_of_unreadable_images_is_an_error(tmp_path: Path, capsys: Any) -> None:
    for cls in ("A", "B"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"not a png")
    assert main(["groups", "--data", str(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("trainer: error: ") and "none of its 2 image(s) can be read" in last
