"""sequential rule counts by month bucket, with their denominators

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:40:00

`sequential_pair_deltas` held nothing yet (no writer before this revision), so it is recreated with the
`bucket` key rather than altered.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table('sequential_pair_deltas')
    op.create_table('sequential_pair_deltas',
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('bucket', sa.String(length=7), nullable=False),
    sa.Column('item_a', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('item_b', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('shop_id', 'bucket', 'item_a', 'item_b')
    )
    op.create_table('sequential_item_deltas',
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('bucket', sa.String(length=7), nullable=False),
    sa.Column('item_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('shop_id', 'bucket', 'item_id')
    )


def downgrade() -> None:
    op.drop_table('sequential_item_deltas')
    op.drop_table('sequential_pair_deltas')
    op.create_table('sequential_pair_deltas',
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('item_a', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('item_b', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('shop_id', 'item_a', 'item_b')
    )
