"""Shadows are cached in the checksummed artefact store: reused when intact, retrained when damaged."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_a_diverging_shadow_is_retrained_from_its_seed_at_half_the_rate(ci_zoo, monkeypatch) -> None:
    import fpbench.shadows as shadows
    from fpbench.train import TrainingDiverged

    spec = ci_zoo.roots()[0].spec
    data = ci_zoo.data.split("train_a")
    real_train, rates = shadows.train, []

    def diverge_once(model, data, cfg, **kw):  # noqa: ANN001, ANN003
        rates.append(cfg.lr)
        if len(rates) == 1:
            raise TrainingDiverged("independent shadow: training diverged (loss nan)")
        return real_train(model, data, cfg, **kw)

    monkeypatch.setattr(shadows, "train", diverge_once)
    kw = {"steps": 3, "seed": 7, "device": torch.device("cpu")}
    retried = independent_shadow(spec, data, **kw)
    assert rates[1] == rates[0] / 2  # the second try at half the rate, the first one discarded
    monkeypatch.setattr(shadows, "train", real_train)
    assert module_digest(retried) != module_digest(independent_shadow(spec, data, **kw))  # a real retrain, not a copy

    def always_diverge(model, data, cfg, **kw):  # noqa: ANN001, ANN003
        raise TrainingDiverged("independent shadow: training diverged (loss nan)")

    monkeypatch.setattr(shadows, "train", always_diverge)
    with pytest.raises(TrainingDiverged, match="archs.<arch>.train.lr"):
        independent_shadow(spec, data, **kw)
