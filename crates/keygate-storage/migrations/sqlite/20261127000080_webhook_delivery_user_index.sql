-- The webhook test-event rate limit counts a user's recent deliveries of one event type.
CREATE INDEX idx_webhook_deliveries_user_type ON webhook_deliveries (user_id, event_type, created_at);
