"""`edge run --demo`: the bundled model and sample frames, in one place.

Drop a bundle directory (manifest.json + model.tflite [+ golden.npz]) into ``bundle/`` and
microscope frames into ``frames/``; `edge run --demo` classifies the frames with that bundle,
publishes every result to an embedded broker and prints them as a dashboard receives them.
The sample frames shipped here are BCCD smear fields (MIT, see frames/LICENSE).
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_BUNDLE = DEMO_DIR / "bundle"
DEMO_FRAMES = DEMO_DIR / "frames"
DEMO_DEVICE = "demo-scope"
DEMO_INTERVAL_S = 0.25  # pace the frames so the results visibly arrive one by one
