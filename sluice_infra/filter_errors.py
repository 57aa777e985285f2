"""One way for the filter plugins to fail: the library's planning error becomes a task failure
that carries its message (which names the host, the variable and the fix)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from ansible.errors import AnsibleFilterError


def filter_errors(*errors: type[Exception]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a filter so that ``errors`` raised inside it become AnsibleFilterError."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except errors as err:
                raise AnsibleFilterError(str(err)) from err

        return wrapper

    return decorate
