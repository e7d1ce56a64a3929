"""Alembic environment: migrates the connection handed over by carecoord.migrate (or a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

import carecoord.fhir.tables  # noqa: F401  (registers the store's tables on the metadata)
from carecoord.db import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is required"
    engine = create_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
