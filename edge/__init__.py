"""blastscope edge: the runtime on the microscope (a Raspberry Pi or any CPU box).

The tree shows the design; a frame's data path reads top to bottom:

- ``edge.contracts`` — what other parts code against: the preprocessing spec, the bundle
  manifest, the typed results, the MQTT messages and their JSON Schemas. Light to import.
- ``edge.vision`` — images: reading files, the one preprocessing implementation.
- ``edge.model`` — the model: LiteRT runtime, bundle loading and writing, heads, golden set.
- ``edge.stats`` — the statistics the device reports and its acceptance gate (numpy only).
- ``edge.pipeline`` — the stages of one frame: capture, prepare, infer, decide, commit.
- ``edge.service`` — the daemon around them: config, sources, outbox, MQTT, health, check.
- ``edge.cli`` — the ``edge`` command line, and what every blastscope command line shares.

Importing ``edge`` loads nothing heavy, and nothing here imports TensorFlow (a Pi cannot
afford it): a test proves both. See docs/architecture.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
