"""`--strategy default|mirrored|multiworker` through tf.distribute (nothing home-made)."""

from __future__ import annotations

from typing import Any

from trainer.errors import DataError

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str) -> Any:
    """The tf.distribute strategy; create it before any other TensorFlow work.

    ``multiworker`` reads the cluster from the TF_CONFIG environment variable (without it,
    the process is a cluster of one).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DataError(f"--strategy {name!r} is unknown; choose one of {', '.join(STRATEGIES)}")


def worker_id(strategy: Any) -> tuple[bool, int]:
    """(is this the chief, task index): only the chief writes the run's files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or not task_type:
        return True, 0
    task_id = int(resolver.task_id or 0)
    if task_type == "chief":
        return True, task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief, task_id
