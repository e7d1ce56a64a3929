"""Risk configuration: the shipped files load; errors name the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carecoord.transitions.readmissions import load_readmission_config
from carecoord.transitions.risk import RiskConfigError, load_risk_config

CONFIG = Path(__file__).resolve().parents[3] / "config"


def test_shipped_config_loads() -> None:
    config = load_risk_config(CONFIG)
    assert config.weights_name == "lace-tool"
    assert config.combine == "max"
    assert {r.name for r in config.readmissions.planned_rules} >= {"chemotherapy", "rehabilitation"}
    assert config.readmissions.window_days == 30


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "risk"
    shutil.copytree(CONFIG / "risk", target)
    return target


def test_bad_field_names_file_and_field(copy: Path) -> None:
    text = (copy / "risk.yaml").read_text().replace("combine: max", "combine: average")
    (copy / "risk.yaml").write_text(text)
    with pytest.raises(RiskConfigError) as err:
        load_risk_config(copy)
    assert "risk.yaml: combine:" in str(err.value)


def test_unknown_weight_table(copy: Path) -> None:
    text = (copy / "risk.yaml").read_text().replace("weights: lace-tool", "weights: nope")
    (copy / "risk.yaml").write_text(text)
    with pytest.raises(RiskConfigError, match=r"risk.yaml: charlson.weights: 'nope'"):
        load_risk_config(copy)


def test_weight_for_unknown_category(copy: Path) -> None:
    path = copy / "charlson-weights.yaml"
    path.write_text(path.read_text().replace("    hiv_aids: 4\n", "    hiv_aid: 4\n"))
    with pytest.raises(
        RiskConfigError, match=r"charlson-weights.yaml: tables.lace-tool: .*hiv_aid"
    ):
        load_risk_config(copy)


def test_bad_planned_rule_token(copy: Path) -> None:
    path = copy / "planned-readmissions.yaml"
    path.write_text(path.read_text().replace("http://snomed.info/sct|367336001", "367336001"))
    with pytest.raises(RiskConfigError, match=r"planned-readmissions.yaml: rules\[0\].codes"):
        load_readmission_config(copy)
