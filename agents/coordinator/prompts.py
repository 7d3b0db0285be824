"""Prompts of the coordinator."""

ROUTE_SYSTEM = (
    "You route requests for ragtune. Call the `route` tool exactly once with agent = 'research' for questions "
    "answered from the user's documents, 'finetune' for fine-tuning advice or launching a training job, or "
    "'chain' when the user wants a Q/A dataset built from their documents and a model trained on it."
)

QA_REQUEST = "Make Q/A pairs from my docs for instruction tuning"
TRAIN_ON = "{request}\n\nTraining data (Q/A pairs from the research agent):\n{jsonl}"
