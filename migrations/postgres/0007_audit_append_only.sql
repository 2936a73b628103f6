-- The audit log is append-only. The application role of
-- ops/postgres/roles.sql may only SELECT and INSERT it, and only SELECT the
-- migration history; as default privileges give it UPDATE and DELETE on
-- every table the migrator creates, this migration (run by the owner)
-- takes those rights back from every role but the owner, whenever
-- roles.sql ran. The trigger refuses UPDATE, DELETE and TRUNCATE to every
-- role, the owner included, unless the owner first disables it; what
-- catches that is the keyed chain and its anchor (`handoff audit verify`).

CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_change
BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM PUBLIC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT c.relname, a.grantee::regrole::text AS role
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid IN ('audit_log'::regclass, '_sqlx_migrations'::regclass)
          AND a.grantee <> 0
          AND a.grantee <> c.relowner
    LOOP
        IF g.relname = 'audit_log' THEN
            EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %s', g.role);
        ELSE
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM %s', g.role);
        END IF;
    END LOOP;
END
$$;
