"""Registries and config groups: one name per thing, unknown names fail in one line that lists the valid ones,
and every shipped YAML resolves to parameters its implementation declares."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from fpbench.api import ConfigError, Method, MethodParams, ModelSpec, Transform, TransformParams
from fpbench.config import CONF_DIR, check_option, list_options, load_option
from fpbench.registry import METHODS, TRANSFORMS, Registry, UnknownName, method_class, transform_class


class NotAMethod:
    """Registered under a method name by mistake: the registry must refuse to hand it out."""


def test_unknown_method_lists_valid_names_and_close_match() -> None:
    with pytest.raises(UnknownName) as err:
        method_class("cmff")
    msg = str(err.value)
    assert "unknown method 'cmff'" in msg and "Did you mean 'cmf'" in msg
    for name in METHODS:
        assert name in msg


def test_unknown_transform_impl_suggests_the_close_one() -> None:
    with pytest.raises(UnknownName, match="unknown transform 'prnue'. Did you mean 'prune'"):
        transform_class("prnue")


def test_unknown_transform_config_lists_options() -> None:
    with pytest.raises(UnknownName) as err:
        check_option("transform", "prune35")
    assert "prune30" in str(err.value) and "finetune" in str(err.value)


def test_a_name_registered_twice_is_an_error() -> None:
    reg = Registry("thing")
    reg.register("a", "fpbench.api:Method")
    with pytest.raises(ConfigError, match="thing 'a' is registered twice"):
        reg.register("a", "fpbench.api:Transform")
    assert reg.names() == ["a"]  # the first registration stands


def test_lookup_checks_the_base_class() -> None:
    reg = Registry("method", base="fpbench.api:Method")
    reg.register("impostor", f"{__name__}:NotAMethod")
    with pytest.raises(ConfigError, match="method 'impostor'.*is not a subclass of fpbench.api.Method"):
        reg.get("impostor")


def test_an_entry_must_be_module_colon_attr() -> None:
    reg = Registry("thing")
    reg.register("bad", "fpbench.api.Method")
    with pytest.raises(ConfigError, match="not of the form 'module:attr'"):
        reg.get("bad")


def test_every_registered_entry_imports_with_its_parameter_dataclass() -> None:
    for name in METHODS:
        cls = method_class(name)
        assert issubclass(cls, Method) and issubclass(cls.Params, MethodParams), name
        assert "name" not in vars(cls), f"{name}: the instance takes its name from the config, not the class"
    for name in TRANSFORMS:
        cls = transform_class(name)
        assert issubclass(cls, Transform) and issubclass(cls.Params, TransformParams), name
        assert "name" not in vars(cls), f"{name}: the instance takes its name from the config, not the class"


def test_a_transform_is_named_by_its_config() -> None:
    cfg = load_option("transform", "prune30_unstructured")
    transform = transform_class(cfg["impl"])(cfg["params"], name=cfg["name"])
    assert transform.name == "prune30_unstructured"
    with pytest.raises(ConfigError, match="transform 'prune30_unstructured'"):  # errors name the config
        transform_class(cfg["impl"])({**cfg["params"], "amount": 2.0}, name=cfg["name"])


@pytest.mark.parametrize("group", ["method", "transform"])
def test_every_yaml_is_named_after_its_file_and_resolves_its_params(group: str) -> None:
    lookup = method_class if group == "method" else transform_class
    for name in list_options(group):
        cfg = load_option(group, name)
        assert cfg["name"] == name, f"conf/{group}/{name}.yaml has name {cfg['name']!r}"
        impl = cfg.get("impl", name)
        if impl == "chain":  # a chain is config-level: each step is a transform config of its own
            for step in cfg["params"]["steps"]:
                check_option("transform", step)
            continue
        resolved = lookup(impl).resolve_params(cfg.get("params"), name)  # an undeclared key would raise here
        for key, value in (cfg.get("params") or {}).items():
            assert key in resolved, f"{name}: {key}"
            as_declared = list(resolved[key]) if isinstance(resolved[key], tuple) else resolved[key]
            assert as_declared == value, f"{name}: {key} resolved to {resolved[key]!r}, the YAML says {value!r}"


def test_every_method_config_declares_its_threshold_and_query_budget() -> None:
    for name in list_options("method"):
        params = load_option("method", name).get("params", {})
        assert "threshold" in params, f"{name}: no threshold (a per-config choice, documented in the YAML)"
        assert "query_budget" in params, f"{name}: no query_budget (part of the method's declaration)"


@pytest.mark.parametrize("group", ["method", "transform"])
def test_no_yaml_restates_a_default_of_the_code(group: str) -> None:
    """The parameter dataclass is the one home of defaults: a YAML sets only what differs (threshold and
    query_budget are declared by every method config)."""
    lookup = method_class if group == "method" else transform_class
    for name in list_options(group):
        impl = load_option(group, name).get("impl", name)
        if impl == "chain":
            continue
        defaults = {f.name: f.default for f in dataclasses.fields(lookup(impl).Params)
                    if f.default is not dataclasses.MISSING}
        own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))  # without its `defaults:`
        for key, value in (own.get("params") or {}).items():
            if key in ("threshold", "query_budget") or key not in defaults:
                continue
            default = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
            assert value != default, f"conf/{group}/{name}.yaml restates {key}: {value!r}, the code's default"


def test_a_required_transform_parameter_keeps_its_yaml_value() -> None:
    """Parameters without a default (a prune's amount, a quantizer's bits) must be set by every config."""
    for name in ("prune10", "prune30", "prune50", "prune30_unstructured"):
        assert "amount" in load_option("transform", name)["params"], name
    for name in ("quant8", "quant6", "quant4", "quant4_fp4", "quant4_own"):
        assert "bits" in load_option("transform", name)["params"], name


def test_unknown_model_builder_and_wrapper_suggest_the_close_one() -> None:
    from fpbench.models import build_module

    spec = ModelSpec(arch={"builder": "timmm", "name": "resnet18"}, num_classes=10, class_names=list("0123456789"),
                     input={"channels": 1, "size": 16, "mean": [0.5], "std": [0.5]})
    with pytest.raises(UnknownName, match="unknown model builder 'timmm'. Did you mean 'timm'.*clip"):
        build_module(spec)
    spec.arch = {"builder": "timm", "name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1]}}
    spec.wrappers = [{"kind": "lroa"}]
    with pytest.raises(UnknownName, match="unknown model wrapper 'lroa'. Did you mean 'lora'"):
        build_module(spec)


def test_report_sections_keep_their_order_and_their_names() -> None:
    from fpbench.report.extra import SECTIONS, sections

    shown = [s.name for s in sections()]
    assert shown == list(SECTIONS) and shown[0] == "transform_effects"
    assert shown.index("lineage_claims") < shown.index("attacks") < shown.index("transfer")
    with pytest.raises(UnknownName, match="unknown report section 'atacks'. Did you mean 'attacks'"):
        SECTIONS.get("atacks")


def test_console_script_rejects_an_unknown_command_listing_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys; from fpbench.cli import main; "
                           "sys.argv = ['fpbench', 'tabels']; main()"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "usage: fpbench {run|zoo|verify|tables|transfer|lineage|attacks}" in proc.stderr


def test_every_console_command_resolves_to_a_callable() -> None:
    from fpbench.cli import COMMANDS

    for name in COMMANDS:
        assert callable(COMMANDS.get(name)), name


@pytest.mark.parametrize("arg", ["method=nosuch", "transform=nosuch", "zoo=nosuch"])
def test_cli_unknown_name_is_one_line_and_nonzero(arg: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "fpbench.run", arg], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown"), proc.stderr
    assert "Valid" in lines[0]
