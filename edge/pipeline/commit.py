"""Stage 5, commit: a frame's results -> the outbox, all of them and the frame's source key in
one transaction, so a crash never publishes half a frame or classifies it again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edge.contracts.messages import result_message, with_identity
from edge.contracts.results import Result

# A payload is rendered once its seq and message id are known, inside the storing transaction.
Render = Callable[[int, str], bytes]


class Store(Protocol):
    """The durable outbox (edge.service.outbox.Outbox)."""

    def put_many(
        self,
        messages: Sequence[tuple[str, Render]],
        seen_key: str | None = None,
        stop: threading.Event | None = None,
    ) -> list[Any] | None: ...


class Committer:
    def __init__(
        self,
        outbox: Store,
        topic: str,
        *,
        device: str,
        model: dict[str, Any],
        stop: threading.Event,
    ) -> None:
        self.outbox = outbox
        self.topic = topic
        self.device = device
        self.model = model
        self.stop = stop

    def commit(
        self, results: Sequence[Result], seen_key: str | None, camera: dict[str, Any] | None
    ) -> int:
        """Store the results with the capture settings in effect; how many were stored (0 if
        the full-outbox policy refused them)."""
        bodies = [
            result_message(r, device=self.device, model=self.model, camera=camera) for r in results
        ]
        renders = [(self.topic, _render(body)) for body in bodies]
        stored = self.outbox.put_many(renders, seen_key=seen_key, stop=self.stop)
        return 0 if stored is None else len(stored)


def _render(body: dict[str, Any]) -> Render:
    return lambda seq, message_id: with_identity(body, seq, message_id)
