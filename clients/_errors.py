"""Run an example client's `main()` and turn the failures a user can fix into one line (no traceback).

Regression for issue #12: with no server running, the clients printed 80-100-line tracebacks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

# Exception class names of httpx, httpx2, openai and the OS that all mean "nothing answered there".
UNREACHABLE = {"ConnectError", "APIConnectionError", "ConnectTimeout", "ConnectionRefusedError", "ConnectionError"}


def causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield an exception, the members of exception groups and every cause/context below them."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += list(getattr(e, "exceptions", ()))
        stack += [c for c in (e.__cause__, e.__context__) if c is not None]


def unreachable(exc: BaseException) -> BaseException | None:
    """Return the connection failure inside `exc`, if that is what it is."""
    return next((e for e in causes(exc) if type(e).__name__ in UNREACHABLE), None)


def run(main: Callable[[], Coroutine[Any, Any, int]], hint: str) -> None:
    """Exit with main()'s status; a failed check or an unreachable server prints one line and exits 1."""
    try:
        sys.exit(asyncio.run(main()))
    except AssertionError as exc:
        print(f"check failed: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception as exc:
        failure = unreachable(exc)
        if failure is None:
            raise
        print(f"error: cannot connect ({failure or type(failure).__name__}); {hint}", file=sys.stderr)
    sys.exit(1)
