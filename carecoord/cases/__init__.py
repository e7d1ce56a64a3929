"""Case management from intake to closure."""
