"""The promotion hook: when a tuned model is promoted (ragtune.promotion), it writes the research agent's answers,
under the same strict check as the embedded model, and the answer names it."""

from __future__ import annotations

import asyncio
import logging

from ragtune.agents.research.graph import PromotedWriter
from ragtune.agents.research.writing import Writer

from ragtune.config import AgentSettings

log = logging.getLogger(__name__)


def promoted_writer(settings: AgentSettings) -> PromotedWriter:
    """Return a callable that looks up the promoted model before each answer (None: use the agent's own model)."""
    from ragtune import promotion

    async def current() -> Writer | None:
        model_id = await asyncio.to_thread(promotion.current_model, settings)
        if not model_id:
            return None
        log.info("answering with the promoted model %s", model_id)
        return Writer(promotion.served_chat_model(settings, model_id), model_id, strict=True)

    return current
