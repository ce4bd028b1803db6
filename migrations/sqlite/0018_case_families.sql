-- Content hosted in several countries that lead to different hotlines is
-- sent as one report per hotline, linked as one case family (issue #24):
-- the family id the origin signed into each report's route, stored with
-- each case to list and find its family (scoped by origin).
ALTER TABLE reports ADD COLUMN family TEXT;
CREATE INDEX reports_by_family ON reports (origin, family) WHERE family IS NOT NULL;
