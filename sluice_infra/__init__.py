"""Sluice deployment tooling: the logic behind the lab, the Ansible plugins and Pulumi."""

from pathlib import Path

#: Repository root (this package is installed editable from it).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Templates shared by more than one tool (DESIGN.md, "Top level").
TEMPLATES_DIR = REPO_ROOT / "templates"
