"""The dashboard takes the feature APIs' numbers when they answer."""

from __future__ import annotations

from carecoord.web.dashboard import DashboardData, table, with_apis
from carecoord.web.program import ReadmissionRow


def test_api_numbers_replace_the_local_ones_and_say_so() -> None:
    local = DashboardData([ReadmissionRow("2025-06", 9, 9)], [], [], [], [], ())
    metrics = {
        "groups": [
            {
                "period": "2025-06",
                "discharges": 4,
                "readmissions_30d": 1,
                "contact_2bd": 3,
                "visit_14d": 2,
                "checklists": 4,
                "tasks": 40,
                "tasks_completed": 30,
            },
        ]
    }
    caseload = {"caseloads": [{"careManager": "Practitioner/n1", "load": 22.5, "cap": 20}]}
    data = with_apis(
        local, metrics=metrics, caseload=caseload, names={"Practitioner/n1": "Kim Okafor"}
    )
    assert table(data, "readmissions")[1] == [["2025-06", 4, 1, "25.0"]]
    assert table(data, "tcm-contact")[1] == [["2025-06", 4, 3, "75.0"]]
    assert table(data, "tcm-visit")[1] == [["2025-06", 4, 2, "50.0"]]
    assert table(data, "checklists")[1] == [["2025-06", 4, 40, 30, "75.0"]]
    assert table(data, "caseloads")[1] == [["Kim Okafor", "22.5", "20"]]
    assert data.caseloads[0].over
    assert data.sources == ("transition metrics API", "caseloads API")


def test_without_answers_the_local_numbers_stay() -> None:
    local = DashboardData([ReadmissionRow("2025-06", 9, 3)], [], [], [], [], ())
    data = with_apis(local, metrics=None, caseload=None, names={})
    assert table(data, "readmissions")[1] == [["2025-06", 9, 3, "33.3"]]
    assert data.sources == ()
