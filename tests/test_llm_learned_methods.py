"""The language methods that learn or search: LLMmap's inference model (trained on the zoo's training pool, which
no cell scores and no threshold is calibrated on), TRAP's GCG suffixes, and MET's batched permutation test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fpbench.api import ConfigError, Fingerprint
from fpbench.config import load_option
from fpbench.evaluate import checked_subject, make_method
from fpbench.run import CellRunner, CellSpec, candidate
from fpbench.zoo.build import transform_config

CPU = torch.device("cpu")
FAST_LLMMAP = {"name": "llmmap", "impl": "llm_llmmap", "params": {"epochs": 20, "repeats": 2, "max_tokens": 16}}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> CellRunner:
    runs = tmp_path_factory.mktemp("pool_runs")
    spec = CellSpec(zoo_cfg=load_option("zoo", "llm_ci"), method_cfg=FAST_LLMMAP, transform_cfg=transform_config("quant8"),
                    runs_dir=runs, device="cpu", progress=False)
    return CellRunner(spec)


def test_the_training_pool_is_disjoint_from_every_scored_and_calibration_model(runner: CellRunner) -> None:
    zoo = runner.zoo
    pool = {m.id for m in zoo.training_models()}
    assert pool == {"llama-s200", "qwen2-s200", "llama-s200/quant8", "qwen2-s200/quant8"}
    scored = {m.id for m in zoo.roots()} | {m.id for m in zoo.calibration_models()}
    assert not pool & scored
    assert not {m.root_id for m in zoo.training_models()} & {m.root_id for m in [*zoo.roots(), *zoo.calibration_roots()]}


def test_llmmap_learns_from_the_pool_once_and_reuses_what_it_learnt(runner: CellRunner,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    method = runner.method(FAST_LLMMAP)
    model = method.inference_model()
    meta = json.loads(next((method.ctx.workdir / "inference").rglob("meta.json")).read_text())
    assert sorted(meta["models"]) == sorted(m.id for m in runner.zoo.training_models())  # the pool, nothing else
    assert meta["losses"][-1] < meta["losses"][0]  # the contrastive loss fell: the pool's models were told apart
    again = runner.method(FAST_LLMMAP)
    monkeypatch.setattr(type(again), "_train", lambda self: pytest.fail("retrained although cached"))
    reloaded = again.inference_model()
    for (k, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # the fingerprint cache key names the pool: another pool's inference model never serves a cached fingerprint
    assert again.fingerprint_depends_on() == method.ctx.training_pool_key != ""


def test_llmmap_without_a_training_pool_says_what_it_needs(tmp_path: Path, runner: CellRunner) -> None:
    method = make_method(FAST_LLMMAP, runner.zoo.data, CPU, 0, tmp_path)  # as `verify` builds it: no zoo
    with pytest.raises(ConfigError, match="zoo.training"):
        method.fingerprint(SimpleNamespace(id="x"))


class _Answers:
    """A stand-in suspect that answers every prompt with a fixed text."""

    def __init__(self, text: str) -> None:
        self.text, self.asked = text, 0

    def generate(self, prompts: list[str], max_new_tokens: int, **_: object) -> list[str]:
        self.asked += len(prompts)
        return [self.text] * len(prompts)


def test_trap_scores_the_share_of_answers_that_hit_their_targets(tmp_path: Path, runner: CellRunner) -> None:
    method = make_method({"name": "trap", "impl": "llm_trap", "params": {"goals": 2}}, runner.zoo.data, CPU, 0, tmp_path)
    targets = method.targets()
    fp = Fingerprint(meta={"prompts": ["a", "b"], "targets": targets})
    assert method.score(fp, _Answers(f"{targets[0]} {targets[1]}")) == 1.0
    assert targets[0] != targets[1]  # seed 0 draws two different targets
    assert method.score(fp, _Answers(f"x{targets[0]}x")) == 0.5
    silent = _Answers("no digits here")
    assert method.score(fp, silent) == 0.0 and silent.asked == 2 * method.p.tests


def test_gcg_finds_a_suffix_that_makes_the_target_likelier(runner: CellRunner) -> None:
    from baselines.llm_trap import _target_losses, ascii_token_ids, gcg

    root = runner.zoo.roots()[0]
    subject = checked_subject(candidate(runner.zoo, root), runner.zoo.data, CPU, {})
    model, tok = subject.model, subject.tok
    prefix = torch.tensor(tok("Write 3 random digits.", add_special_tokens=False).input_ids)
    suffix = torch.full((10,), tok("x", add_special_tokens=False).input_ids[0])
    target = torch.tensor(tok("493", add_special_tokens=False).input_ids)
    with torch.no_grad():
        start = _target_losses(model, torch.cat([prefix, suffix, target])[None], len(prefix) + len(suffix), target)
    best, loss = gcg(model, prefix, suffix, target, ascii_token_ids(tok), steps=15, topk=32, width=32,
                     generator=torch.Generator().manual_seed(0))
    assert loss < float(start) - 0.2
    assert all(32 + 3 <= int(t) < 127 + 3 for t in best)  # printable ASCII bytes only (ids are bytes + 3)


def test_met_batched_null_equals_the_statistic_of_each_relabelling() -> None:
    from baselines.llm_met import batched_mmd2, hamming_kernel, mmd2

    g = torch.Generator().manual_seed(0)
    texts = ["".join(chr(97 + int(c)) for c in torch.randint(3, (12,), generator=g)) for _ in range(8)]
    k = hamming_kernel(texts, texts, 12)
    marks = torch.stack([torch.randperm(8, generator=g) < 4 for _ in range(20)])
    batched = batched_mmd2(k, marks)
    for i in range(20):
        assert abs(float(batched[i]) - mmd2(k, marks[i])) < 1e-12
