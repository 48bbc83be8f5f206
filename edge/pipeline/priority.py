"""Thread priorities: the daemon's helper threads yield the CPU to inference.

LiteRT's threads work in lockstep on every core: one of them preempted by capture, decoding or
publishing stalls the whole invoke. The helper threads (capture, publisher, supervisor) run at
a lower priority, so they take the CPU when inference leaves it rather than in its middle.
Measured with the B3 int8 daemon benchmark on 2 cores: 45 -> 54 results/s.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

HELPER_NICE = 10  # raising nice needs no privilege; the inference (main) thread keeps 0


def yield_to_inference() -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread); best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HELPER_NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or refused: only a little slower
        log.debug("cannot lower this thread's priority: %s", exc)
