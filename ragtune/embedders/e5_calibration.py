"""Calibration text for the int8 e5-small engine: a few paragraphs in the languages ragtune serves.

SmoothQuant-style smoothing needs the typical per-channel size of each layer's input; these texts (Korean
public-service prose, English science and technical prose, mixed and code-like lines) are run once at load.
"""

CALIBRATION_TEXTS = (
    "기초생활보장 생계급여는 소득인정액이 기준 중위소득의 32% 이하인 가구에 매월 지급됩니다. 신청은 주소지 "
    "관할 행정복지센터에서 할 수 있으며, 신분증과 금융정보 제공 동의서가 필요합니다.",
    "장애인 활동지원 서비스는 혼자서 일상생활과 사회생활을 하기 어려운 장애인에게 활동지원사가 신체활동, "
    "가사활동, 이동보조를 제공합니다. 본인부담금은 소득 수준에 따라 다릅니다.",
    "국민연금은 만 18세 이상 60세 미만의 국내 거주자가 가입 대상이며, 노령연금은 가입기간이 10년 이상인 "
    "사람이 수급 개시 연령에 도달하면 받을 수 있습니다. 문의: 국민연금공단 1355.",
    "형태소 분석기는 한국어 문장을 형태소로 나누고 품사를 붙입니다. 검색 엔진은 이 결과로 색인을 만듭니다.",
    "Vitamin D supplementation did not reduce the incidence of cardiovascular events in older adults, "
    "according to a randomized, placebo-controlled trial of 25,871 participants followed for 5.3 years.",
    "Mutations in the BRCA1 gene impair homologous recombination, leaving cells dependent on PARP-mediated "
    "repair; PARP inhibitors therefore selectively kill BRCA1-deficient tumour cells (synthetic lethality).",
    "To fine-tune a small language model with LoRA, freeze the base weights, add low-rank adapters to the "
    "attention projections, and train for a few epochs with a learning rate around 2e-4.",
    "Retrieval-augmented generation retrieves passages with BM25 and dense vectors, fuses the rankings with "
    "reciprocal rank fusion (k=60), and cites the chunks it used in the answer.",
    "query: how do I apply for housing benefit?",
    "passage: def search(query: str, k: int = 10) -> list[Hit]:  # returns ranked hits from SQLite FTS5",
    "RAG 파이프라인에서 FTS5 bm25() 점수와 sqlite-vec 코사인 거리를 RRF로 합칩니다. chunk_tokens=350, overlap=50.",
    "노인 일자리 및 사회활동 지원사업 — 만 65세 이상 기초연금 수급자, 월 29만원 (공익활동), 2024년 기준.",
)
