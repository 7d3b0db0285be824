"""The fine-tuning agent's tool-calling path: a capable model picks the MCP tools itself (`create_agent`),
but launching still goes through `finetune_launch`, which asks the human first (`interrupt()`)."""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.types import interrupt
from ragtune.agents.finetune.situation import is_yes
from ragtune.agents.mcp_tools import McpTools

from ragtune.llm import model_label

SYSTEM = (
    "You are ragtune's fine-tuning agent. Decide with finetune_recommend_method whether fine-tuning is warranted "
    "and say so plainly (retrieval first when it is the answer). To train: upload the dataset with "
    "finetune_upload_dataset, then call finetune_launch (it asks the user to confirm), then report the job with "
    "finetune_get_job. Never call finetune_create_job directly."
)
HIDDEN = {"finetune_create_job"}  # only reachable through finetune_launch, after a human "yes"


def launch_tool(finetune: McpTools) -> BaseTool:
    """Return the confirm-then-create tool."""

    @tool
    async def finetune_launch(training_file: str, max_steps: int = 30) -> str:
        """Ask the user to confirm, then start LoRA SFT of the embedded model on an uploaded file."""
        reply = interrupt(
            {
                "question": f"Launch LoRA SFT on {training_file} for {max_steps} steps? "
                "Reply “yes” to launch, anything else to stop."
            }
        )
        if not is_yes(str(reply)):
            return "The user declined: nothing was launched."
        job = await finetune.call(
            "finetune_create_job",
            training_file=training_file,
            method="supervised",
            hyperparameters={"max_steps": max_steps},
            peft={"type": "lora"},  # rank and alpha: the server's one default (hyper.DEFAULT_LORA, r 16)
        )
        return json.dumps({"job_id": job["id"], "status": job["status"], "model": job.get("model")})

    return finetune_launch


async def run_tool_agent(
    model: BaseChatModel, finetune: McpTools, request: str, config: RunnableConfig
) -> dict[str, Any]:
    """Run the model's own tool loop for one request; an interrupt inside it pauses the outer graph."""
    tools = [t for t in await finetune.langchain_tools() if t.name not in HIDDEN] + [launch_tool(finetune)]
    agent = create_agent(model, tools, system_prompt=SYSTEM)
    result = await agent.ainvoke({"messages": [HumanMessage(request)]}, config)
    last = next(m for m in reversed(result["messages"]) if isinstance(m, AIMessage))
    return {"answer": f"{last.text}\n\n[mode: tool-calling {model_label(model)}]"}
