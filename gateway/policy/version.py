"""Which version of ``policies/`` is applied: a content hash of its files, and the git
commit when the folder is in a git work tree, recorded on ``policy.applied`` events."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

POLICY_SUFFIXES = {".yaml", ".yml", ".conf"}


def content_hash(directory: Path) -> str:
    """SHA-256 over every policy file's relative path and bytes, in path order: the same
    files give the same hash on any machine, whatever their timestamps."""
    digest = hashlib.sha256()
    files = sorted(
        path for path in directory.rglob("*") if path.is_file() and path.suffix in POLICY_SUFFIXES
    )
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def policy_version(directory: Path) -> dict[str, Any]:
    """``{"sha256": ...}``, plus ``git_commit`` and ``git_dirty`` (uncommitted
    changes under the folder) when git knows the folder."""
    version: dict[str, Any] = {"sha256": content_hash(directory)}
    git = shutil.which("git")
    if git is None:
        return version
    try:
        commit = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [git, "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if commit.returncode != 0:
            return version
        status = subprocess.run(  # noqa: S603
            [git, "-C", str(directory), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    version["git_commit"] = commit.stdout.strip()
    version["git_dirty"] = bool(status.stdout.strip())
    return version
