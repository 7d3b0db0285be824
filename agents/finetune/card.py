"""The fine-tuning agent's card text and skills."""

from a2a.types import AgentSkill
from ragtune.agents.a2a_app import skill

NAME = "ragtune-finetune"
DESCRIPTION = (
    "Decides whether fine-tuning is warranted (RAG first when it is not), prepares the dataset, asks before "
    "launching, then submits and follows the job with live progress."
)


def skills() -> list[AgentSkill]:
    """Return the fine-tuning agent's skills."""
    return [
        skill(
            "advise",
            "Fine-tuning advice",
            "Recommends prompt/RAG, LoRA, full fine-tuning, CPT, DPO or rejection sampling for a described "
            "situation, with reasons.",
            ["fine-tuning", "advice"],
            [
                "We have 3,000 support transcripts and want answers in our house style. Should we fine-tune?",
                "문서가 매주 바뀌는데 파인튜닝을 해야 하나요?",
            ],
        ),
        skill(
            "train",
            "Launch and follow a fine-tuning job",
            "Validates and uploads a JSONL dataset (or asks the research agent for Q/A pairs), asks for "
            "confirmation (input-required), submits the job and streams its progress.",
            ["fine-tuning", "training", "lora"],
            ['Instruction-tune the model on these Q/A pairs for 30 steps: {"question": ..., "answer": ...}'],
        ),
    ]
