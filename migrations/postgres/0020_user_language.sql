-- A person's own console language (issue #23): a catalogue tag such as
-- `fr`; NULL lets the browser's Accept-Language decide.
ALTER TABLE users ADD COLUMN language TEXT;
