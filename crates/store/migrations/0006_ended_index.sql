-- Purging ended rows finds them by end time (they pile up for the retention).
CREATE INDEX sandboxes_ended ON sandboxes(state, ended_ms);
