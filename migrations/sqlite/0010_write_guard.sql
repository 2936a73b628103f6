-- A handoff is accepted once, also when two processes race to accept it:
-- the second UPDATE aborts its whole unit, which the writer sees as a lost
-- race (`write_conflict`, see `classify_write` in src/storage/sqlite.rs).
CREATE TRIGGER handoff_accepted_once
BEFORE UPDATE OF status ON handoffs
WHEN OLD.status <> 'pending' AND NEW.status = 'accepted'
BEGIN
    SELECT RAISE(ABORT, 'write_conflict: handoff already accepted');
END;
