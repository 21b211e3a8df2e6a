"""plants_data as it was before migrations: what `create_all` made, and what this revision stamps on a
catalog that has the table but no version.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written out, not imported from the catalog module: a migration is history and must not change
    # when the current schema does.
    op.create_table(
        "plants_data",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("url_source", sa.String(2048), nullable=False),
        sa.Column("url_hash", sa.CHAR(64), nullable=False),
        sa.Column("url_s3", sa.String(1024)),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("sha256", sa.CHAR(64)),
        sa.Column("size_bytes", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("updated_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.CheckConstraint("label IN ('dandelion', 'grass')", name="ck_plants_data_label"),
        sa.CheckConstraint("status IN ('pending', 'ingested', 'failed')", name="ck_plants_data_status"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_plants_data_status", "plants_data", ["status"])
    op.create_index("ux_plants_data_url_hash", "plants_data", ["url_hash"], unique=True)


def downgrade() -> None:
    op.drop_table("plants_data")
