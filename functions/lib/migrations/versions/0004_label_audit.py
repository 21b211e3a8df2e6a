"""The label audit: the review queue also holds *suspected labels* of catalog rows (kind `suspect`),
decided by keeping, relabelling or excluding; an excluded catalog row stays out of every snapshot, and a
decision finds an image's rows by its SHA-256 (indexed).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SUBMISSION_STATUSES = "'pending', 'accepted', 'rejected', 'kept', 'relabelled', 'excluded'"


def _replace_check(table_name: str, name: str, condition: str) -> None:
    """Drop a CHECK constraint and create it anew. MySQL's dialect writes the drop as DROP CHECK, which
    MariaDB refuses; DROP CONSTRAINT works on both (MySQL 8.0.19 and later), so the rendered init SQL
    runs on either. SQLite alters tables by copying them (Alembic's batch mode)."""
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table(table_name) as table:
            table.drop_constraint(name, type_="check")
            table.create_check_constraint(name, condition)
        return
    op.execute(f"ALTER TABLE {table_name} DROP CONSTRAINT {name}")
    op.create_check_constraint(name, table_name, condition)


def upgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="upload"))
        table.drop_index("ux_submissions_sha256")
        table.create_index("ux_submissions_kind_sha256", ["kind", "sha256"], unique=True)
        table.create_check_constraint("ck_submissions_kind", "kind IN ('upload', 'suspect')")
    _replace_check("submissions", "ck_submissions_status", f"status IN ({SUBMISSION_STATUSES})")
    _replace_check(
        "plants_data", "ck_plants_data_status", "status IN ('pending', 'ingested', 'failed', 'excluded')"
    )
    op.create_index("ix_plants_data_sha256", "plants_data", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_plants_data_sha256", "plants_data")
    _replace_check("plants_data", "ck_plants_data_status", "status IN ('pending', 'ingested', 'failed')")
    _replace_check("submissions", "ck_submissions_status", "status IN ('pending', 'accepted', 'rejected')")
    with op.batch_alter_table("submissions") as table:
        table.drop_constraint("ck_submissions_kind", type_="check")
        table.drop_index("ux_submissions_kind_sha256")
        table.create_index("ux_submissions_sha256", ["sha256"], unique=True)
        table.drop_column("kind")
