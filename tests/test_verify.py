"""`python -m fpbench.verify`: two model files in, score, threshold, decision and its calibration out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fpbench.verify import cli, export, verify


@pytest.fixture(scope="module")
def exported(ci_zoo, ci_runs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    return {name: export("ci", model_id, out / f"{name}.safetensors", ci_runs_dir)
            for name, model_id in {"owner": "resnet-s0", "child": "resnet-s0/finetune",
                                   "other": "resnet-s1"}.items()}


def test_child_is_derived_and_independent_is_not(exported: dict[str, Path], ci_runs_dir: Path) -> None:
    child = verify("cmf", exported["owner"], exported["child"], zoo="ci", runs_dir=ci_runs_dir, device="cpu")
    other = verify("cmf", exported["owner"], exported["other"], zoo="ci", runs_dir=ci_runs_dir, device="cpu")
    assert child.score > other.score
    assert child.decision and child.threshold == pytest.approx(0.7)


def test_plain_timm_state_dict_and_arch_name_are_accepted(exported: dict[str, Path], tmp_path: Path,
                                                          ci_runs_dir: Path) -> None:
    from safetensors.torch import save_file

    plain = {k.removeprefix("net."): v for k, v in load_file(str(exported["child"])).items()}
    save_file(plain, str(tmp_path / "plain.safetensors"))
    v = verify("cmf", exported["owner"], tmp_path / "plain.safetensors", suspect_arch="resnet", zoo="ci",
               runs_dir=ci_runs_dir, device="cpu")
    ref = verify("cmf", exported["owner"], exported["child"], zoo="ci", runs_dir=ci_runs_dir, device="cpu")
    assert v.score == pytest.approx(ref.score)


def test_cli_prints_calibration_and_refuses_pickles(exported: dict[str, Path], tmp_path: Path, ci_runs_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cli(["method=cmf", f"owner={exported['owner']}", f"suspect={exported['child']}", "zoo=ci",
         f"runs_dir={ci_runs_dir}", "device=cpu"])
    out = capsys.readouterr().out
    assert "score" in out and "fixed threshold 0.7000" in out and "calibrat" in out

    pickled = tmp_path / "suspect.pt"
    torch.save(load_file(str(exported["child"])), pickled)
    with pytest.raises(SystemExit) as exc:
        cli(["method=cmf", f"owner={exported['owner']}", f"suspect={pickled}", "arch=resnet", "zoo=ci",
             f"runs_dir={ci_runs_dir}"])
    assert exc.value.code == 2
    assert "not a safetensors file" in capsys.readouterr().err


def test_mismatched_architecture_names_the_tensor(exported: dict[str, Path], ci_runs_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["method=cmf", f"owner={exported['owner']}", f"suspect={exported['child']}", "suspect_arch=effnet",
             "zoo=ci", f"runs_dir={ci_runs_dir}"])
    assert "tensor 'net." in capsys.readouterr().err
