"""Discovering a labelled image folder: which layout it is, its classes, and any known groups.

Layouts:

- ``generic``: ``ROOT/<class>/<image>``, one folder per class; no known groups.
- ``taleqani``: the Taleqani ALL release, ``Benign/ Early/ Pre/ Pro/``; task ``subtypes``
  (4 classes, seed 004) or ``binary`` (Benign = HEM, the malignant folders = ALL). No patient
  ids are published, so groups come from near-duplicate detection (trainer.neardup).
- ``cnmc``: C-NMC 2019, ``ROOT/fold_*/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp``
  with healthy subjects ``UID_H<n>_...``; the group is the subject.
- ``malaria``: NIH malaria cells, ``Parasitized/ Uninfected/``; the group is the patient
  ``P<n>`` in ``C<slide>P<patient>...`` names, else the slide ``C<n>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.vision import list_images, list_subfolders
from trainer.errors import DataError

LAYOUTS = ("auto", "generic", "taleqani", "cnmc", "malaria")
TASKS = ("auto", "classes", "subtypes", "binary")

TALEQANI_FOLDERS = ("Benign", "Early", "Pre", "Pro")
MALARIA_FOLDERS = ("Parasitized", "Uninfected")
BINARY_LEUKEMIA = ("ALL", "HEM")  # the seeds' order: the disease class first

_CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)$", re.IGNORECASE)
# Optional "50x50" size prefix of the downsampled copy; "C37BP2_thinF", "C100P61ThinF".
_MALARIA_PATIENT = re.compile(r"^(?:\d+x\d+)?C\d+[A-Za-z]?P(\d+)")
_MALARIA_SLIDE = re.compile(r"^(?:\d+x\d+)?C(\d+)")


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``rel`` is its POSIX path relative to the data root."""

    rel: str
    label: str
    group: str | None = None  # the subject, patient or slide when the layout knows it


@dataclass
class Dataset:
    root: Path
    layout: str
    task: str
    labels: list[str]  # the model's output order
    samples: list[Sample]
    group_source: str | None  # what a known group is ("subject", "patient or slide"), else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.labels, 0)
        for s in self.samples:
            out[s.label] += 1
        return out


def detect_layout(root: Path) -> str:
    """Guess the layout from folder names: C-NMC folds, Taleqani or malaria class names."""
    names = {p.name for p in list_subfolders(root)}
    if any(n.startswith("fold_") for n in names):
        return "cnmc"
    if set(TALEQANI_FOLDERS) <= names:
        return "taleqani"
    if set(MALARIA_FOLDERS) <= names:
        return "malaria"
    return "generic"


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _images_of(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; the {what} needs this folder")
    images = list_images(folder)
    if not images:
        raise DataError(
            f"class folder {folder} has no images (.jpg/.png/.bmp/.tif); "
            "add images or remove the folder"
        )
    return images


def _generic(root: Path, task: str) -> Dataset:
    if task not in ("auto", "classes"):
        raise DataError(
            f"--task {task} needs the taleqani, cnmc or malaria layout; a generic folder's "
            "classes are its subfolders (--task classes)"
        )
    dirs = list_subfolders(root)
    if not dirs:
        raise DataError(
            f"{root} has no class folders; expected {root}/<class>/<image files>, "
            "one folder per class"
        )
    if len(dirs) < 2:
        raise DataError(
            f"{root} has one class folder ({dirs[0].name}); a classifier needs at least two"
        )
    samples = [Sample(_rel(p, root), d.name) for d in dirs for p in _images_of(d, "generic layout")]
    return Dataset(root, "generic", "classes", [d.name for d in dirs], samples, None)


def _taleqani(root: Path, task: str) -> Dataset:
    task = "subtypes" if task == "auto" else task
    if task not in ("subtypes", "binary"):
        raise DataError(
            f"--task {task} does not apply to the Taleqani layout; use subtypes or binary"
        )
    samples = []
    for folder in TALEQANI_FOLDERS:
        binary_label = "HEM" if folder == "Benign" else "ALL"
        label = folder if task == "subtypes" else binary_label
        samples += [
            Sample(_rel(p, root), label) for p in _images_of(root / folder, "Taleqani layout")
        ]
    labels = list(TALEQANI_FOLDERS) if task == "subtypes" else list(BINARY_LEUKEMIA)
    return Dataset(root, "taleqani", task, labels, samples, None)


def _cnmc(root: Path, task: str) -> Dataset:
    if task not in ("auto", "binary"):
        raise DataError(
            f"--task {task} does not apply to C-NMC (all vs hem only); use --task binary"
        )
    folds = [d for d in list_subfolders(root) if d.name.startswith("fold_")]
    samples, bad = [], []
    for fold in folds:
        for sub, label in (("all", "ALL"), ("hem", "HEM")):
            for p in _images_of(fold / sub, "C-NMC layout"):
                m = _CNMC_NAME.match(p.stem)
                if not m or m.group(4).lower() != sub:
                    bad.append(_rel(p, root))
                    continue
                samples.append(Sample(_rel(p, root), label, f"subject:{m.group(1).upper()}"))
    if bad:
        raise DataError(
            f"{len(bad)} C-NMC file name(s) do not match UID_<subject>_<image>_<cell>_<all|hem> "
            f"in the matching folder, e.g. {', '.join(bad[:3])}; fix them or use --layout generic"
        )
    return Dataset(root, "cnmc", "binary", list(BINARY_LEUKEMIA), samples, "subject")


def malaria_group(name: str) -> str | None:
    """``P<patient>`` from a NIH malaria file name, else ``C<slide>``, else None."""
    if m := _MALARIA_PATIENT.match(name):
        return f"patient:P{int(m.group(1))}"
    if m := _MALARIA_SLIDE.match(name):
        return f"slide:C{int(m.group(1))}"
    return None


def _malaria(root: Path, task: str) -> Dataset:
    if task not in ("auto", "binary"):
        raise DataError(f"--task {task} does not apply to the malaria layout; use --task binary")
    samples, bad = [], []
    for folder in MALARIA_FOLDERS:
        for p in _images_of(root / folder, "malaria layout"):
            group = malaria_group(p.name)
            if group is None:
                bad.append(_rel(p, root))
            samples.append(Sample(_rel(p, root), folder, group))
    if bad:
        raise DataError(
            f"{len(bad)} malaria file name(s) carry no C<slide>[P<patient>] id, e.g. "
            f"{', '.join(bad[:3])}; rename them or use --layout generic"
        )
    return Dataset(root, "malaria", "binary", list(MALARIA_FOLDERS), samples, "patient or slide")


_DISCOVER = {"generic": _generic, "taleqani": _taleqani, "cnmc": _cnmc, "malaria": _malaria}


def discover(root: str | Path, layout: str = "auto", task: str = "auto") -> Dataset:
    """Find every labelled image under ``root`` for ``layout`` and ``task``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    if layout not in LAYOUTS:
        raise DataError(f"--layout {layout!r} is unknown; choose one of {', '.join(LAYOUTS)}")
    if task not in TASKS:
        raise DataError(f"--task {task!r} is unknown; choose one of {', '.join(TASKS)}")
    chosen = detect_layout(root) if layout == "auto" else layout
    return _DISCOVER[chosen](root, task)
