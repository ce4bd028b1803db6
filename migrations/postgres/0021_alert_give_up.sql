-- Alert retention (issue #26): a notification still not delivered
-- `[retention] undelivered_notifications_days` after its event is given
-- up: never tried again, its body (which holds URLs when its route opted
-- in) dropped. Old alerts whose notifications are all settled (delivered
-- or given up) are deleted with them after `[retention] alerts_days`.
ALTER TABLE alert_deliveries ADD COLUMN given_up_at_ms BIGINT;
CREATE INDEX alerts_raised ON alerts (raised_at_ms);
