"""shops.analytics_generation: bumped by every writer that takes the shop lock

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 08:20:00

workers.context.lock_shop increments it in the locking transaction. The order job remembers the value its read
snapshot had: the same value under the lock means no other lock holder (customers/redact rewriting a pending
delivery's body, reconciliation, imports, rebuilds) committed since, so the write phase need not re-read the
deliveries' bodies (~30 KB per live order) to validate its batch (workers.order_jobs._unchanged).
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('shops', schema=None) as batch_op:
        batch_op.add_column(sa.Column('analytics_generation', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('shops', schema=None) as batch_op:
        batch_op.drop_column('analytics_generation')
