"""covering indexes for the admin pages (segment sizes, members by revenue, prediction quadrants, tag sync)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:55:00

Measured by bench/bench_render.py (100k customers, 1M orders): the GROUP BY segment of the home page looked up every
customer row through the old (shop_id, segment) index; with the value columns in the index it is index-only.
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_stats_shop_segment')
        batch_op.create_index('ix_customer_stats_shop_segment_value',
                              ['shop_id', 'segment', 'net_revenue', 'orders_count'], unique=False)
    with op.batch_alter_table('customer_predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_predictions_shop_quadrant')
        batch_op.create_index('ix_customer_predictions_shop_quadrant_clv',
                              ['shop_id', 'value_risk_quadrant', 'clv_12m'], unique=False)
        batch_op.create_index('ix_customer_predictions_shop_clv', ['shop_id', 'clv_12m'], unique=False)
    with op.batch_alter_table('tag_sync_state', schema=None) as batch_op:
        batch_op.create_index('ix_tag_sync_state_shop_status', ['shop_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tag_sync_state', schema=None) as batch_op:
        batch_op.drop_index('ix_tag_sync_state_shop_status')
    with op.batch_alter_table('customer_predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_predictions_shop_clv')
        batch_op.drop_index('ix_customer_predictions_shop_quadrant_clv')
        batch_op.create_index('ix_customer_predictions_shop_quadrant', ['shop_id', 'value_risk_quadrant'],
                              unique=False)
    with op.batch_alter_table('customer_stats', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_stats_shop_segment_value')
        batch_op.create_index('ix_customer_stats_shop_segment', ['shop_id', 'segment'], unique=False)
