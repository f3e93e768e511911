"""Every stage is a Hydra app with its own primary config (fpbench.stage): each composes, puts Hydra's output
under ``${runs_dir}/hydra/<stage>/``, rejects a bad value before anything runs with one line naming the field
and exit code 2, and answers Ctrl-C in one line with exit code 130. The attack study's lists are config tags."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_report import write_records

from fpbench import stage
from fpbench.config import CONF_DIR, tagged_options
from fpbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
STAGES = {  # stage name -> (module a user runs, the Stage declared there)
    "zoo": "fpbench.zoo.__main__",
    "report": "fpbench.report.__main__",
    "lineage": "fpbench.lineage.__main__",
    "attacks": "fpbench.cmf.attacks",
    "transfer": "fpbench.transfer.__main__",
}


def declared(name: str) -> stage.Stage:
    import importlib

    return importlib.import_module(STAGES[name]).STAGE


def run_stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=180)


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_composes_its_primary_config_and_writes_hydra_output_under_runs_dir(name: str,
                                                                                       tmp_path: Path) -> None:
    st = declared(name)
    overrides = [f"runs_dir={tmp_path}"] + (["zoo=ci"] if "zoo" in st._primary()[1] else [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=st.config, overrides=overrides, return_hydra_config=True)
    stage.check_values(cfg, st.defaults(), st.required, st.list_keys)  # the shipped defaults are valid
    assert cfg.hydra.job.name == name and cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir == f"{tmp_path}/hydra/{name}/run"
    assert cfg.hydra.sweep.dir == f"{tmp_path}/hydra/{name}/multirun"
    for key in st.list_keys:  # list keys compose as lists of known names
        assert cfg[key] is None or len(stage.as_list(cfg[key], key)) >= 1


def test_attack_study_default_methods_live_in_its_config() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="attacks_stage")
    assert "cmf_embedded" in cfg.methods and list(cfg.parts) == ["removal", "forgery", "ambiguity"]
    import fpbench.cmf.attacks as attacks

    assert not hasattr(attacks, "METHODS")  # one home: the config


@pytest.mark.parametrize(("module", "arg", "field"), [
    ("fpbench.report", "target_fpr=2", "target_fpr"),
    ("fpbench.report", "target_fpr=-1", "target_fpr"),
    ("fpbench.report", "target_fpr=nan", "target_fpr"),
    ("fpbench.report", "target_fpr=abc", "target_fpr"),
    ("fpbench.report", "force=yes", "force"),
    ("fpbench.lineage", "methds=cmf", "methds"),  # a typo'd key, with the close match
    ("fpbench.lineage", "methods=", "methods"),
    ("fpbench.lineage", "methods=[cmf,nosuch]", "nosuch"),
    ("fpbench.cmf.attacks", "parts=[removal,bogus]", "parts"),
    ("fpbench.cmf.attacks", "device=bogus", "device"),
    ("fpbench.transfer", "lambda=abc", "lambda"),
    ("fpbench.transfer", "track=audio", "track"),
    ("fpbench.transfer", "transfer=nosuch", "nosuch"),
])
def test_stage_rejects_a_bad_value_in_one_line_with_exit_code_2(tmp_path: Path, module: str, arg: str,
                                                                 field: str) -> None:
    args = ([] if module == "fpbench.transfer" else ["zoo=ci"]) + [f"runs_dir={tmp_path / 'runs'}", arg]
    proc = run_stage(module, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"'{field}'" in lines[0], proc.stderr
    assert not (tmp_path / "runs" / "records").exists() and not (tmp_path / "runs" / "cache").exists()
    if arg == "methds=cmf":
        assert "did you mean 'methods'" in lines[0]


def test_report_stage_draws_the_tables_and_says_when_there_are_no_records(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    empty = run_stage("fpbench.report", "zoo=ci", f"runs_dir={runs}", cwd=tmp_path)
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
    assert "no records under" in empty.stderr and "make run" in empty.stderr
    write_records(runs, zoo="ci")
    proc = run_stage("fpbench.report", "zoo=ci", f"runs_dir={runs}", "target_fpr=0.05", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (runs / "tables" / "index.html").exists() and (runs / "tables" / "table2.csv").exists()
    assert f"open {runs / 'tables' / 'index.html'}" in proc.stdout
    assert (runs / "hydra" / "report" / "run" / ".hydra" / "overrides.yaml").exists()
    assert not (tmp_path / "outputs").exists()


def test_ctrl_c_is_one_line_saying_what_finished_and_how_to_resume(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    st = stage.Stage(module="fpbench.zoo", config="zoo_stage", unit="models")
    cfg = OmegaConf.create({**st.defaults(), "runs_dir": str(tmp_path)})
    with pytest.raises(SystemExit) as exc, st.running(cfg):
        st.total = 3
        st.done("resnet-s0")
        st.done("resnet-s1")
        raise KeyboardInterrupt
    assert exc.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [st.interrupted_line()]
    assert err[0].startswith("interrupted: 2 of 3 models finished (last: resnet-s1); re-run the same command to "
                             "resume, what was written is reused: python -m fpbench.zoo")


def test_a_deliberate_error_inside_a_stage_is_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str],
                                                                        tmp_path: Path) -> None:
    st = stage.Stage(module="fpbench.report", config="report_stage")
    with pytest.raises(SystemExit) as exc, st.running(OmegaConf.create({**st.defaults(), "runs_dir": str(tmp_path)})):
        raise ConfigError("invalid option 'x': the fix")
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: invalid option 'x': the fix"]


@pytest.mark.parametrize("value", [2, -1, 0, 1, float("nan"), math.inf, "abc", True, None])
def test_target_fpr_must_be_a_number_strictly_between_0_and_1(value: object) -> None:
    with pytest.raises(ConfigError, match="'target_fpr'.*number in \\(0, 1\\)"):
        stage.check_target_fpr(value)


def test_common_checks_accept_good_values_and_name_the_fix() -> None:
    assert stage.check_target_fpr(0.01) == 0.01
    assert [stage.check_device(d) for d in ("auto", "cpu")] == ["auto", "cpu"]
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU.*device=cpu"):
            stage.check_device("cuda")
    with pytest.raises(ConfigError, match="'allow_pickle': must be true or false, got 'yes'"):
        stage.check_bool("yes", "allow_pickle")
    with pytest.raises(ConfigError, match="'owner': is empty"):
        stage.check_nonempty("", "owner")


def test_lists_outside_multirun_are_lists_and_sweeps_inside_it() -> None:
    st = stage.Stage(module="fpbench.lineage", config="lineage_stage", list_keys=("methods", "transforms"))
    assert st.check_argv(["methods=cmf,sac", "zoo=ci"]) == ["methods=[cmf,sac]", "zoo=ci"]
    assert st.check_argv(["-m", "methods=cmf,sac"]) == ["-m", "methods=cmf,sac"]  # Hydra sweeps it
    assert stage.as_list("cmf", "methods") == ["cmf"] and stage.as_list(["a", "b"], "methods") == ["a", "b"]


def test_attack_study_lists_are_the_tagged_transforms() -> None:
    from fpbench.cmf.attack_report import ambiguity_transforms, removal_transforms
    from fpbench.report.tables import grid_records

    removal, ambiguity = removal_transforms(), ambiguity_transforms()
    assert removal[0] == "identity" and removal[-1] == "cmf_remove100r"  # weakest first
    assert ambiguity == ["partial_reinit25", "partial_reinit50", "partial_reinit75", "partial_reinit100"]
    assert set(tagged_options("transform", "attack_study")) == {*removal, *ambiguity}
    df = pd.DataFrame({"transform": ["finetune", "identity", "partial_reinit50", "chain"]})
    assert list(grid_records(df)["transform"]) == ["finetune", "chain"]  # the grid's tables leave the study out


def test_a_new_yaml_joins_a_tagged_list_by_its_tag_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fpbench.config as config

    (tmp_path / "transform").mkdir()
    (tmp_path / "transform" / "mine.yaml").write_text("name: mine\nimpl: identity\ntags: [attack_study, removal]\n")
    (tmp_path / "transform" / "other.yaml").write_text("name: other\nimpl: identity\n")
    (tmp_path / "transform" / "child.yaml").write_text("defaults: [mine, _self_]\nname: child\n")  # inherits tags
    monkeypatch.setattr(config, "CONF_DIR", tmp_path)
    assert config.tagged_options("transform", "removal") == ["child", "mine"]
    assert config.tagged_options("transform", "ambiguity") == []
