"""Model-centric federated learning: processes, their cycles, and the workers assigned to each.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "fl_processes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("client_config", sa.Text, nullable=False),
        sa.Column("server_config", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fl_cycles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("process_id", sa.Integer, sa.ForeignKey("fl_processes.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("cid", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(100), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published", sa.Integer, nullable=True),
        sa.UniqueConstraint("process_id", "number"),
    )
    op.create_table(
        "fl_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cycle_id", sa.Integer, sa.ForeignKey("fl_cycles.id"), nullable=False),
        sa.Column("worker", sa.Integer, sa.ForeignKey("tokens.id"), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("report_cid", sa.String(100), nullable=True),
        sa.Column("examples", sa.Integer, nullable=True),
        sa.UniqueConstraint("cycle_id", "worker"),
    )


def downgrade() -> None:
    op.drop_table("fl_assignments")
    op.drop_table("fl_cycles")
    op.drop_table("fl_processes")
