"""The daemon around the pipeline: config, sources, the outbox, the MQTT link, health, check.

Nothing outside edge imports from here: it is the device's own business.
"""
