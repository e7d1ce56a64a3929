"""Alembic migrations of the CareCoord database."""
