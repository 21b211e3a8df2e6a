"""Each catalog row counts its failed ingestion attempts: a row that failed `catalog.MAX_ATTEMPTS` times
is no longer listed for extraction, so a permanently broken source stops being retried by every run
(posting its URL to ingest-one-url still tries it, and a success repairs the row).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plants_data") as table:
        table.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("plants_data") as table:
        table.drop_column("attempts")
