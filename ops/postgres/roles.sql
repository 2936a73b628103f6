-- Least privilege for handoff on PostgreSQL: one role owns the schema and
-- runs migrations, another (the server's) may only read and write rows.
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

\if :{?migrator}
\else
  \set migrator handoff_migrator
\endif
\if :{?app}
\else
  \set app handoff_app
\endif

CREATE ROLE :"migrator" LOGIN PASSWORD :migrator_password;
CREATE ROLE :"app" LOGIN PASSWORD :app_password;

-- Nobody but the migrator creates objects in the schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator";
GRANT USAGE ON SCHEMA public TO :"app";
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'migrator') \gexec

-- Rows only: no DDL, no TRUNCATE, no REFERENCES/TRIGGER rights; this
-- covers tables the migrator creates now and later.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";
-- Tables that already exist (if the migrator ran before this script).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app";
