-- The audit log is append-only: no statement of the server changes or
-- removes a row, and these triggers refuse any that tries (an injected
-- statement, a bug, a tool pointed at the file). Whoever owns the file can
-- drop them; what catches that is the keyed chain and its anchor
-- (`handoff audit verify`, actors/src/audit.rs).
CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
