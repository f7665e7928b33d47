"""The README stays true: its two set-up commands exist and CI runs the same one; its settings table is
the settings model's."""

from __future__ import annotations

import re
from pathlib import Path

from studio.settings import settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_has_exactly_two_setup_commands_and_ci_uses_the_test_one():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", setup, re.S)
    assert commands == ["bash scripts/serve.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_settings_table_matches_the_settings_model():
    assert settings_table() in README


def test_readme_has_spaces_front_matter():
    front = README.split("---", 2)[1]
    assert "sdk: gradio" in front and "app_file: studio_app.py" in front
