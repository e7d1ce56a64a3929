"""The screens' configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecoord.settings import ConfigError
from carecoord.web.config import DEFAULT_CASELOAD_CAPS, load_web_config


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_web_config(tmp_path)
    assert config.time_zone == "America/New_York"
    assert config.frame_ancestors == ()
    assert config.caseload_caps == DEFAULT_CASELOAD_CAPS


def test_a_file_is_read_and_origins_normalised(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "web.toml").write_text(
        'time_zone = "America/Chicago"\nframe_ancestors = ["https://ehr.example.org/"]\n'
        "[caseload_caps]\nintensive = 12\n"
    )
    config = load_web_config(tmp_path)
    assert config.tz.key == "America/Chicago"
    assert config.frame_ancestors == ("https://ehr.example.org",)
    assert config.caseload_caps["intensive"] == 12
    assert config.caseload_caps["brokerage"] == 75


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('time_zone = "Mars/Olympus"', "time_zone: unknown time zone"),
        ('frame_ancestors = ["ehr.example.org"]', "frame_ancestors: 'ehr.example.org' is not"),
        ('frame_ancestors = ["https://ehr.example.org/app"]', "must be an origin"),
        ("[caseload_caps]\nintensive = 0", "caseload_caps: intensive: a cap must be at least 1"),
        ('colour = "blue"', "colour: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "web").mkdir()
    path = tmp_path / "web" / "web.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(tmp_path)
    assert str(caught.value).startswith(f"{path}: ")
    assert field in str(caught.value)
