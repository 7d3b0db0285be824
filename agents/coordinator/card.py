"""The coordinator's card text and skills."""

from a2a.types import AgentSkill
from ragtune.agents.a2a_app import skill

NAME = "ragtune-coordinator"
DESCRIPTION = (
    "Front door of ragtune: routes each request to the research agent (answers with citations) or the "
    "fine-tuning agent (advice, jobs), or chains them (Q/A pairs from your docs, then instruction tuning)."
)


def skills() -> list[AgentSkill]:
    """Return the coordinator's skills."""
    return [
        skill(
            "ask",
            "Ask your documents",
            "Questions answered from the indexed documents, with citations.",
            ["rag", "citations"],
            ["What does ragtune use for Korean search?", "LoRA는 언제 쓰나요?"],
        ),
        skill(
            "finetune",
            "Fine-tuning advice, memory estimates and jobs",
            "Which method fits a described situation, how much GPU memory training a model size needs, and "
            "launching and following a job (asks first).",
            ["fine-tuning", "gpu-memory"],
            [
                "We have 20k labelled tickets and a 24 GB GPU: should we fine-tune?",
                "How much GPU memory do I need to fine-tune a 7B model with LoRA?",
                "7B 모델 학습에 GPU 메모리가 얼마나 필요한가요?",
            ],
        ),
        skill(
            "qa_then_train",
            "Q/A set from my docs, then instruction tuning",
            "The research agent builds Q/A pairs from your documents; the fine-tuning agent trains on them.",
            ["dataset", "fine-tuning", "chain"],
            ["Make a Q/A set from my docs and instruction-tune a model on it for 30 steps"],
        ),
    ]
