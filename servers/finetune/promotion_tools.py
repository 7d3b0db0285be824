"""MCP tools that choose which tuned model the agents answer with (global; ragtune/promotion.py holds the rules)."""

from __future__ import annotations

from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from ragtune.servers.finetune.service import FinetuneService, ServiceError

from ragtune.promotion import Promotion

ModelId = Annotated[str, Field(description="A succeeded job's fine_tuned_model (ft:<base>:<org>:<suffix>:<job id>)")]


class PromotionState(BaseModel):
    """The model every agent answers with (null: the base model) and what changed."""

    model: str | None = Field(description="The promoted tuned model, or null when the agents use their base model")
    scope: str = Field(default="global", description="Promotion applies to every agent and conversation")
    accepted_warnings: list[str] = Field(default_factory=list)
    changed: bool = Field(default=False, description="Whether this call changed the promotion")


def register_promotion_tools(mcp: MCPServer, service: FinetuneService) -> None:
    """Add `finetune_promote_model`, `finetune_demote_model` and `finetune_promoted_model`."""

    @mcp.tool(
        title="Promote a tuned model",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
    )
    def finetune_promote_model(
        model: ModelId,
        accept_warnings: Annotated[
            bool, Field(description="Promote even though the job warned (loss diverged, worse than base)")
        ] = False,
    ) -> PromotionState:
        """Make a tuned model the one every agent answers with; a diverged or worse model is refused by default."""
        try:
            return _state(service.promote(model, accept_warnings=accept_warnings), changed=True)
        except ServiceError as e:
            raise ToolError(e.message) from e

    @mcp.tool(
        title="Demote the promoted model",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False),
    )
    def finetune_demote_model(model: ModelId) -> PromotionState:
        """Send the agents back to their base model if `model` is the promoted one."""
        removed = service.demote(model)
        return PromotionState(model=None if removed else _current(service), changed=removed is not None)

    @mcp.tool(title="Promoted model", annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def finetune_promoted_model() -> PromotionState:
        """Return the tuned model the agents answer with (null: their base model)."""
        current = service.current_promotion()
        return _state(current) if current else PromotionState(model=None)


def _state(p: Promotion, changed: bool = False) -> PromotionState:
    return PromotionState(model=p.model, accepted_warnings=p.accepted_warnings, changed=changed)


def _current(service: FinetuneService) -> str | None:
    current = service.current_promotion()
    return current.model if current else None
