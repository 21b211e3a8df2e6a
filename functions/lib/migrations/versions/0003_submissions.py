"""validate-label: submissions waiting for an admin, who decided on a catalog row and when, the count of
accepted labels since the last training, and an outbox for the retrain event.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("sha256", sa.CHAR(64), nullable=False),  # of the bytes sent: the same image is one row
        sa.Column("object_key", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("predicted_class", sa.String(16)),
        sa.Column("confidence", sa.Float),
        sa.Column("model_version", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("decided_label", sa.String(16)),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.CheckConstraint("label IN ('dandelion', 'grass')", name="ck_submissions_label"),
        sa.CheckConstraint(
            "decided_label IS NULL OR decided_label IN ('dandelion', 'grass')", name="ck_submissions_decided"
        ),
        sa.CheckConstraint("status IN ('pending', 'accepted', 'rejected')", name="ck_submissions_status"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ux_submissions_sha256", "submissions", ["sha256"], unique=True)
    op.create_index("ix_submissions_status", "submissions", ["status"])

    # One row: accepted labels not yet in a training; how many threshold batches were announced.
    op.create_table(
        "retrain_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("accepted_since_training", sa.Integer, nullable=False, server_default="0"),
        sa.Column("batches_announced", sa.Integer, nullable=False, server_default="0"),
        mysql_engine="InnoDB",
    )
    op.execute("INSERT INTO retrain_state (id, accepted_since_training, batches_announced) VALUES (1, 0, 0)")

    # Events written in the transaction that decides them, posted afterwards, retried until delivered.
    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("claimed_until", sa.DateTime),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.DateTime),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])

    with op.batch_alter_table("plants_data") as table:
        table.add_column(sa.Column("decided_by", sa.String(64)))
        table.add_column(sa.Column("decided_at", sa.DateTime))


def downgrade() -> None:
    with op.batch_alter_table("plants_data") as table:
        table.drop_column("decided_at")
        table.drop_column("decided_by")
    op.drop_table("outbox")
    op.drop_table("retrain_state")
    op.drop_table("submissions")
