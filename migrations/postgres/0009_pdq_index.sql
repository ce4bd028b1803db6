-- PDQ hashes are found again by multi-index hashing (report::content):
-- each stored `pdq:<64 hex>` key gets its 16 chunk keys
-- `pdqc:<chunk>:<4 hex>`, so near-duplicates are looked up through the
-- index instead of by comparing every stored hash.
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:0:' || substr(key, 5, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:1:' || substr(key, 9, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:2:' || substr(key, 13, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:3:' || substr(key, 17, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:4:' || substr(key, 21, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:5:' || substr(key, 25, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:6:' || substr(key, 29, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:7:' || substr(key, 33, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:8:' || substr(key, 37, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:9:' || substr(key, 41, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:a:' || substr(key, 45, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:b:' || substr(key, 49, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:c:' || substr(key, 53, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:d:' || substr(key, 57, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:e:' || substr(key, 61, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
INSERT INTO case_keys (key, report_seq)
    SELECT 'pdqc:f:' || substr(key, 65, 4), report_seq FROM case_keys
    WHERE key LIKE 'pdq:%' AND length(key) = 68
    ON CONFLICT DO NOTHING;
