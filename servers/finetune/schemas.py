"""Shapes shared by the service, the REST API and the MCP tools: requests, pages, refusals."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ragtune.jobs import Integration


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status and OpenAI error fields to report."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.problems = problems


class JobRequest(BaseModel):
    """Body of `POST /fine_tuning/jobs` (OpenAI's fields plus ragtune's `peft`, via the SDK's extra_body)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    training_file: str
    validation_file: str | None = None
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = Field(default=None, description="Deprecated: use method")
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="OpenAI's range: 0 to 2147483647")
    metadata: dict[str, str] | None = None
    integrations: list[Integration] | None = None
    peft: dict[str, Any] | None = None
    x_ragtune: dict[str, Any] | None = Field(default=None, description="Vendor extras: {peft: {...}}")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, in OpenAI's shape."""

    object: str = "list"
    data: list[T]
    has_more: bool
