"""`trainer fit / evaluate / compare` end to end: a tiny model trained on real BCCD crops."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.contracts.preprocess_spec import PreprocessSpec
from tests.trainer.conftest import reencoded, write_image
from trainer.cli import main
from trainer.dwell import DwellConfig, DwellState
from trainer.run_files import (
    TRAINING_KEYS,
    data_fingerprint,
    read_split,
    read_split_file,
    read_training_json,
)
from trainer.splits import check_no_leak

pytestmark = pytest.mark.slow

TINY = ["--model", "tiny", "--weights", "none", "--batch-size", "8", "--bootstrap", "200"]
# The fixture crops are numbered in runs; --run-block 0 so 12 crops make 12 groups per class.
SPLIT = ["--split-fractions", "0.5", "0.25", "0.25", "--run-block", "0"]


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, cells_dir: Path) -> Path:
    """1 head epoch, then 12 epochs of all layers (from scratch) under the default DWELL (LRA)."""
    out = tmp_path_factory.mktemp("fit") / "run"
    argv = ["fit", "--data", str(cells_dir), "--out", str(out), *TINY, *SPLIT]
    argv += ["--batch-size", "4", "--head-epochs", "1", "--fine-tune-epochs", "12"]
    argv += ["--lr", "0.01", "--fine-tune-lr", "0.01"]
    assert main(argv) == 0
    return out


def test_fit_learns_white_from_red_cells(run: Path) -> None:
    rows = _history(run)
    val_loss = [float(r["val_loss"]) for r in rows]
    assert val_loss[-1] < 0.3 < 0.6 < val_loss[0]
    assert float(rows[-1]["accuracy"]) >= 0.9
    assert read_training_json(run)["metrics"]["accuracy"] >= 5 / 6


def test_fit_writes_the_run_directory_contract(run: Path, cells_dir: Path) -> None:
    for name in ("model.keras", "training.json", "split.json", "history.csv", "report.json"):
        assert (run / name).is_file(), name
    for name in ("report.md", "curves.png", "confusion.png"):
        assert (run / name).stat().st_size > 0, name
    training = read_training_json(run / "model.keras")
    assert set(TRAINING_KEYS) <= set(training)
    assert training["labels"] == ["RBC", "WBC"]
    assert training["model_name"] == "tiny" and training["image_size"] == 32
    assert training["task"] == "classes" and training["weights"] == "none"
    spec = PreprocessSpec.from_dict(training["preprocessing"])
    assert (spec.height, spec.width, spec.scaling) == (32, 32, "none")
    rels = [p.relative_to(cells_dir).as_posix() for p in cells_dir.rglob("*.png")]
    assert training["data_fingerprint"] == data_fingerprint(cells_dir, rels)
    assert training["metrics"]["n_test"] == 6
    assert 0 <= training["metrics"]["accuracy"] <= 1

    split = read_split_file(run / training["split_file"])
    assert split.data_root == cells_dir.resolve()
    records = read_split(run / "split.json")
    assert len(records) == 24
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all((split.data_root / r.path).is_file() for r in records)
    check_no_leak(records)
    assert [(p.name, lab) for p, lab in split.paths("train")][:1] and all(
        p.is_file() for p, _ in split.paths("train")
    )
    report = json.loads((run / "report.json").read_text())
    assert report["split"]["strategy"] == "group" and report["split"]["groups_crossing_splits"] == 0
    assert np.array(report["confusion_matrix"]).sum() == 6
    for label in ("RBC", "WBC"):
        assert set(report["per_class"][label]) >= {"precision", "recall", "specificity", "dsc"}


def test_history_holds_every_epoch_and_dwells_decision(run: Path) -> None:
    rows = _history(run)
    assert [r["phase"] for r in rows] == ["head"] + ["fine_tune"] * 12
    assert [int(r["epoch"]) for r in rows] == list(range(1, 14))
    assert all(r[k] != "" for r in rows for k in ("loss", "accuracy", "val_loss", "lr", "action"))
    # Replaying the logged metrics through the state machine gives the logged decisions.
    for phase in ("head", "fine_tune"):
        state = DwellState(DwellConfig())  # the CLI's defaults
        lr = 0.01
        for i, row in enumerate(r for r in rows if r["phase"] == phase):
            logs = {"accuracy": float(row["accuracy"]), "val_loss": float(row["val_loss"])}
            d = state.step(i, logs, lr)
            assert float(row["lr"]) == pytest.approx(lr, rel=1e-6)
            assert (row["action"], int(row["restored"])) == (d.action, int(d.restored))
            lr = d.lr_next
    # Training accuracy passed the 0.9 threshold, so monitoring moved to val_loss.
    assert {r["monitor"] for r in rows} == {"accuracy", "val_loss"}


def test_saved_model_reproduces_the_test_report(run: Path) -> None:
    import keras

    from trainer.metrics import confusion_matrix
    from trainer.pipeline import predict

    training = read_training_json(run)
    split = read_split_file(run / "split.json")
    test = split.paths("test")
    model = keras.models.load_model(run / "model.keras")
    proba = predict(
        model, [p for p, _ in test], PreprocessSpec.from_dict(training["preprocessing"]), 4
    )
    assert proba.shape == (6, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    y = [training["labels"].index(lab) for _, lab in test]
    cm = confusion_matrix(y, proba.argmax(axis=1), 2)
    assert cm.tolist() == json.loads((run / "report.json").read_text())["confusion_matrix"]


def test_evaluate_on_the_runs_test_split_matches_fit(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", str(run), "--split-file", str(run / "split.json"), "--out", str(out)]
    assert main([*argv, "--subset", "test", "--bootstrap", "200"]) == 0
    ev = json.loads((out / "report.json").read_text())
    fit = json.loads((run / "report.json").read_text())
    assert ev["confusion_matrix"] == fit["confusion_matrix"]
    assert ev["per_class"] == fit["per_class"]
    assert (out / "report.md").is_file() and (out / "confusion.png").is_file()


def test_evaluate_on_another_folder_and_compare(
    run: Path, tmp_path: Path, wbc_crops: list[np.ndarray], rbc_crops: list[np.ndarray], capsys: Any
) -> None:
    other = tmp_path / "other"  # the same cells, JPEG-compressed: another "scanner"
    for i, (w, r) in enumerate(zip(wbc_crops, rbc_crops, strict=True)):
        write_image(other / "WBC" / f"w{i}.jpg", reencoded(w, 60))
        write_image(other / "RBC" / f"r{i}.jpg", reencoded(r, 60))
    (other / "WBC" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "cross"
    assert (
        main(["evaluate", str(run / "model.keras"), "--data", str(other), "--out", str(out)]) == 0
    )
    ev = json.loads((out / "report.json").read_text())
    assert (
        ev["n"] == 24 and ev["skipped_images"] == 1 and ev["evaluated_on"] == "every readable image"
    )
    capsys.readouterr()
    assert main(["compare", str(run), str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| Average |") == 2
    assert f"| {run.name} | tiny | dynamic (DWELL) | group | RBC |" in table
    assert "| cross | tiny | dynamic (DWELL) | folder |" in table
    csv_out = tmp_path / "t.csv"
    assert main(["compare", str(run), str(out), "--format", "csv", "--out", str(csv_out)]) == 0
    rows = list(csv.reader(csv_out.open()))
    assert rows[0][:6] == ["Run", "Model", "LR", "Split", "Class", "n"] and len(rows) == 7


def test_evaluate_names_a_class_the_model_does_not_know(
    run: Path, tmp_path: Path, wbc_crops: list[np.ndarray], capsys: Any
) -> None:
    for i in range(2):
        write_image(tmp_path / "d" / "WBC" / f"{i}.png", wbc_crops[i])
        write_image(tmp_path / "d" / "Blast" / f"{i}.png", wbc_crops[i + 2])
    code = main(["evaluate", str(run), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e")])
    assert code == 1
    assert "['Blast']" in capsys.readouterr().err


def test_head_phase_trains_only_the_head_with_a_fixed_lr(
    tmp_path: Path, cells_dir: Path, caplog: Any
) -> None:
    import keras

    from trainer.models import create_model

    out = tmp_path / "head"
    argv = ["fit", "--data", str(cells_dir), "--out", str(out), *TINY, *SPLIT, "--seed", "3"]
    argv += ["--head-epochs", "2", "--fine-tune-epochs", "0", "--lr-schedule", "fixed"]
    argv += ["--split", "random", "--color-jitter", "0.2", "--contrast", "hist_eq"]
    argv += ["--colour-normalisation", "reinhard"]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert "--split random" in caplog.text
    rows = _history(out)
    again = tmp_path / "again"
    assert main([*argv[:4], str(again), *argv[5:]]) == 0
    assert (again / "history.csv").read_text() == (out / "history.csv").read_text()  # seeded
    assert [r["action"] for r in rows] == ["fixed", "fixed"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3])
    training = read_training_json(out)
    assert training["preprocessing"]["contrast"] == "hist_eq"
    assert training["preprocessing"]["colour_normalisation"] == "reinhard"
    assert training["split"]["strategy"] == "random"
    report = json.loads((out / "report.json").read_text())
    assert "random by image" in report["split_strategy"] and report["warnings"]
    # The base is exactly as initialised: only the head learned.
    keras.utils.set_random_seed(3)
    fresh = create_model("tiny", 2, 32).base.get_weights()
    trained = keras.models.load_model(out / "model.keras").get_layer("tiny_base").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(fresh, trained, strict=True))
    head = keras.models.load_model(out / "model.keras").get_layer("head").get_weights()
    keras.utils.set_random_seed(3)
    assert not np.array_equal(head[0], create_model("tiny", 2, 32).head.get_weights()[0])


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, cells_dir: Path) -> None:
    import keras

    from trainer.config import FitConfig
    from trainer.fit import run_fit

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.model.optimizer.iterations.numpy() > 0 and len(_history(out)) == 2:
                raise KeyboardInterrupt

    out = tmp_path / "resumable"
    cfg = FitConfig(
        data=str(cells_dir),
        out=str(out),
        model="tiny",
        weights="none",
        batch_size=8,
        head_epochs=1,
        fine_tune_epochs=2,
        fractions=(0.5, 0.25, 0.25),
        n_boot=100,
    )
    cfg.grouping = type(cfg.grouping)(run_block=0)
    with pytest.raises(KeyboardInterrupt):
        run_fit(cfg, extra_callbacks=[Interrupt()], progress=False)
    assert not (out / "training.json").exists()
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert (progress["phase"], progress["epochs_done"], progress["complete"]) == (
        "fine_tune",
        1,
        False,
    )
    assert main(["fit", "--data", str(cells_dir), "--out", str(out), *TINY]) == 1  # not over it
    assert main(["fit", "--resume", "--out", str(out)]) == 0
    rows = _history(out)
    assert [(int(r["epoch"]), r["phase"]) for r in rows] == [
        (1, "head"),
        (2, "fine_tune"),
        (3, "fine_tune"),
    ]
    phases = read_training_json(out)["training"]["phases"]
    assert [(p["phase"], p["epochs_run"]) for p in phases] == [("head", 1), ("fine_tune", 2)]
    # A finished run drops what only resuming needed, and has nothing left to resume.
    assert not (out / "checkpoint").exists() and not (out / "cache").exists()
    assert main(["fit", "--resume", "--out", str(out)]) == 1


def test_mirrored_strategy_trains(tmp_path: Path, cells_dir: Path) -> None:
    out = tmp_path / "mirrored"
    argv = ["fit", "--data", str(cells_dir), "--out", str(out), *TINY, *SPLIT]
    argv += ["--fine-tune-epochs", "1", "--strategy", "mirrored"]
    assert main(argv) == 0
    training = read_training_json(out)
    assert training["training"]["strategy"] == "mirrored"
    assert training["training"]["replicas"] >= 1
