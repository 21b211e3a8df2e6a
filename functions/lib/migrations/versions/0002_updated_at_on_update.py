"""MySQL keeps `updated_at` itself (ON UPDATE CURRENT_TIMESTAMP): an upsert through ON DUPLICATE KEY
UPDATE never set it, because SQLAlchemy applies a column's `onupdate` to UPDATE statements only. SQLite
has no such clause; the catalog's SQLite upsert sets the column itself.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name in ("mysql", "mariadb"):
        op.execute(
            "ALTER TABLE plants_data MODIFY updated_at DATETIME NOT NULL "
            "DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP"
        )


def downgrade() -> None:
    if op.get_context().dialect.name in ("mysql", "mariadb"):
        op.execute("ALTER TABLE plants_data MODIFY updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP")
