"""Shadows are cached in the checksummed artefact store: reused when intact, retrained when damaged."""

from __future__ import annotations

from pathlib import Path

import torch

from fpbench.shadows import independent_shadow, module_digest


def test_shadow_cache_reuses_intact_and_retrains_damaged_shadows(ci_zoo, tmp_path: Path) -> None:
    spec = ci_zoo.roots()[0].spec
    data = ci_zoo.data.split("train_a")
    kw = {"steps": 3, "device": torch.device("cpu"), "cache_dir": tmp_path}
    a = independent_shadow(spec, data, seed=7, **kw)
    files = list((tmp_path / "shadows").glob("*/*/weights.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert module_digest(independent_shadow(spec, data, seed=7, **kw)) == module_digest(a)
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not retrained
    raw = bytearray(files[0].read_bytes())
    raw[-8] ^= 0xFF  # one flipped byte: a shadow that would silently differ without a checksum
    files[0].write_bytes(bytes(raw))
    b = independent_shadow(spec, data, seed=7, **kw)
    assert module_digest(b) == module_digest(a)  # retrained (seeded) rather than loaded damaged
    assert files[0].read_bytes() != bytes(raw)
