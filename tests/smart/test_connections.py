"""EHR connection files: TOML and YAML, one or several a file, errors naming file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carecoord.settings import ConfigError
from carecoord.smart.connections import (
    EhrConnection,
    load_connections,
    to_toml,
    write_connection,
)
from carecoord.smart.errors import UnknownConnection

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "ehr"


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / "ehr").mkdir(parents=True, exist_ok=True)
    path = folder / "ehr" / name
    path.write_text(text)
    return path


def test_no_folder_and_empty_folder_mean_no_connections(tmp_path: Path) -> None:
    assert len(load_connections(tmp_path)) == 0
    (tmp_path / "ehr").mkdir()
    _write(tmp_path, "epic.toml.example", "this is not loaded")
    assert len(load_connections(tmp_path)) == 0


def test_toml_file_with_one_connection(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "epic-prod.toml",
        'iss = "https://fhir.example.org/api/FHIR/R4/"\nclient_id = "abc"\nvendor = "epic"\n',
    )
    registry = load_connections(tmp_path)
    conn = registry.get("epic-prod")  # the name defaults to the file's stem
    assert conn.iss == "https://fhir.example.org/api/FHIR/R4"
    assert conn.vendor == "epic" and conn.read_only and conn.client_auth == "public"
    assert registry.by_iss("https://FHIR.example.org/api/FHIR/R4/") is conn
    with pytest.raises(UnknownConnection):
        registry.by_iss("https://fhir.example.org/api/FHIR")


def test_yaml_file_with_several_connections(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "hospitals.yaml",
        "connections:\n"
        "  north:\n    iss: https://north.example.org/fhir\n    client_id: n\n"
        "  south:\n    iss: https://south.example.org/fhir\n    client_id: s\n"
        "    client_auth: private_key_jwt\n    signing_alg: ES384\n",
    )
    registry = load_connections(tmp_path)
    assert [c.name for c in registry] == ["north", "south"]
    assert registry.get("south").signing_alg == "ES384"


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("a.toml", 'iss = "https://x.example.org/fhir"\n', "a.toml: client_id: Field required"),
        ("b.toml", 'iss = "http://x.example.org/fhir"\nclient_id = "c"\n', "b.toml: iss: "),
        ("c.toml", 'iss = "ftp://x/fhir"\nclient_id = "c"\n', "c.toml: iss: "),
        (
            "d.toml",
            'iss = "https://x.example.org/fhir"\nclient_id = "c"\nvendor = "meditech"\n',
            "d.toml: vendor: ",
        ),
        (
            "e.toml",
            'iss = "https://x.example.org/fhir"\nclient_id = "c"\nclient_auth = "confidential"\n',
            "e.toml: client_secret_env: a confidential client needs one",
        ),
        (
            "f.toml",
            'iss = "https://x.example.org/fhir"\nclient_id = "c"\nclient_secret = "hunter2"\n',
            "f.toml: client_secret: secrets are not kept in config files",
        ),
        (
            "g.toml",
            'iss = "https://x.example.org/fhir"\nclient_id = "c"\n'
            'backend_scope = "system/Task.cruds"\n',
            "g.toml: backend_scope: 'system/Task.cruds' grants writes",
        ),
        (
            "h.toml",
            'iss = "https://x.example.org/fhir"\nclient_id = "c"\nlaunch_scope = "openid"\n',
            "h.toml: launch_scope: must contain 'launch'",
        ),
        ("i.toml", 'iss = "https://x.example.org/fhir"\nclient_id = "c"\ncolour = 1\n', "colour"),
        ("j.toml", "iss = [\n", "j.toml: not valid TOML"),
        ("k.yaml", "iss: [unclosed\n", "k.yaml: not valid YAML"),
        (
            "l.yaml",
            "connections:\n  n1:\n    iss: https://x.example.org/fhir\n    client_id: 7\n",
            "l.yaml: connections.n1.client_id: ",
        ),
        ("m.toml", 'name = "Bad Name"\niss = "https://x/fhir"\nclient_id = "c"\n', "m.toml: name"),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_connections(tmp_path)
    assert where in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_duplicate_names_and_iss_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", 'name = "x"\niss = "https://a.example.org/fhir"\nclient_id = "c"\n')
    _write(tmp_path, "b.toml", 'name = "x"\niss = "https://b.example.org/fhir"\nclient_id = "c"\n')
    with pytest.raises(ConfigError, match=r"b\.toml: name: 'x' is already defined in .*a\.toml"):
        load_connections(tmp_path)
    _write(tmp_path, "b.toml", 'name = "y"\niss = "https://a.example.org/fhir/"\nclient_id = "c"\n')
    with pytest.raises(ConfigError, match=r"b\.toml: iss: .* already the iss of 'x'"):
        load_connections(tmp_path)


def test_confidential_secret_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path,
        "c.toml",
        'iss = "https://x.example.org/fhir"\nclient_id = "c"\n'
        'client_auth = "confidential"\nclient_secret_env = "CC_TEST_SECRET"\n',
    )
    monkeypatch.delenv("CC_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"c\.toml: client_secret_env: .*CC_TEST_SECRET"):
        load_connections(tmp_path)
    assert len(load_connections(tmp_path, check_secrets=False)) == 1
    monkeypatch.setenv("CC_TEST_SECRET", "value")
    conn = load_connections(tmp_path).get("c")
    assert conn.client_secret().get_secret_value() == "value"
    assert "value" not in repr(conn) and "value" not in to_toml(conn)


def test_loopback_http_is_allowed_for_tests_and_development() -> None:
    for iss in ("http://127.0.0.1:8080/fhir", "http://localhost/fhir", "http://[::1]:9/fhir"):
        assert EhrConnection(name="dev", iss=iss, client_id="c").iss == iss


def test_write_connection_round_trips_and_refuses_duplicates(tmp_path: Path) -> None:
    conn = EhrConnection(
        name="epic-prod",
        iss="https://fhir.example.org/api/FHIR/R4",
        client_id="abc",
        vendor="epic",
        client_auth="private_key_jwt",
        backend_scope="system/Patient.rs system/Encounter.rs",
    )
    path = write_connection(tmp_path, conn)
    assert path == tmp_path / "ehr" / "epic-prod.toml"
    assert load_connections(tmp_path).get("epic-prod") == conn
    with pytest.raises(ConfigError, match="already exists"):
        write_connection(tmp_path, conn)
    other = conn.model_copy(update={"name": "epic-2"})
    with pytest.raises(ConfigError, match="iss: already used by 'epic-prod'"):
        write_connection(tmp_path, other)


def test_the_shipped_examples_are_valid(tmp_path: Path) -> None:
    examples = sorted(EXAMPLES.glob("*.example"))
    assert examples, "config/ehr/ ships example connections"
    (tmp_path / "ehr").mkdir()
    for example in examples:
        shutil.copy(example, tmp_path / "ehr" / example.name.removesuffix(".example"))
    registry = load_connections(tmp_path, check_secrets=False)
    assert [c.name for c in registry] == ["epic-prod", "generic-dev", "oracle-sandbox"]


def test_the_real_config_folder_loads() -> None:
    """config/ehr/ holds only examples: loading it must not fail."""
    assert len(load_connections(EXAMPLES.parent)) == 0


@pytest.mark.parametrize(
    ("scope", "writes"),
    [
        ("patient/Observation.read", False),
        ("patient/Observation.rs", False),
        ("user/*.rs?category=laboratory", False),
        ("patient/Observation.write", True),
        ("user/*.*", True),
        ("system/Task.cruds", True),
        ("system/Task.u", True),
        ("launch", False),
        ("openid", False),
    ],
)
def test_write_scopes_are_recognised(scope: str, writes: bool) -> None:
    from carecoord.smart.connections import grants_write

    assert grants_write(scope) is writes
