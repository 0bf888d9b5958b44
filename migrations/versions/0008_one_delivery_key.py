"""webhook_deliveries: one unique key (shop_domain, event_id, webhook_id) instead of two random-key indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 12:50:00

The intake checks two things per delivery: a retry of a recorded delivery (same X-Shopify-Webhook-Id) and another
delivery of a recorded event (same X-Shopify-Event-Id). It had an index for each: the unique constraint
(shop_domain, webhook_id) and ix_webhook_deliveries_event (shop_domain, topic, event_id). Both keys are random
(UUIDs), so every recorded row dirtied a leaf page of each: one 4 KB WAL frame, and a checkpoint copy, per index
per row. One unique key (shop_domain, event_id, webhook_id) serves both: a retry carries the same event id and
webhook id (the INSERT's ON CONFLICT), and the (shop_domain, event_id) prefix finds an event's deliveries.
Measured on the intake's insert (batches of 8, ~10.7 KB bodies, checkpoint every 200 rows): 91-94 -> 60-63 us of
CPU per row.

event_id becomes NOT NULL with '' for "no event id": in a unique key NULLs never conflict, so a retry of a
delivery without X-Shopify-Event-Id would be stored twice.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE webhook_deliveries SET event_id = '' WHERE event_id IS NULL")
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_event')
        batch_op.drop_constraint('uq_webhook_deliveries_shop_webhook', type_='unique')
        batch_op.alter_column('event_id', existing_type=sa.String(length=64), nullable=False, server_default='')
        batch_op.create_unique_constraint('uq_webhook_deliveries_delivery', ['shop_domain', 'event_id', 'webhook_id'])


def downgrade() -> None:
    # Fails if two recorded deliveries share a webhook id under different event ids (possible only after upgrade).
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('uq_webhook_deliveries_delivery', type_='unique')
        batch_op.alter_column('event_id', existing_type=sa.String(length=64), nullable=True, server_default=None)
        batch_op.create_unique_constraint('uq_webhook_deliveries_shop_webhook', ['shop_domain', 'webhook_id'])
        batch_op.create_index('ix_webhook_deliveries_event', ['shop_domain', 'topic', 'event_id'], unique=False)
    op.execute("UPDATE webhook_deliveries SET event_id = NULL WHERE event_id = ''")
