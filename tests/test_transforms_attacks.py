"""Function-preserving weight-space attacks (permute, rescale) on the ci zoo: same logits, different weights."""

from __future__ import annotations

import pytest
import torch

from fpbench.api import NotApplicable


def _roots(zoo, arch: str) -> list:
    return [r for r in zoo.roots() if r.arch == arch]


@pytest.mark.parametrize("tname", ["permute", "rescale"])
def test_attack_preserves_function_on_resnet(ci_zoo, tname: str) -> None:
    x = ci_zoo.data.split("test").tensor(torch.arange(64))
    for root in _roots(ci_zoo, "resnet"):
        child = ci_zoo.child(root, tname)
        parent_m, child_m = ci_zoo.load_module(root), ci_zoo.load_module(child)
        with torch.no_grad():
            lp, lc = parent_m(x), child_m(x)
        assert torch.allclose(lp, lc, atol=1e-4), f"{child.id}: max diff {(lp - lc).abs().max():.2e}"
        # the weights really moved
        pw, cw = parent_m.state_dict(), child_m.state_dict()
        changed = [k for k in pw if pw[k].is_floating_point() and not torch.equal(pw[k], cw[k])]
        assert any(".conv2.weight" in k for k in changed)
        info = child.meta["info"]
        assert info["blocks"] == 4
        assert info["param_change"] > 0.01
        assert child.meta["info"]["accuracy"] == pytest.approx(root.accuracy, abs=1e-6)


def test_attack_is_seeded(ci_zoo) -> None:
    """Different roots get different permutations (the seed depends on the root)."""
    import transforms.permute as tp
    from fpbench.api import TransformContext

    root = _roots(ci_zoo, "resnet")[0]
    ctx = lambda s: TransformContext(data=ci_zoo.data, device=torch.device("cpu"), seed=s, progress=False)  # noqa: E731
    a = tp.Permute({}).apply(ci_zoo.load_module(root), root.spec, ctx(1)).model.state_dict()
    b = tp.Permute({}).apply(ci_zoo.load_module(root), root.spec, ctx(1)).model.state_dict()
    c = tp.Permute({}).apply(ci_zoo.load_module(root), root.spec, ctx(2)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_permute_preserves_function_on_effnet(ci_zoo) -> None:
    """EfficientNet blocks (expanded channels, depthwise conv, SE) are permuted too."""
    x = ci_zoo.data.split("test").tensor(torch.arange(64))
    root = _roots(ci_zoo, "effnet")[0]
    child = ci_zoo.child(root, "permute")
    with torch.no_grad():
        lp, lc = ci_zoo.load_module(root)(x), ci_zoo.load_module(child)(x)
    assert torch.allclose(lp, lc, atol=1e-4), f"max diff {(lp - lc).abs().max():.2e}"
    assert child.meta["info"]["blocks"] >= 1 and child.meta["info"]["param_change"] > 0.01


def test_rescale_not_applicable_to_effnet(ci_zoo) -> None:
    """SiLU is not positively homogeneous, so rescale refuses EfficientNet with a reason."""
    root = _roots(ci_zoo, "effnet")[0]
    with pytest.raises(NotApplicable, match="BasicBlock"):
        ci_zoo.child(root, "rescale")
