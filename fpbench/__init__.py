"""fpbench: a reproducible benchmark harness for model fingerprinting and lineage verification."""

__version__ = "0.1.0"
