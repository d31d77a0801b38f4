"""stored lists record the strategy that scored them

``GET /lists/{user_id}`` showed ``strategy: null``: only POST and PUT knew it. Lists stored
before this revision keep null (unknown).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 23:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # IF NOT EXISTS: a database the pre-Alembic migrate() made (create_all of the models,
    # stamped at 0001) may already have the column
    op.execute("alter table recommendation_list_item add column if not exists strategy varchar(16)")


def downgrade() -> None:
    op.drop_column("recommendation_list_item", "strategy")
