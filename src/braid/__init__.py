"""braid: one virtual link braided from several poor uplinks."""

__version__ = "0.1.0"
