"""SCRAM-SHA-256 verifiers as PostgreSQL stores them (module_utils/sluice_scram.py)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[2] / "ansible" / "plugins" / "module_utils")
)

import sluice_scram

# The salt of RFC 7677's example exchange (user "user", password "pencil").
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def test_a_verifier_accepts_its_password_and_nothing_else():
    made = sluice_scram.verifier("pencil")

    assert made.startswith("SCRAM-SHA-256$4096:")
    assert sluice_scram.matches(made, "pencil")
    assert not sluice_scram.matches(made, "pencil ")
    assert not sluice_scram.matches(made, "Pencil")


def test_the_same_salt_gives_the_same_verifier_and_a_new_salt_another():
    assert sluice_scram.verifier("pencil", SALT) == sluice_scram.verifier("pencil", SALT)
    assert sluice_scram.verifier("pencil") != sluice_scram.verifier("pencil")


def test_the_iterations_in_the_stored_verifier_are_honoured():
    made = sluice_scram.verifier("pencil", SALT, iterations=10000)

    assert made.startswith("SCRAM-SHA-256$10000:")
    assert sluice_scram.matches(made, "pencil")
    tampered = made.replace("$10000:", "$4096:")
    assert not sluice_scram.matches(tampered, "pencil")


def test_no_password_an_md5_hash_or_garbage_never_matches():
    for stored in (None, "", "md5c4b5a1c4fa5f6e2b8d3b8e2a6b0a7d3c", "SCRAM-SHA-256$x:y$z:w"):
        assert not sluice_scram.matches(stored, "pencil")
