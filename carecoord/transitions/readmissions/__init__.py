"""30-day readmission detection."""
