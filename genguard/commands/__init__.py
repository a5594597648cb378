"""Command modules of the `genguard` CLI, one per concern; each exposes ``register(group)``."""
