#!/usr/bin/env python
"""A LangChain RAG chain whose retriever is ragtune's MCP `retrieval_search` tool.

    python clients/langchain_rag.py "What is LoRA?"                                  # extractive, offline
    python clients/langchain_rag.py --base-url http://localhost:11434/v1 --model qwen2.5:7b "What is LoRA?"

The retriever calls `retrieval_search` over MCP (streamable HTTP) and turns each hit into a LangChain
`Document` (title, heading path, span and score in its metadata). The chain is
`{context: retriever | format, question} | prompt | model | parser`, where the model is any
OpenAI-compatible chat model, or, with none configured, an extractive answerer that quotes the
retrieved sentences closest to the question. Exits non-zero when nothing is retrieved or the answer is
empty or does not draw on the retrieved text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

import httpx2
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer only from the numbered context passages and cite them like [1]. "
            "If the context does not answer the question, say so.\n\nContext:\n{context}",
        ),
        ("human", "{question}"),
    ]
)


class McpRetriever(BaseRetriever):
    """Retrieves passages by calling the MCP search tool of a ragtune retrieval server."""

    url: str
    token: str | None = None
    k: int = 4
    collection: str | None = None
    mode: str = "hybrid"

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        arguments: dict[str, Any] = {"query": query, "k": self.k, "mode": self.mode}
        if self.collection:
            arguments["collection"] = self.collection
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            Client(streamable_http_client(self.url, http_client=http)) as mcp,
        ):
            result = await mcp.call_tool("retrieval_search", arguments)
        text = "\n".join(getattr(part, "text", "") for part in result.content or [])
        if result.is_error:
            raise RuntimeError(f"retrieval_search failed: {text}")
        data = result.structured_content or json.loads(text)
        return [
            Document(page_content=hit["text"], metadata={k: v for k, v in hit.items() if k != "text"})
            for hit in data["hits"]
        ]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        raise NotImplementedError("McpRetriever is async: use ainvoke")


def format_docs(docs: list[Document]) -> str:
    """Number the passages and label each with its document and heading, for citations."""
    return "\n\n".join(
        f"[{i}] {d.metadata.get('title', '')} › {' › '.join(d.metadata.get('heading_path', []))}\n{d.page_content}"
        for i, d in enumerate(docs, 1)
    )


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w+", text) if len(w) > 1}


def extractive_answer(prompt: PromptValue) -> str:
    """Quote the two context sentences sharing the most words with the question, with their citations."""
    system, human = (m.content for m in prompt.to_messages())
    question = _words(str(human))
    scored = []
    for number, passage in re.findall(r"\[(\d+)\][^\n]*\n(.*?)(?=\n\n\[\d+\]|\Z)", str(system), re.S):
        for sentence in re.split(r"(?<=[.!?。])\s+|(?<=다\.)\s*|\n", passage):
            if len(sentence.strip()) > 20:
                scored.append((len(question & _words(sentence)), sentence.strip(), number))
    best = sorted(scored, key=lambda s: -s[0])[:2]
    if not best or best[0][0] == 0:
        return "The retrieved passages do not answer this question."
    return " ".join(f"{sentence} [{number}]" for _, sentence, number in best)


def build_chain(retriever: McpRetriever, model: Runnable[Any, Any]) -> Runnable[str, str]:
    """Return the RAG chain: retrieve, format, prompt, answer, parse."""
    return {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | model | StrOutputParser()


def make_model(base_url: str | None, model: str | None, api_key: str | None) -> Runnable[Any, Any]:
    """Return an OpenAI-compatible chat model when one is configured, else the extractive answerer."""
    if not base_url or not model:
        return RunnableLambda(extractive_answer)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=base_url, model=model, api_key=api_key or "not-needed", max_retries=0, temperature=0)


async def main(argv: list[str] | None = None) -> int:
    """Build the chain, answer the question, and check the answer drew on what was retrieved."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="What is LoRA?")
    parser.add_argument("--mcp-url", default="http://127.0.0.1:8701/mcp", help="retrieval MCP server")
    parser.add_argument("--token", default=os.environ.get("RAGTUNE_API_TOKEN"), help="MCP bearer token")
    parser.add_argument("--collection", help="collection to search (default: the server's default)")
    parser.add_argument("--k", type=int, default=4, help="passages to retrieve")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="OpenAI-compatible endpoint")
    parser.add_argument("--model", default=os.environ.get("RAGTUNE_CHAT_MODEL"), help="chat model at that endpoint")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    args = parser.parse_intermixed_args(argv)  # the message may follow the options

    retriever = McpRetriever(url=args.mcp_url, token=args.token, k=args.k, collection=args.collection)
    docs = await retriever.ainvoke(args.question)
    assert docs, (
        "retrieval_search returned nothing: ingest documents first (python -m ragtune.servers.retrieval ingest docs/)"
    )
    for i, doc in enumerate(docs, 1):
        print(
            f"[{i}] {doc.metadata.get('title')} › {' › '.join(doc.metadata.get('heading_path', []))} "
            f"(score {doc.metadata.get('score', 0):.3f})"
        )
    answer = await build_chain(retriever, make_model(args.base_url, args.model, args.api_key)).ainvoke(args.question)
    print(f"\nanswer: {answer}")
    assert answer.strip(), "the chain returned an empty answer"
    retrieved = set().union(*(_words(d.page_content) for d in docs))
    assert len(_words(answer) & retrieved) >= 3, "the answer shares almost nothing with the retrieved passages"
    return 0


if __name__ == "__main__":
    from _errors import run  # clients/ is on sys.path when a client runs as a script

    run(
        main,
        "is the retrieval server running? start it with `python -m ragtune.servers.retrieval serve --transport http`",
    )
