"""sequential pair deltas as one blob per (order batch, bucket)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 02:20:00

Live orders upserted one `sequential_pair_deltas` row per directed pair a batch changed (most of a 200-order
batch's time on PostgreSQL once histories fill the N-day window). A batch now writes one `sequential_pair_blobs`
row per bucket (numpy payload, see workers.sequential_jobs); compaction folds them into the rows.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sequential_pair_blobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('bucket', sa.String(length=7), nullable=False),
    sa.Column('pairs', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('sequential_pair_blobs', schema=None) as batch_op:
        batch_op.create_index('ix_sequential_pair_blobs_shop_bucket', ['shop_id', 'bucket'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sequential_pair_blobs', schema=None) as batch_op:
        batch_op.drop_index('ix_sequential_pair_blobs_shop_bucket')
    op.drop_table('sequential_pair_blobs')
