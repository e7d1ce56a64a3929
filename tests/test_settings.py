"""Settings: environment, TOML file, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecoord.settings import ConfigError, load_settings


def test_defaults_use_sqlite_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARECOORD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CARECOORD_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'carecoord.db'}"


def test_file_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "carecoord.toml"
    config.write_text("[carecoord]\nport = 9001\nmax_page_size = 200\n")
    monkeypatch.setenv("CARECOORD_PORT", "9002")
    settings = load_settings(config)
    assert settings.port == 9002
    assert settings.max_page_size == 200


def test_invalid_file_value_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[carecoord]\nport = "eighty"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert str(config) in str(err.value) and "port" in str(err.value)


def test_unknown_field_and_broken_toml_are_reported(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[carecoord]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text("[carecoord\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml")
