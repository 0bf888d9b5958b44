"""member-table indexes: customer id in the segment index, prediction values by customer, segment moves

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:40:00

bench/bench_render.py (100k customers, 1M orders): a big segment's members sorted by CLV / P(alive) looked up every
member row; with the customer id in the segment index and the prediction values in a (shop, customer) index the
join is index-only. Moves in / out of a segment read by (to|from segment, time).
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_stats_shop_segment_value')
        batch_op.create_index('ix_customer_stats_shop_segment_members',
                              ['shop_id', 'segment', 'net_revenue', 'orders_count', 'customer_id'], unique=False)
    with op.batch_alter_table('customer_predictions', schema=None) as batch_op:
        batch_op.create_index('ix_customer_predictions_shop_customer_values',
                              ['shop_id', 'customer_id', 'clv_12m', 'p_alive'], unique=False)
    with op.batch_alter_table('segment_changes', schema=None) as batch_op:
        batch_op.create_index('ix_segment_changes_shop_to_time', ['shop_id', 'to_segment', 'changed_at'], unique=False)
        batch_op.create_index('ix_segment_changes_shop_from_time', ['shop_id', 'from_segment', 'changed_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('segment_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_changes_shop_from_time')
        batch_op.drop_index('ix_segment_changes_shop_to_time')
    with op.batch_alter_table('customer_predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_predictions_shop_customer_values')
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_stats_shop_segment_members')
        batch_op.create_index('ix_customer_stats_shop_segment_value',
                              ['shop_id', 'segment', 'net_revenue', 'orders_count'], unique=False)
