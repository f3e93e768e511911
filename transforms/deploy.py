"""A black-box deployment variant of a language model (``fpbench.llm.deploy``): the parent's weights, served with a
system prompt, paraphrased inputs, logit noise or forced sampling settings. Cheap: the child is its recipe (the
parent's module and a ``deploy`` wrapper in its spec, which the subject applies to black-box queries)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fpbench.api import ModelSpec, NotApplicable, Transform, TransformContext, TransformParams, TransformResult
from fpbench.llm.deploy import Deployment


@dataclass(frozen=True)
class DeployParams(TransformParams):
    system_prompt: str = ""
    paraphrase: str = ""  # "" | "lower" | "synonyms"
    logit_noise: float = 0.0
    temperature: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        Deployment(self.system_prompt, self.paraphrase, self.logit_noise, self.temperature)  # validates


class Deploy(Transform):
    Params = DeployParams
    p: DeployParams
    version = "1"
    modalities = ("language",)

    @property
    def cheap(self) -> bool:
        return True

    def check(self, spec: ModelSpec, model: nn.Module) -> None:
        if Deployment.of(spec) is not None:
            raise NotApplicable("the parent is already a deployment variant; deploy the model itself")

    def apply(self, model: nn.Module, spec: ModelSpec, ctx: TransformContext) -> TransformResult:
        p = self.p
        wrapper = {"kind": "deploy", "system_prompt": p.system_prompt, "paraphrase": p.paraphrase,
                   "logit_noise": p.logit_noise, "temperature": p.temperature, "seed": ctx.seed}
        child = ModelSpec.from_dict({**spec.to_dict(), "wrappers": [*spec.wrappers, wrapper]})
        return TransformResult(model, child, {k: v for k, v in wrapper.items() if k != "kind"})
