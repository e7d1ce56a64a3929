"""Care transitions: discharge checklists with TCM clocks, the Task workflow, escalation."""
