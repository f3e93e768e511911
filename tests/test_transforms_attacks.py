"""Weight-space attacks on the ci zoo: function-preserving permute and rescale (same logits, different weights)
and the removal fine-tune (noise plus a large learning rate)."""

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


def test_removal_moves_weights_further_than_finetune_and_keeps_the_task(ci_zoo) -> None:
    """The removal fine-tune (noise + large learning rate) changes the weights more than a plain fine-tune does,
    and its child still does the task (a broken child would be no evidence)."""
    root = _roots(ci_zoo, "resnet")[0]
    removal, finetune = ci_zoo.child(root, "removal"), ci_zoo.child(root, "finetune")
    assert removal.meta["info"]["removal_noise"] == pytest.approx(0.1)
    assert removal.meta["info"]["rel_change_norm"] > 2 * finetune.meta["info"]["rel_change_norm"]
    assert removal.accuracy > 0.8 * root.accuracy, (removal.accuracy, root.accuracy)


def test_relative_noise_is_seeded_and_scaled_per_tensor() -> None:
    from torch import nn

    from transforms.removal import add_relative_noise

    a, b = nn.Linear(64, 64), nn.Linear(64, 64)
    b.load_state_dict(a.state_dict())
    w0, bias0 = a.weight.detach().clone(), a.bias.detach().clone()
    add_relative_noise(a, 0.5, seed=3)
    add_relative_noise(b, 0.5, seed=3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, bias0)  # seeded; biases untouched
    assert float((a.weight.detach() - w0).std()) == pytest.approx(0.5 * float(w0.std()), rel=0.1)
