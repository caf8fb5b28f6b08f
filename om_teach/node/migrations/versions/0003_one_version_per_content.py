"""One version per content address of a model: two uploads of the same bytes at once get the
same version, not two.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.create_unique_constraint("uq_model_versions_model_id_cid", ["model_id", "cid"])


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("uq_model_versions_model_id_cid", type_="unique")
