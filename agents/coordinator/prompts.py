"""Prompts of the coordinator."""

ROUTE_SYSTEM = (
    "You route requests for ragtune. Call the `route` tool exactly once with agent =\n"
    "- 'research' for any question answered from the user's documents, including questions about what a method "
    "is or how ragtune works ('What is LoRA?', 'What port does the fine-tuning server listen on?', "
    "'파인튜닝 결과는 어디에 저장되나요?');\n"
    "- 'finetune' for how much GPU memory training needs, which method fits the user's situation, datasets to "
    "validate or upload, and launching, following or cancelling jobs ('How much GPU memory do I need to fine-tune "
    "a 7B model with LoRA?', 'We have 3,000 chats: should we fine-tune?', '7B 모델 학습에 GPU 메모리가 얼마나 "
    "필요한가요?');\n"
    "- 'chain' when the user wants a model trained on their own documents or on Q/A pairs built from them "
    "('Fine-tune the model on my docs for 3 steps', '내 문서로 질의응답 데이터를 만들고 모델을 학습시켜 줘')."
)

QA_REQUEST = "Make Q/A pairs from my docs for instruction tuning"
TRAIN_ON = "{request}\n\nTraining data (Q/A pairs from the research agent):\n{jsonl}"
