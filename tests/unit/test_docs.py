from pathlib import Path

from sluice_infra import docs


def test_each_variable_takes_the_comment_right_above_it(tmp_path: Path):
    defaults = tmp_path / "main.yml"
    defaults.write_text(
        "---\n# Role x: header.\n\n# The port.\nx_port: 7000\n# A list,\n# two lines.\n"
        "x_items:\n  - a\nx_bare: true\n"
    )
    assert docs.role_variables(defaults) == [
        ("x_port", "The port.", 7000),
        ("x_items", "A list, two lines.", ["a"]),
        ("x_bare", "", True),
    ]


def test_every_role_variable_is_documented_and_the_reference_is_current():
    for defaults in docs.ROLES.glob("*/defaults/main.yml"):
        for name, description, _ in docs.role_variables(defaults):
            assert description, f"{name} in {defaults} has no comment above it"
    assert docs.OUTPUT.read_text() == docs.render(), "run `make docs`"
