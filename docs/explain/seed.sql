-- Realistic volume for EXPLAIN (docs/deploy.md, "Indexes and query plans"): a week of
-- traffic on a migrated, empty database.
--   otps          100,000 codes over 40,000 addresses, the last 7 days; 60 % used, half of the
--                 rest replaced by a newer code
--   email_outbox  one mail per code: 97.5 % sent, 1.5 % expired, 0.5 % failed, 0.5 % pending
--                 (300 due now, queued over the last 2 minutes; 200 waiting for a retry)
--   audit_events  100,000 events over 90 days
INSERT INTO otps (email, purpose, code_hash, expires_at, used, used_at, retired_at, attempts,
                  created_at, challenge_id)
SELECT 'user' || (i % 40000) || '@example.com',
       (ARRAY['email_verification', 'email_verification', 'email_verification',
              'email_verification', 'email_verification', 'email_verification',
              'email_verification', 'login', 'password_reset', 'password_reset'])[1 + i % 10],
       md5(i::text) || md5((i + 1)::text),
       t + interval '5 minutes',
       u, CASE WHEN u THEN t + interval '1 minute' END,
       CASE WHEN NOT u AND i % 2 = 0 THEN t + interval '2 minutes' END,
       i % 3, t,
       CASE WHEN i % 10 = 7 THEN md5('c' || i) END
FROM (SELECT i, now() - random() * interval '7 days' AS t, random() < 0.6 AS u
      FROM generate_series(1, 100000) AS i) AS s;

INSERT INTO email_outbox (recipient, kind, otp_id, subject, html_body, text_body, status,
                          attempts, next_attempt_at, send_before, last_error,
                          provider_message_id, idempotency_key, created_at, updated_at, sent_at)
SELECT o.email, o.purpose, o.id, 'Your TaxEase code',
       CASE WHEN st IN ('pending', 'failed') THEN '<html>...</html>' END,
       CASE WHEN st IN ('pending', 'failed') THEN 'Your code ...' END,
       st,
       CASE WHEN retry THEN 2 WHEN st = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN retry THEN now() + random() * interval '1 minute'
            WHEN st = 'pending' THEN now() - random() * interval '2 minutes'
            ELSE o.created_at END,
       CASE WHEN st = 'pending' THEN now() + interval '3 minutes'
            ELSE o.created_at + interval '5 minutes' END,
       CASE WHEN st = 'failed' THEN 'MessageRejected: Email address is not verified.'
            WHEN retry THEN 'TooManyRequestsException: Maximum sending rate exceeded.' END,
       CASE WHEN st = 'sent' THEN md5('m' || o.id) END,
       md5('k' || o.id),
       CASE WHEN st = 'pending' THEN now() - interval '2 minutes' ELSE o.created_at END,
       o.created_at + interval '1 second',
       CASE WHEN st = 'sent' THEN o.created_at + interval '1 second' END
FROM (SELECT o.*,
             CASE WHEN o.id % 200 = 0 THEN 'pending' WHEN o.id % 200 = 1 THEN 'failed'
                  WHEN o.id % 200 IN (2, 3, 4) THEN 'expired' ELSE 'sent' END AS st,
             o.id % 200 = 0 AND o.id % 1000 >= 600 AS retry
      FROM otps AS o) AS o;

INSERT INTO audit_events (occurred_at, event, purpose, email_hash, ip, outcome)
SELECT now() - random() * interval '90 days', 'code_issued', 'email_verification',
       md5('e' || (i % 40000)) || md5('f' || (i % 40000)), '203.0.113.' || (i % 250), 'ok'
FROM generate_series(1, 100000) AS i;

ANALYZE;

SELECT status, count(*) AS rows,
       count(*) FILTER (WHERE next_attempt_at <= now()) AS due_now
FROM email_outbox GROUP BY status ORDER BY status;
