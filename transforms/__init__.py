"""Transformations that make children from parents, one module per family (see fpbench.registry)."""
