"""Causal language models in the grid (issue 18, LeaFBench's own setting): model families built from
transformers' configurations (:mod:`fpbench.llm.models`), byte-level text and token blocks
(:mod:`fpbench.llm.text`), and the query interface a fingerprinting method reaches a language model through
(:mod:`fpbench.llm.subject`)."""
