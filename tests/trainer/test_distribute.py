"""`--strategy`: tf.distribute strategies by name, and which worker writes the run's files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from edge.errors import BlastscopeError
from trainer.distribute import STRATEGIES, make_strategy, worker_id


@dataclass
class _Resolver:
    task_type: str | None
    task_id: int = 0
    cluster: dict[str, Any] = field(default_factory=dict)

    def cluster_spec(self) -> Any:
        cluster = self.cluster

        class Spec:
            def as_dict(self) -> dict[str, Any]:
                return cluster

        return Spec()


@dataclass
class _Strategy:
    cluster_resolver: _Resolver | None


def test_strategies_are_tf_distribute_ones() -> None:
    import tensorflow as tf

    assert STRATEGIES == ("default", "mirrored", "multiworker")
    assert make_strategy("default") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync >= 1
    with pytest.raises(BlastscopeError, match="--strategy 'horovod' is unknown"):
        make_strategy("horovod")


@pytest.mark.parametrize(
    ("resolver", "expected"),
    [
        (None, (True, 0)),  # one machine
        (_Resolver(None), (True, 0)),  # multiworker without TF_CONFIG: a cluster of one
        (_Resolver("chief", 0, {"chief": ["a"], "worker": ["b"]}), (True, 0)),
        (_Resolver("worker", 0, {"chief": ["a"], "worker": ["b"]}), (False, 0)),
        (_Resolver("worker", 0, {"worker": ["a", "b"]}), (True, 0)),  # worker 0 is the chief
        (_Resolver("worker", 1, {"worker": ["a", "b"]}), (False, 1)),
    ],
)
def test_only_the_chief_writes(resolver: _Resolver | None, expected: tuple[bool, int]) -> None:
    assert worker_id(_Strategy(resolver)) == expected
