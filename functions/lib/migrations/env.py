"""Alembic's environment: online with the connection `functions.lib.schema` hands over, offline (`--sql`)
to render the MySQL init script."""

from alembic import context

if context.is_offline_mode():
    context.configure(
        dialect_name=context.config.get_main_option("dialect_name"),
        literal_binds=True,
        transactional_ddl=False,
    )
else:
    # SQLite alters tables by copying them ("batch" mode); MySQL alters them in place.
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")

with context.begin_transaction():
    context.run_migrations()
