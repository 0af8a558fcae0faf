"""The generative family: language models that write text, scored by the likelihood of held-out text (the causal LM and
chat tasks; speech recognition, a sequence-to-sequence model, is its own family in finetune/tasks/speech-recognition/,
and borrows ensemble_section from here).

One module per stage implements the verb for every task of the family, the same shape as the classification family:
preprocess.py (clean, split by DOCUMENT, the task's featurize), evaluate.py (perplexity beside the untouched pretrained
model, generations), member.py and ensemble.py (next-token distributions mixed), compress.py (int8, a distilled
student), explain.py (prompt-token attributions of generated continuations), report.py. Shared helpers: scoring.py
(token log-probabilities, perplexity, intervals), generation.py, attribution.py, distill.py; models.py holds the causal
LMs' Models; generate.py is the command line that writes with a trained model.

A task adds its data (read) and Models; its featurize turns {split: documents} into training examples and the layout
(with `context` and `facts`).
"""
from __future__ import annotations

from typing import Annotated, Literal

import pandas as pd
from pydantic import Field, create_model

from finetune.config.sections import Ensemble, Evaluate, Explain, Member
from finetune.errors import UserError
from finetune.families.task import Task


class GenerativeEvaluate(Evaluate):
    # generated from in the report; auto: the opening prompt_tokens tokens of `auto_prompts` held-out test documents
    # (seeded; preprocess picks them and says which in reports/preprocess.json), so generations start from this corpus
    prompts: Annotated[list[str], Field(min_length=1)] | Literal["auto"] = "auto"
    auto_prompts: int = Field(3, ge=1, le=100)  # prompts: auto: how many test documents give one
    prompt_tokens: int = Field(16, ge=1, le=64)  # prompts: auto: tokens of each document's opening (preprocess keeps 64)
    max_new_tokens: int = Field(48, ge=1, le=4096)  # tokens generated per prompt
    temperature: float = Field(0.8, ge=0, le=10)  # 0 = greedy
    top_p: float = Field(0.95, gt=0, le=1)  # nucleus sampling: the smallest set of tokens holding this much probability
    seed: int = 0  # each prompt's sampling is seeded: the same model gives the same generations


class GenerativeExplain(Explain):
    examples: int = Field(3, ge=0, le=1000)  # prompts explained: evaluate.prompts first, then seeded test windows
    prompt_tokens: int = Field(24, ge=2, le=4096)  # test windows: prompt length; the continuation is generated greedily
    continuation_tokens: int = Field(8, ge=1, le=512)  # tokens generated greedily, then attributed to the prompt
    # layer_integrated_gradients: opt-in; on SmolLM2 its completeness gap stayed 15-34 nats at 8-64 steps (convergence_delta
    # is reported) at 6-45x the cost of feature ablation
    methods: list[Literal["feature_ablation", "layer_integrated_gradients"]] = ["feature_ablation"]
    ig_steps: int = Field(16, ge=2, le=1000)  # layer_integrated_gradients: interpolation steps
    faithfulness_k: int = Field(3, ge=1, le=100)  # delete the top-k attributed prompt tokens vs k random ones
    random_draws: int = Field(5, ge=1, le=1000)  # random deletions averaged per example
    seed: int = 0  # which test windows are explained, and the random deletions


def ensemble_section(task_name: str) -> type[Ensemble]:
    """Members are fine-tunes whose next-token distributions are mixed (ensemble.py): hard_vote and stacking mean nothing."""
    member = create_model(f"Member[{task_name}]", __base__=Member, kind=(Literal["finetune"], "finetune"))
    return create_model(f"Ensemble[{task_name}]", __base__=Ensemble, method=(Literal["auto", "best_member", "soft_vote", "weighted"], "auto"),
                        members=(dict[str, member], {"seed1": member(train={"seed": 1})}))


class GenerativeTask(Task):
    family = "finetune.families.generative"
    val_metrics = ("loss",)  # training selects on val loss: the only val metric of a generative model
    has_labels = False  # a document's name is no class: ingest counts documents, not "row 7: 1" labels (issue 39)

    @classmethod
    def family_sections(cls) -> dict:
        return {"evaluate": GenerativeEvaluate, "explain": GenerativeExplain, "ensemble": ensemble_section(cls.name)}

    def openings(self, test: pd.DataFrame, tokenizer) -> list[list]:
        """[document, prompt token ids(, the reply it should get)] of each test document, where evaluate.prompts `auto`
        draws from (generation.prompts): a causal LM's are the documents' first tokens, cut to evaluate.prompt_tokens; a
        task whose openings carry replies gives whole prompts, and its generations are scored against the replies."""
        from finetune.families.generative.preprocess import openings

        return openings(test, tokenizer)

    def features_for(self, params, prepared: dict[str, pd.DataFrame], label_map: dict) -> tuple[dict[str, pd.DataFrame], dict]:
        """The prepared examples themselves: members and trials mix or compare next-token distributions on the SAME blocks,
        so their model must share the tokenizer the blocks were made with (checked)."""
        tokenizer = self.models.load_processor(self.models.source(params.train.model), params.train.trust_remote_code)
        if len(tokenizer) != label_map["vocab_size"] or tokenizer.eos_token_id != label_map["eos_token_id"]:
            raise UserError(f"train.model {params.train.model}: its tokenizer ({len(tokenizer)} tokens, EOS {tokenizer.eos_token_id}) is not "
                            f"the one the blocks were made with ({label_map['vocab_size']} tokens, EOS {label_map['eos_token_id']}); members "
                            "and search trials of a generative model must share the tokenizer")
        return prepared, label_map
