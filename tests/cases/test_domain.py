"""Pure rules: questionnaire scoring, monitoring dates, caseload choice, outcomes, config."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from carecoord.cases.assessment import answer_codes, propose_needs
from carecoord.cases.caseload import CapExceeded, ManagerLoad, check_cap, choose_manager, loads
from carecoord.cases.config import CaseConfigError, CaseModel, load_case_config
from carecoord.cases.monitoring import due_state, expected_contacts, next_monitoring
from carecoord.cases.outcomes import CaseRecord, readmissions_during, summarize
from carecoord.cases.phases import Phase
from carecoord.transitions.codes import TaskCode
from tests.cases.answers import FUNCTIONAL, SOCIAL, STRENGTHS, coded, social_needs

CONFIG = load_case_config(Path("config/cases"))


def _needs(qr: dict) -> dict[str, object]:
    url = qr["questionnaire"]
    found = propose_needs(CONFIG.needs, url, answer_codes(qr), CONFIG.item_texts[url])
    return {n.key: n for n in found}


def test_a_screen_without_needs_proposes_nothing() -> None:
    assert _needs(social_needs("Patient/1")) == {}


@pytest.mark.parametrize(
    ("answers", "need", "code"),
    [
        ({"housing_status": "LA31994-9"}, "housing-instability", "Z59.819"),
        ({"housing_status": "LA31995-6"}, "housing-instability", "Z59.819"),
        ({"food_last": "LA28397-0"}, "food-insecurity", "Z59.41"),
        ({"food_worry": "LA6729-3"}, "food-insecurity", "Z59.41"),
        ({"transportation_lack": "LA33-6"}, "transportation-insecurity", "Z59.82"),
        ({"utilities_shutoff": "LA32002-0"}, "utility-insecurity", "Z59.12"),
    ],
)
def test_each_core_domain_proposes_its_sdoh_problem(answers: dict, need: str, code: str) -> None:
    found = _needs(social_needs("Patient/1", **answers))
    assert list(found) == [need]
    proposed = found[need]
    assert proposed.condition is not None and proposed.condition.code == code  # type: ignore[attr-defined]
    assert proposed.sdoh  # type: ignore[attr-defined]


def test_safety_is_positive_from_a_summed_score_of_eleven() -> None:
    # HITS: fairly often (4) + sometimes (3) + sometimes (3) + never (1) = 11 -> positive
    at = social_needs("Patient/1", safety_hurt="LA16644-9", safety_insult="LA10082-8",
                      safety_threaten="LA10082-8")  # fmt: skip
    found = _needs(at)
    assert list(found) == ["interpersonal-safety"]
    assert found["interpersonal-safety"].score == 11  # type: ignore[attr-defined]
    # 4 + 3 + 2 + 1 = 10 -> negative
    below = social_needs("Patient/1", safety_hurt="LA16644-9", safety_insult="LA10082-8",
                         safety_threaten="LA10066-1")  # fmt: skip
    assert _needs(below) == {}


def test_functional_status_needs_help_proposes_personal_care() -> None:
    found = _needs(coded(FUNCTIONAL, "Patient/1", {"adl-bathing": "needs-help",
                                                   "iadl-meals": "independent"}))  # fmt: skip
    assert list(found) == ["personal-care-assistance"]
    assert found["personal-care-assistance"].condition.code == "Z74.1"  # type: ignore[attr-defined]


def test_strengths_propose_one_client_goal_per_domain_and_no_problem() -> None:
    qr = coded(STRENGTHS, "Patient/1", {"finances-status": "work-on", "health-status": "strength",
                                        "leisure-status": "work-on"})  # fmt: skip
    found = _needs(qr)
    assert sorted(found) == ["strengths-goal-finances-status", "strengths-goal-leisure-status"]
    goal = found["strengths-goal-finances-status"]
    assert goal.condition is None  # type: ignore[attr-defined]
    assert goal.goal_text == "Money and benefits: the client's own goal"  # type: ignore[attr-defined]


def test_other_questionnaires_rules_do_not_apply() -> None:
    qr = social_needs("Patient/1", housing_status="LA31995-6")
    assert propose_needs(CONFIG.needs, FUNCTIONAL, answer_codes(qr)) == []
    assert propose_needs(CONFIG.needs, SOCIAL + "|1", answer_codes(qr))[0].key == (
        "housing-instability"
    )


def test_monitoring_follows_the_model_and_the_last_contact() -> None:
    intensive = CONFIG.models[CaseModel.INTENSIVE]
    items = next_monitoring(intensive, started=date(2026, 3, 2), last_contact=None,
                            last_assessment=date(2026, 3, 4))  # fmt: skip
    assert [(i.code, i.due) for i in items] == [
        (TaskCode.CASE_CONTACT, date(2026, 3, 9)),
        (TaskCode.CASE_REASSESSMENT, date(2026, 5, 3)),
    ]
    brokerage = CONFIG.models[CaseModel.BROKERAGE]
    items = next_monitoring(brokerage, started=date(2026, 3, 2), last_contact=date(2026, 3, 20),
                            last_assessment=None)  # fmt: skip
    assert items[0].due == date(2026, 4, 19)
    assert items[0].key == "contact:2026-04-19"


def test_due_states() -> None:
    due = date(2026, 3, 10)
    assert due_state(due, date(2026, 3, 6), 3) == "upcoming"
    assert due_state(due, date(2026, 3, 7), 3) == "due"
    assert due_state(due, date(2026, 3, 10), 3) == "due"
    assert due_state(due, date(2026, 3, 11), 3) == "overdue"


def test_expected_contacts() -> None:
    assert expected_contacts(date(2026, 1, 1), date(2026, 1, 29), 7) == 4
    assert expected_contacts(date(2026, 1, 1), date(2026, 1, 28), 7) == 3
    assert expected_contacts(date(2026, 1, 1), date(2026, 1, 1), 7) == 0


def test_default_weights_follow_the_typical_ratios() -> None:
    cap = CONFIG.caseloads.default_cap
    assert cap / CONFIG.weight(CaseModel.BROKERAGE) == 75
    assert cap / CONFIG.weight(CaseModel.INTENSIVE) == 15
    assert cap / CONFIG.weight(CaseModel.STRENGTHS_BASED) == 20


def test_least_loaded_manager_the_case_fits() -> None:
    a = ManagerLoad("Practitioner/a", 70, 75)
    b = ManagerLoad("Practitioner/b", 40, 75)
    c = ManagerLoad("Practitioner/c", 20, 30)  # less load but fuller relative to a smaller cap
    assert choose_manager([a, b, c], 1).manager == "Practitioner/b"
    assert choose_manager([a, c], 5).manager == "Practitioner/c"
    with pytest.raises(CapExceeded):
        choose_manager([a, ManagerLoad("Practitioner/d", 74, 75)], 6)
    assert choose_manager([a], 5).manager == "Practitioner/a"  # exactly at the cap fits


def test_over_cap_needs_an_override_reason() -> None:
    full = ManagerLoad("Practitioner/a", 72, 75)
    assert check_cap(full, 3, None) is False
    with pytest.raises(CapExceeded, match="cap of 75"):
        check_cap(full, 5, None)
    with pytest.raises(CapExceeded):
        check_cap(full, 5, " ")
    assert check_cap(full, 5, "continuity of care") is True
    assert loads([("a", 5.0), ("a", 1.0), ("b", 2.5)]) == {"a": (6.0, 2), "b": (2.5, 1)}


def _t(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def test_readmissions_during_a_case() -> None:
    stays = [(_t(1), _t(3)), (_t(20), _t(22)), (datetime(2026, 5, 30, tzinfo=UTC), None)]
    # admitted Mar 20, 17 days after the Mar 3 discharge, inside the case -> 1
    assert readmissions_during(stays, _t(5), None) == 1
    # the case started after that admission -> 0; May 30 is 69 days after Mar 22 -> not counted
    assert readmissions_during(stays, _t(21), None) == 0
    # a case that ended before the readmission -> 0
    assert readmissions_during(stays, _t(5), _t(10)) == 0


def test_outcomes_per_model_and_manager() -> None:
    phases = [(Phase.INTAKE, _t(1), _t(3)), (Phase.ASSESSMENT, _t(3), _t(10)),
              (Phase.CLOSURE, _t(10), _t(10))]  # fmt: skip
    cases = [
        CaseRecord("1", "intensive", "Practitioner/a", phases,
                   goals=[("completed", "achieved"), ("active", "in-progress"),
                          ("rejected", None)],
                   contacts=3, expected_contacts=4, readmissions=1,
                   closure_reason="goals-met"),
        CaseRecord("2", "intensive", "Practitioner/b", [(Phase.INTAKE, _t(1), None)],
                   goals=[("active", "achieved")], contacts=1, expected_contacts=1),
    ]  # fmt: skip
    rows = {(r.model, r.care_manager): r for r in summarize(cases, _t(5))}
    overall = rows[("intensive", "*")]
    assert overall.cases == 2 and overall.closed == 1 and overall.open == 1
    assert overall.goals == 3 and overall.goals_achieved == 2
    assert overall.goal_attainment == pytest.approx(0.667)
    assert overall.contact_ratio == pytest.approx(0.8)
    assert overall.readmissions == 1
    assert overall.mean_days_in_phase == {"intake": 3.0, "assessment": 7.0}
    assert rows[("intensive", "Practitioner/a")].mean_days_in_phase["intake"] == 2.0


def test_config_errors_name_the_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "cases"
    shutil.copytree("config/cases", folder)
    models = folder / "models.yaml"
    models.write_text(
        models.read_text().replace("contact_every_days: 7 ", "contact_every_days: 0 ", 1)
    )
    with pytest.raises(
        CaseConfigError, match=r"models\.yaml: models\.intensive\.contact_every_days"
    ):
        load_case_config(folder)
    shutil.copy("config/cases/models.yaml", models)
    needs = folder / "needs.yaml"
    needs.write_text(needs.read_text().replace("answers: [LA33-6]", "answers: [LA99-9]", 1))
    with pytest.raises(CaseConfigError, match=r"needs\.yaml: rules\[2\]\.answers\[0\]"):
        load_case_config(folder)


def test_cli_check_config() -> None:
    from typer.testing import CliRunner

    from carecoord.cases.cli import app

    result = CliRunner().invoke(app, ["check-config"])
    assert result.exit_code == 0, result.output
    assert "5 models, 3 questionnaires, 8 need rules" in result.output
