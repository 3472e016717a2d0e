-- Least-privilege roles for veil. Run as the owner of the database objects,
-- after `veil migrate` has created them:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql \
--        -v pipeline=veil_pipeline -v analyst=veil_analyst -v revealer=veil_revealer
--
-- The roles are created NOLOGIN; give each a login separately (a password,
-- or IAM database authentication on RDS): ALTER ROLE veil_pipeline LOGIN ...
--
--   pipeline  what `veil run` needs: insert rows, claim ledger ids, insert
--             quarantine entries. It cannot read user_logins or the
--             quarantine, and cannot touch the audit.
--   analyst   reads user_logins (masked values only). Nothing in schema veil.
--   revealer  what `veil reveal` needs: read user_logins and the quarantine,
--             append to the audit. Revealing also needs the keyring (and KMS
--             Decrypt on its KMS key): the database role alone reveals nothing.
-- Nobody but the owner may UPDATE or DELETE veil.audit. `veil rekey` and
-- `veil migrate` run as the owner.

SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(ARRAY[:'pipeline', :'analyst', :'revealer']) r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

-- pipeline
GRANT USAGE ON SCHEMA veil TO :"pipeline";
GRANT INSERT ON user_logins TO :"pipeline";
-- SELECT on the key: ON CONFLICT (after a redelivery) and RETURNING read it.
GRANT INSERT, SELECT (sent_ms, message_id) ON veil.ledger TO :"pipeline";
-- The first ledger layout, kept by `veil migrate` after an upgrade, is checked too.
SELECT format('GRANT SELECT (message_id) ON veil.ledger_v1 TO %I', :'pipeline')
 WHERE to_regclass('veil.ledger_v1') IS NOT NULL \gexec
GRANT INSERT ON veil.quarantine TO :"pipeline";

-- analyst
GRANT SELECT ON user_logins TO :"analyst";

-- revealer
GRANT USAGE ON SCHEMA veil TO :"revealer";
GRANT SELECT ON user_logins, veil.quarantine TO :"revealer";
GRANT INSERT ON veil.audit TO :"revealer";
GRANT USAGE ON SEQUENCE veil.audit_id_seq TO :"revealer";
