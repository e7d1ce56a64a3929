"""Program files: the shipped ones load; errors name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecoord.pccm.program import load_program_file, load_programs
from carecoord.settings import ConfigError
from tests.pccm.helpers import CONFIG


def test_shipped_programs_load_with_different_orders() -> None:
    programs = load_programs(CONFIG.parent)
    assert set(programs) == {"default", "language-first"}
    assert programs["default"].rules != programs["language-first"].rules
    assert programs["default"].caps.per_pcp == 2500
    assert programs["default"].choice_window_days == 90


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "pccm"
    folder.mkdir(exist_ok=True)
    path = folder / "state.yaml"
    path.write_text((CONFIG / "default.yaml").read_text() + text)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("rules: [existing-assignment, coin-toss]\n", "state.yaml: rules[1]: Input should be"),
        ("caps: {per_pcp: 0}\n", "state.yaml: caps.per_pcp: Input should be greater than"),
        ("colour: blue\n", "state.yaml: colour: Extra inputs are not permitted"),
        ("rules: [distance, distance]\n", "rules: a criterion appears twice"),
        (
            "special_needs: [{name: x, prefer_types: [geriatrics]}]\n",
            "special_needs[0].prefer_types: 'geriatrics' is not the pcp_type of any specialty",
        ),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, extra: str, message: str) -> None:
    path = _write(tmp_path, extra)
    with pytest.raises(ConfigError) as err:
        load_programs(tmp_path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_not_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rules: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_program_file(path)
