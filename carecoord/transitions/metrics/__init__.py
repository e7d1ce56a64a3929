"""Care-transition program metrics."""
