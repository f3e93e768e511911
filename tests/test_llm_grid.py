"""The language-model families in the same grid as the vision models: a cell of the llm_ci zoo through the CLI
(roots trained on text, a LoRA child made by peft, REEF scoring owners x suspects with negatives in the cell and a
calibrated threshold), the language task's data and accuracy check, and the errors that keep the two kinds of
model apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fpbench.config import load_option
from fpbench.llm.text import byte_tokenizer
from fpbench.records import cell_path

CPU = torch.device("cpu")


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fpbench.run", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def llm_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm_runs")


@pytest.fixture(scope="module")
def reef_lora(llm_runs: Path) -> pd.DataFrame:
    """The cell the issue names: python -m fpbench.run zoo=llm_ci method=reef transform=lora (cold)."""
    proc = _run("zoo=llm_ci", "method=reef", "transform=lora", f"runs_dir={llm_runs}", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(ln.startswith("[llm_ci] reef x lora") for ln in proc.stdout.splitlines()), proc.stdout
    return pd.read_parquet(cell_path(llm_runs, "llm_ci", "reef", "lora"))


@pytest.fixture(scope="module")
def llm_zoo(llm_runs: Path, reef_lora: pd.DataFrame):
    from fpbench.zoo.build import Zoo

    return Zoo(load_option("zoo", "llm_ci"), llm_runs, CPU, seed=0, progress=False)


def test_a_language_cell_has_positives_and_negatives_and_separates_them(reef_lora: pd.DataFrame) -> None:
    df = reef_lora[reef_lora["status"] == "ok"]
    roots = 4
    assert (df["label"] == 1).sum() == roots and (df["label"] == 0).sum() == roots * (roots - 1)
    # every model does its task through the query pipeline: next-token accuracy above the most frequent byte's
    # share of the test text (a model that learnt nothing predicts only that)
    assert df["owner_accuracy"].min() > 0.17 and df["suspect_accuracy"].min() > 0.17
    for owner, g in df.groupby("owner"):  # each owner's LoRA child above every one of its negatives
        assert g.loc[g["label"] == 1, "score"].min() > g.loc[g["label"] == 0, "score"].max(), owner
    assert df["threshold"].notna().all()


def test_a_warm_rerun_reads_the_records(llm_runs: Path, reef_lora: pd.DataFrame) -> None:
    proc = _run("zoo=llm_ci", "method=reef", "transform=lora", f"runs_dir={llm_runs}", "progress=false")
    assert proc.returncode == 0 and "[cached]" in proc.stdout


def test_the_lora_child_is_made_by_peft_with_the_zoos_training_settings(llm_zoo) -> None:
    root = llm_zoo.roots()[0]
    child = llm_zoo.child(root, "lora")
    info, recipe = child.meta["info"], child.meta["recipe"]["transform"]["params"]
    assert info["library"] == "peft" and info["lora_layers"] == 2 * 4  # q, k, v, o of both decoder layers
    assert recipe["optimizer"] == "adamw" and recipe["lr"] == 1e-3  # zoo.transform_defaults
    assert recipe["steps"] == 30  # zoo.transform_params.lora
    assert 0 < info["rel_change_norm"] < 0.5
    parent_w, child_w = (llm_zoo.load_module(m).net.model.layers[0].self_attn.q_proj.weight for m in (root, child))
    assert not torch.equal(parent_w, child_w)  # the merged adapters changed the weights


def test_text_splits_are_disjoint_and_accuracy_is_the_same_through_the_subject(llm_zoo) -> None:
    from fpbench.llm.subject import LMSubject
    from fpbench.llm.text import byte_tokenizer

    data = llm_zoo.data
    train_a, test = set(data.split("train_a").texts), data.split("test").texts
    assert not train_a & {t for t in test}  # same source (fortunes), disjoint runs of it
    assert data.split("train_a").blocks.ids.shape == (400, 64)
    root = llm_zoo.roots()[0]
    subject = LMSubject(root.id, llm_zoo.load_module(root), byte_tokenizer(), CPU)
    assert subject.token_accuracy(test) == pytest.approx(root.accuracy, abs=1e-9)


def test_a_vision_method_on_the_language_zoo_names_the_methods_that_fit(llm_runs: Path) -> None:
    proc = _run("zoo=llm_ci", "method=sac", "transform=lora", f"runs_dir={llm_runs}", "progress=false")
    assert proc.returncode != 0
    assert "fingerprints vision models" in proc.stderr and "llm_reef" in proc.stderr


def test_a_vision_only_transform_says_why_it_cannot_apply_to_a_language_model(llm_zoo) -> None:
    from fpbench.api import NotApplicable

    with pytest.raises(NotApplicable, match="language model"):
        llm_zoo.child(llm_zoo.roots()[0], "advtrain")


def test_logit_distillation_makes_a_fresh_student_that_follows_its_teacher(llm_zoo) -> None:
    roots = llm_zoo.roots()
    teacher, indep = roots[0], roots[1]  # two llama seeds
    student = llm_zoo.child(teacher, {"name": "lm_distill_ci", "impl": "lm_distill", "params": {"steps": 150,
                                                                                                 "lr": 3.0e-3}})
    info = student.meta["info"]
    assert info["student_arch"] == "same" and info["queries"] == 150
    assert info["rel_change_norm"] > 0.5  # fresh weights, not the parent's
    ids = llm_zoo.data.split("test").tensor()
    with torch.no_grad():
        pred = {m.id: llm_zoo.load_module(m)(ids).argmax(-1) for m in (teacher, student, indep)}
    follows = float((pred[student.id] == pred[teacher.id]).float().mean())
    assert follows == pytest.approx(info["agreement"], abs=1e-6)
    assert follows > float((pred[indep.id] == pred[teacher.id]).float().mean())  # closer than another seed


def test_a_deployment_variant_changes_what_black_box_queries_see_and_only_that(llm_zoo) -> None:
    from fpbench.api import MethodContext
    from fpbench.evaluate import suspect_view
    from fpbench.llm.subject import LMSubject
    from fpbench.llm.text import byte_tokenizer
    from fpbench.registry import method_class

    root = llm_zoo.roots()[0]
    prompts = ["the quick brown fox", "a fortune cookie says"]

    def subject(zm):  # noqa: ANN001, ANN202
        return LMSubject(zm.id, llm_zoo.load_module(zm), byte_tokenizer(), CPU, spec=zm.spec)

    plain = subject(root)
    system = subject(llm_zoo.child(root, "deploy_system_prompt"))
    noisy = subject(llm_zoo.child(root, "deploy_logit_noise"))
    assert system.deployment.system_prompt and not torch.allclose(system.next_token_logits(prompts),
                                                                  plain.next_token_logits(prompts))
    a, b = noisy.next_token_logits(prompts), noisy.next_token_logits(prompts)
    assert torch.equal(a, b) and (a - plain.next_token_logits(prompts)).std() == pytest.approx(1.0, rel=0.1)
    # white-box queries reach the weights themselves, so a white-box method says n/a instead of a trivial 1.0
    assert torch.equal(system.named_weights()["layers.0.attn.q"], plain.named_weights()["layers.0.attn.q"])
    ctx = MethodContext(data=llm_zoo.data, device=CPU, seed=0, workdir=Path("."))
    reef = method_class("llm_reef")({}, ctx, name="reef")
    from fpbench.api import NotApplicable

    with pytest.raises(NotApplicable, match="deployment variant"):
        reef.check_applicable(plain, suspect_view(system, reef.access, None))
    agreement = method_class("llm_agreement")({}, ctx, name="lm_agreement")
    agreement.check_applicable(plain, system)  # a black-box method is scored on it


def test_the_paraphrase_rewrites_words_through_wordnet() -> None:
    from fpbench.llm.deploy import Deployment

    out = Deployment(paraphrase="synonyms").prompts(["the big dog runs quickly"])[0]
    assert out != "the big dog runs quickly" and len(out.split()) == 5


def test_the_gpu_tier_lists_leafbenchs_families_and_says_what_building_it_needs(tmp_path: Path) -> None:
    from fpbench.api import ConfigError
    from fpbench.llm.models import build_snapshot

    proc = subprocess.run([sys.executable, "-m", "fpbench.zoo", "zoo=llm_leafbench", "experiment=llm",
                           f"runs_dir={tmp_path}", "dry_run=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "llama-3.1-8b-s0" in proc.stdout and "nothing was built" in proc.stdout
    arch = load_option("zoo", "llm_leafbench")["archs"]["mistral-7b"]
    with pytest.raises(ConfigError, match="huggingface-cli download mistralai/Mistral-7B"):
        build_snapshot({**arch, "path": str(tmp_path / "absent")}, None)
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="own tokenizer"):
        build_snapshot({**arch, "path": str(tmp_path / "snap")}, None)


def test_instruct_tuning_learns_to_answer_with_the_definition_and_masks_the_prompt(llm_zoo) -> None:
    from transforms.sft import examples

    data = examples(["cat: a small domesticated carnivore"], 64, byte_tokenizer())
    ids, labels = data.ids[0], data.targets[0]
    prompt = len("Define cat:")
    assert (labels[:prompt] == -100).all() and (labels[prompt : prompt + 10] == ids[prompt : prompt + 10]).all()
    root = llm_zoo.roots()[0]
    child = llm_zoo.child(root, {"name": "instruct_ci", "impl": "sft", "params": {"steps": 60, "lr": 3.0e-3}})
    texts = [t for t in llm_zoo.data.split("train_b").texts[:64] if ": " in t]
    probe = examples(texts, 64, byte_tokenizer())
    with torch.no_grad():
        loss = {m.id: float(llm_zoo.load_module(m).task_loss(probe.ids, probe.targets)) for m in (root, child)}
    assert loss[child.id] < loss[root.id] - 0.3  # the answers it was tuned on, far likelier than before


def test_generation_distillation_learns_from_another_family_and_stays_its_own_roots_positive(llm_zoo) -> None:
    root = llm_zoo.roots()[0]  # llama-s0
    child = llm_zoo.child(root, {"name": "gen_distill_ci", "impl": "gen_distill", "params": {"queries": 100,
                                                                                                "steps": 20}})
    assert child.meta["info"]["teacher"] == "qwen2-s0"  # the next root of another architecture
    assert child.root_ids == ("llama-s0",) and child.partner_id is None  # a teacher is no ancestor
    assert child.meta["info"]["teacher_generations"] == 100 and child.meta["info"]["rel_change_norm"] > 0


def test_two_families_that_build_the_same_network_are_refused_as_one_model(tmp_path: Path) -> None:
    """Mistral's configuration at Llama's sizes is Llama's network, initialised alike under one seed: scored as
    independents, the pair would be a false negative that is really the same model."""
    from fpbench.api import ConfigError
    from fpbench.zoo.build import Zoo

    cfg = load_option("zoo", "llm_ci")
    same = {k: v for k, v in cfg["archs"]["llama"].items() if k != "family"}
    cfg = {**cfg, "train": {**cfg["train"], "steps": 2}, "archs": {"llama": cfg["archs"]["llama"],
                                                                   "mistral": {**same, "family": "mistral"}},
           "roots": [{"arch": "llama", "seeds": [0]}, {"arch": "mistral", "seeds": [0]}], "calibration": []}
    with pytest.raises(ConfigError, match="identical weights"):
        Zoo(cfg, tmp_path, CPU, progress=False).roots()


def test_gpt2s_conv1d_layers_are_pruned_by_output_channel_and_quantized_by_our_quantizer() -> None:
    from fpbench.api import NotApplicable, TransformContext
    from fpbench.llm.models import LanguageModel, build_lm
    from fpbench.llm.text import byte_tokenizer
    from fpbench.registry import transform_class

    tok = byte_tokenizer()
    model = LanguageModel(build_lm({"family": "gpt2", "hidden": 32, "layers": 2, "heads": 4, "intermediate": 64,
                                    "block_size": 64}, len(tok), tok.pad_token_id, tok.eos_token_id))
    ctx = TransformContext(data=None, device=CPU, seed=0)  # type: ignore[arg-type]
    pruned = transform_class("prune")({"amount": 0.25}).apply(model, None, ctx).model  # type: ignore[arg-type]
    w = pruned.net.transformer.h[0].mlp.c_fc.weight  # Conv1D: [in 32, out 64]
    assert int((w.abs().sum(0) == 0).sum()) == 16  # a quarter of the 64 output channels zeroed
    with pytest.raises(NotApplicable, match="Conv1D"):
        transform_class("quantize")({"bits": 8, "backend": "bitsandbytes"}).check(None, model)  # type: ignore[arg-type]
    q = transform_class("quantize")({"bits": 4, "backend": "own"}).apply(model, None, ctx)  # type: ignore[arg-type]
    assert q.info["quantized_conv1d"] == 8  # c_attn, c_proj, c_fc, mlp.c_proj of both blocks
    assert len(torch.unique(q.model.net.transformer.h[1].attn.c_attn.weight[:, 0])) <= 15  # 4-bit levels
