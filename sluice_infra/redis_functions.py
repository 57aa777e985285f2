"""The Redis Functions library `sluice`: where it lives, its name, and a compile check.

The redis_cluster role loads the library with `FUNCTION LOAD REPLACE`; before that it checks
on the controller that the file compiles (`luac5.1 -p`, the Lua of Redis 7.0), so a broken
library fails the play before any node is touched.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from sluice_infra import REPO_ROOT

#: The library file the redis_cluster role ships.
LIBRARY_PATH = REPO_ROOT / "ansible" / "roles" / "redis_cluster" / "files" / "sluice.lua"

# Redis's own rule: the first line is `#!lua name=<name>`, the name made of [A-Za-z0-9_].
_SHEBANG = re.compile(r"^#!lua\b[^\n]*?\bname=([A-Za-z0-9_]+)(?:\s|$)")


def library_code(path: Path = LIBRARY_PATH) -> str:
    """The library's source text."""
    return path.read_text(encoding="utf-8")


def library_name(code: str) -> str:
    """The name in the library's shebang (`#!lua name=<name>`), which FUNCTION LOAD requires."""
    first_line = code.split("\n", 1)[0]
    match = _SHEBANG.match(first_line)
    if match is None:
        raise ValueError(
            "Redis Functions library has no valid shebang: its first line must be "
            f"'#!lua name=<name>' (name of letters, digits, '_'), got {first_line[:80]!r}"
        )
    return match.group(1)


def compile_check(code: str, luac: str = "luac5.1", *, path: str | Path = LIBRARY_PATH) -> None:
    """Raise ValueError when `luac -p` rejects the code; `path` names the library in the error.

    luac skips a first line starting with '#', as Redis skips the shebang.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".lua", encoding="utf-8") as tmp:
        tmp.write(code)
        tmp.flush()
        try:
            result = subprocess.run(
                [luac, "-p", tmp.name], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{luac} not found, needed to compile-check {path}: run `make host-deps` "
                "(Debian package lua5.1)"
            ) from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().replace(tmp.name, str(path))
        raise ValueError(f"Redis Functions library {path} does not compile: {message}")
