"""Fingerprinting methods of the literature, one module per method (see fpbench.registry)."""
