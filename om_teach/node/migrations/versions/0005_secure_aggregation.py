"""Secure aggregation over HTTP: each cycle's protocol round and members, and its messages.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("fl_cycles") as table:
        table.add_column(sa.Column("stage", sa.String(16), nullable=True))
        table.add_column(sa.Column("stage_deadline", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("members", sa.Text, nullable=True))
    op.create_table(
        "fl_secagg_messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cycle_id", sa.Integer, sa.ForeignKey("fl_cycles.id"), nullable=False),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("fl_assignments.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("cycle_id", "assignment_id", "kind"),
    )


def downgrade() -> None:
    op.drop_table("fl_secagg_messages")
    with op.batch_alter_table("fl_cycles") as table:
        table.drop_column("members")
        table.drop_column("stage_deadline")
        table.drop_column("stage")
