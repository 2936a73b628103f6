-- Least privilege for handoff on PostgreSQL: one role owns the schema and
-- runs migrations, another (the server's) may only read and write rows --
-- and of the audit log and the migration history, only what it needs:
-- audit_log SELECT and INSERT (append-only), _sqlx_migrations SELECT (the
-- server checks that every migration is applied).
--
-- Run once as a superuser, in the application database:
--   psql "postgres://postgres@db-host/handoff" \
--        -v migrator_password="'...'" -v app_password="'...'" \
--        -f ops/postgres/roles.sql
-- Then:
--   HANDOFF_DATABASE_URL=postgres://handoff_migrator:...@db-host/handoff handoff migrate
--   HANDOFF_DATABASE_URL=postgres://handoff_app:...@db-host/handoff \
--   HANDOFF_MIGRATE_ON_START=false handoff serve
--
-- Role names can be changed with -v migrator=... -v app=... (defaults below).
-- Running it again (after an upgrade) keeps the roles, sets the passwords
-- given, and grants and revokes again.

\if :{?migrator}
\else
  \set migrator handoff_migrator
\endif
\if :{?app}
\else
  \set app handoff_app
\endif

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'migrator') AS new_migrator,
       NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app') AS new_app \gset
\if :new_migrator
  CREATE ROLE :"migrator" LOGIN PASSWORD :migrator_password;
\else
  ALTER ROLE :"migrator" LOGIN PASSWORD :migrator_password;
\endif
\if :new_app
  CREATE ROLE :"app" LOGIN PASSWORD :app_password;
\else
  ALTER ROLE :"app" LOGIN PASSWORD :app_password;
\endif

-- Nobody but the migrator creates objects in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator";
GRANT USAGE ON SCHEMA public TO :"app";
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'migrator') \gexec

-- Rows only: no DDL, no TRUNCATE, no REFERENCES/TRIGGER rights; this
-- covers tables the migrator creates now and later. Default privileges
-- cannot leave out one table: when the migrator creates the tables after
-- this script ran, migration 0007 (audit_append_only) takes back UPDATE and
-- DELETE on audit_log, and every write to _sqlx_migrations.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";
-- Tables that already exist (if the migrator ran before this script).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app";

-- Append-only audit log, read-only migration history (when they exist:
-- the grants above just gave the app role more on them).
SELECT format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM %I', :'app')
WHERE to_regclass('public.audit_log') IS NOT NULL \gexec
SELECT format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM %I', :'app')
WHERE to_regclass('public._sqlx_migrations') IS NOT NULL \gexec
