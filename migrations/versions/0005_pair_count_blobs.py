"""pair count deltas as one blob per (order batch, bucket)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 23:30:00

Live orders wrote one upserted `pair_count_deltas` row per item pair (~1,200 per average Online Retail order),
most of an order batch's cost. A batch now writes one `pair_count_blobs` row per bucket holding all its signed pair
deltas (numpy payload, see shopify_app.analytics.counts). `pair_count_deltas` is kept for one release: nothing
writes it any more, readers and compaction still fold rows an older release left there.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pair_count_blobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('segment', sa.String(length=40), nullable=False),
    sa.Column('bucket', sa.String(length=7), nullable=False),
    sa.Column('pairs', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pair_count_blobs', schema=None) as batch_op:
        batch_op.create_index('ix_pair_count_blobs_shop_segment_bucket', ['shop_id', 'segment', 'bucket'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pair_count_blobs', schema=None) as batch_op:
        batch_op.drop_index('ix_pair_count_blobs_shop_segment_bucket')
    op.drop_table('pair_count_blobs')
