-- What a sandbox's timeout does: `release` it (the default), or `pause` it
-- (E2B's autoPause; a paused sandbox whose retention passes is released).
ALTER TABLE sandboxes ADD COLUMN on_timeout TEXT NOT NULL DEFAULT 'release';
