"""Alembic environment of the labeling UI: runs on the connection :func:`pbrl.ui.db.migrate`
passes in (``config.attributes["connection"]``), or on ``sqlalchemy.url`` from the command
line (``alembic -x`` is not needed: set ``sqlalchemy.url`` in an ini file)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from pbrl.ui.db import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run()
