"""The stages one frame goes through, in order: capture, prepare, infer, decide, commit."""
