-- Kept in step with ../sqlite/20261128000170_sent_reminders_subject.sql.
--
-- A subject's reminders by time: a reminder is not claimed within a cool-down of the
-- subject's last one (`Store::claim_reminder`), so changing a due date again and again
-- cannot queue a reminder each time.
CREATE INDEX idx_sent_reminders_subject ON sent_reminders (subject_id, created_at);
