"""Fingerprint transfer: "fingerprint once, transfer many times" with fingerprint vectors (FP-VEC, arXiv 2409.08846).

- ``vector``: tau = theta_fp - theta_base over name-aligned parameters, applied as theta + lambda * tau;
- ``vision`` / ``language``: the two tracks (a trigger-set fingerprint on zoo classifiers; an instructional
  fingerprint on a small GPT-2 trained on Debian's fortunes), behind ``track.Track``;
- ``attacks``: pruning, quantization and merging of any model; ``evaluate``: transfer vs direct injection
  vs inheritance; ``results`` / ``report``: records, lineage edges and tables; ``__main__``: the command.
"""
