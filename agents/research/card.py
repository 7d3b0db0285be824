"""The research agent's card text and skills."""

from a2a.types import AgentSkill
from ragtune.agents.a2a_app import skill

NAME = "ragtune-research"
DESCRIPTION = "Answers questions from your indexed documents (Korean and English) with numbered citations."


def skills() -> list[AgentSkill]:
    """Return the research agent's skills."""
    return [
        skill(
            "answer",
            "Answer with citations",
            "Searches the retrieval server and answers with [n] citations (document, heading, span); "
            "says so when nothing relevant is indexed.",
            ["rag", "search", "citations"],
            ["What is LoRA and when should I use it?", "RAG와 파인튜닝 중 무엇을 먼저 해야 하나요?"],
        ),
        skill(
            "qa_pairs",
            "Build Q/A pairs",
            "Draws question/answer pairs (chat JSONL) from the indexed passages, for instruction tuning.",
            ["dataset", "qa"],
            ["Make Q/A pairs about fine-tuning from my docs"],
        ),
    ]
