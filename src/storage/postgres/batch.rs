//! The batch statement: one round trip writes a whole batch of units
//! (data-modifying CTEs fed by `unnest` of array parameters), and how a
//! batch is turned into its columns.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use handoff_actors::model::{json_string, CommitUnit, EntryRow, SessionRow};
use handoff_actors::StoreError;
use sqlx::{Executor, PgConnection, Row};
use uuid::Uuid;

use super::{classify, classify_write};
use crate::storage::json_text;

/// Which groups of rows one execution of the batch statement writes.
/// Each group is a CTE that PostgreSQL sets up (opens the table and its
/// indexes, builds the executor nodes) on every execution, rows or not, and
/// deletions, acceptances and lifecycle events are rare. So the statement
/// is composed of the groups present, one text per shape (each prepared
/// once per connection and cached); parameters of absent groups are still
/// bound, empty, so numbering never changes. Measured with `ops/bench` at
/// concurrency 32: PostgreSQL's CPU per call ÷1.06 against one statement
/// with every group.
#[derive(Clone, Copy)]
struct Shape(u8);

impl Shape {
    const DELETES: u8 = 1;
    const SESSIONS: u8 = 2;
    const ENTRIES: u8 = 4;
    const HANDOFFS: u8 = 8;
    const ACCEPTS: u8 = 16;
    const AUDIT: u8 = 32;
    const LIFECYCLE: u8 = 64;
    const COUNT: usize = 128;

    fn has(self, group: u8) -> bool {
        self.0 & group != 0
    }
}

/// The batch statement for `shape` (see `BATCH_CTES` for what it does).
fn batch_sql(shape: Shape) -> &'static str {
    static STATEMENTS: [OnceLock<String>; Shape::COUNT] = [const { OnceLock::new() }; Shape::COUNT];
    STATEMENTS[shape.0 as usize].get_or_init(|| {
        let mut ctes = Vec::new();
        let gated =
            shape.has(Shape::ENTRIES) || shape.has(Shape::HANDOFFS) || shape.has(Shape::ACCEPTS);
        if gated {
            ctes.push(if shape.has(Shape::ACCEPTS) {
                HELD_WITH_ACCEPTS
            } else {
                HELD
            });
        }
        for (group, cte) in BATCH_CTES {
            if shape.has(group) {
                ctes.push(cte);
            } else if group == Shape::SESSIONS {
                // Later CTEs read `lost`: it must come before them.
                ctes.push(NO_LOST);
            }
        }
        let ctes: Vec<String> = ctes
            .into_iter()
            .map(|c| c.replace(AFTER_HELD, if gated { GATE } else { "" }))
            .collect();
        // Without acceptances there is no count to check (and a constant
        // count would let the planner evaluate the failing cast up front).
        let (check, from) = if shape.has(Shape::ACCEPTS) {
            (ACCEPTS_CHECK, "(SELECT count(*) AS n FROM accepted) c, ")
        } else {
            ("", "")
        };
        format!(
            "WITH {}\nSELECT CASE {check}{LOST_CHECK} ELSE 1 END AS ok, lost\n\
             FROM {from}(SELECT array_agg(id) AS lost FROM lost) l",
            ctes.join(",\n")
        )
    })
}

/// The whole batch as one statement. Parameters are column arrays, one
/// group per table; `unnest` turns each group back into rows. The
/// data-modifying CTEs all run to completion whether or not the final
/// SELECT reads them, inside the statement's one (implicit) transaction;
/// foreign keys are checked at the end of the statement, so entries may
/// reference a session row inserted beside them. Each CTE is listed with
/// the `Shape` group it belongs to (see `batch_sql`).
///
/// The sub-statements see one snapshot and run in no defined order, unlike
/// the SQLite adapter's statement sequence (delete, upsert, insert…). That is
/// only observable when two of them touch the same row, which a batch never
/// does: a session has at most one unit in flight, a deletion travels alone
/// in its unit, and an accepted handoff was committed by an earlier unit.
/// Session rows with the same id are folded before binding (see
/// `Columns::rows`), because an upsert may not touch a row twice.
///
/// Several replicas (or processes) may write one session: sequence numbers
/// are allocated optimistically by each process's session actor, in memory,
/// and the database refuses the loser of a race. No lock is held across
/// replicas and the common case (one writer) pays nothing extra:
/// - `UNIQUE (session_id, seq)`: a writer whose numbers were taken fails;
///   since it only ever numbers from what it last read, a number it may use
///   is exactly the next one, so numbers stay gap-free and unique;
/// - a new session row is an INSERT that `UNIQUE (tenant, session_key)`
///   turns into nothing for the second registration of a key; that unit's
///   rows are left out and its session id returned (`lost`), so a session
///   actor may register a key it has not looked up (the common case: the
///   key is new) and reload only when it lost — without failing the rest
///   of the batch. `Store::commit` (all or nothing) aborts instead;
/// - a checkpoint only UPDATEs (guarded by `last_seq`), so it never
///   resurrects a session deleted meanwhile; entries for it fail their
///   foreign key;
/// - an acceptance must find its handoff still `pending`; the final SELECT
///   raises `write_conflict` when fewer rows than expected were accepted.
///
/// Any of these aborts the whole statement; the adapter reports
/// `StoreError::Conflict`, the persistence actor retries the batch unit by
/// unit, and the losing session actor reloads and applies its operations
/// again (actors/src/session.rs).
const BATCH_CTES: [(u8, &str); 7] = [
    (
        Shape::DELETES,
        "deleted AS (
    DELETE FROM sessions s USING unnest($1::uuid[]) AS d(id) WHERE s.id = d.id
)",
    ),
    (
        Shape::SESSIONS,
        "rows AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::timestamptz[], $10::int8[],
                         $11::text[], $51::bool[])
         AS t(id, tenant, session_key, agent_from, status, metadata,
              created_at, last_activity_at, last_seq, summary, fresh)
),
registered AS (
    INSERT INTO sessions (id, tenant, session_key, agent_from, status, metadata,
                          created_at, last_activity_at, last_seq, summary)
    SELECT id, tenant, session_key, agent_from, status, metadata::json,
           created_at, last_activity_at, last_seq, summary::json
    FROM rows WHERE fresh
    ON CONFLICT (tenant, session_key) DO NOTHING
    RETURNING id
),
-- New sessions whose key another writer registered first: nothing of them
-- is written (their rows below are filtered out), and the final SELECT
-- names them, or aborts the statement when $54 (partial) is false.
lost AS (
    SELECT id FROM rows WHERE fresh EXCEPT SELECT id FROM registered
),
checkpoints AS (
    UPDATE sessions s SET agent_from = t.agent_from, status = t.status,
        metadata = t.metadata::json, last_activity_at = t.last_activity_at,
        last_seq = t.last_seq, summary = t.summary::json
    FROM rows t
    WHERE NOT t.fresh AND s.id = t.id AND t.last_seq >= s.last_seq
)",
    ),
    (
        Shape::ENTRIES,
        "entries AS (
    INSERT INTO context_entries (session_id, seq, id, context_type, content, metadata,
                                 created_at, search)
    SELECT session_id, seq, id, context_type, content, metadata::json, created_at,
           search
    FROM unnest($12::uuid[], $13::int8[], $14::uuid[], $15::text[], $16::bytea[],
                $17::text[], $18::timestamptz[], $53::tsvector[])
         AS t(session_id, seq, id, context_type, content, metadata, created_at, search)
    WHERE t.session_id NOT IN (SELECT id FROM lost)/*after held*/
)",
    ),
    (
        Shape::HANDOFFS,
        "new_handoffs AS (
    INSERT INTO handoffs (id, tenant, session_id, session_key, source_agent, target_agent,
                          request_type, status, request_data, context_summary,
                          context_entries, created_at)
    SELECT id, tenant, session_id, session_key, source_agent, target_agent,
           request_type, status, request_data::json, context_summary::json,
           context_entries, created_at
    FROM unnest($19::uuid[], $20::text[], $21::uuid[], $22::text[], $23::text[],
                $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
                $29::int8[], $30::timestamptz[])
         AS t(id, tenant, session_id, session_key, source_agent, target_agent,
              request_type, status, request_data, context_summary, context_entries,
              created_at)
    WHERE t.session_id NOT IN (SELECT id FROM lost)/*after held*/
)",
    ),
    (
        Shape::ACCEPTS,
        "accepted AS (
    UPDATE handoffs h SET status = 'accepted', accepted_at = a.at, accepted_by = a.agent
    FROM unnest($31::uuid[], $32::text[], $33::timestamptz[]) AS a(id, agent, at)
    WHERE h.id = a.id AND h.status = 'pending'/*after held*/
    RETURNING 1
)",
    ),
    (
        Shape::AUDIT,
        "audit AS (
    INSERT INTO audit_log (seq, ts, tenant, action, actor, subject_hash, details,
                           prev_hash, hash)
    SELECT * FROM unnest($34::int8[], $35::text[], $36::text[], $37::text[], $38::text[],
                         $39::text[], $40::text[], $41::text[], $42::text[])
)",
    ),
    (
        Shape::LIFECYCLE,
        "lifecycle AS (
    INSERT INTO lifecycle_events (id, tenant, session_id, session_key, from_status,
                                  to_status, at, reason)
    SELECT * FROM unnest($43::uuid[], $44::text[], $45::uuid[], $46::text[], $47::text[],
                         $48::text[], $49::timestamptz[], $50::text[])
         AS t(id, tenant, session_id, session_key, from_status, to_status, at, reason)
    WHERE t.session_id IS NULL OR t.session_id NOT IN (SELECT id FROM lost)
)",
    ),
];

/// Hot sessions (`Store::lock_session`) hold their row `FOR UPDATE` while
/// they read, number and write. An optimistic batch must meet that lock
/// before it inserts anything for the session: the foreign key checks take
/// `FOR KEY SHARE` too, but only at the end of the statement, after the
/// rows (and their `UNIQUE (session_id, seq)` entries) are in — the locked
/// unit would then wait for the batch's seq, the batch for the lock, and
/// PostgreSQL would break the deadlock after a second. So `held` takes
/// `FOR KEY SHARE` on the rows of the batch's sessions first: entries,
/// handoffs and acceptances wait on it through `GATE`, an uncorrelated
/// subquery evaluated once before their first row. `FOR KEY SHARE` does not
/// conflict with itself: optimistic batches never wait for each other.
/// Sessions the batch registers have no row yet and are not held (nobody
/// else knows their id).
const HELD: &str = "held AS (
    SELECT id FROM sessions WHERE id = ANY($12::uuid[] || $21::uuid[]) FOR KEY SHARE
)";
const HELD_WITH_ACCEPTS: &str = "held AS (
    SELECT id FROM sessions
    WHERE id = ANY($12::uuid[] || $21::uuid[]
                   || ARRAY(SELECT session_id FROM handoffs WHERE id = ANY($31::uuid[])))
    FOR KEY SHARE
)";
const AFTER_HELD: &str = "/*after held*/";
const GATE: &str = " AND (SELECT count(*) FROM held) >= 0";

/// `lost` of a batch without session rows: none.
const NO_LOST: &str = "lost AS (SELECT NULL::uuid AS id WHERE false)";

/// The final SELECT's casts fail (aborting the statement) only when an
/// acceptance found its handoff no longer pending, or a registration lost
/// and the caller wants all or nothing; they depend on the CTEs, so they
/// are not folded early.
const ACCEPTS_CHECK: &str = "WHEN n <> $52 THEN ('write_conflict ' || n)::int ";
const LOST_CHECK: &str = "WHEN NOT $54 AND lost IS NOT NULL \
     THEN ('write_conflict registrations ' || cardinality(lost))::int";

/// One execution's parameters, column by column.
#[derive(Default)]
struct Columns<'a> {
    deletes: Vec<Uuid>,
    // sessions
    s_id: Vec<Uuid>,
    s_tenant: Vec<&'a str>,
    s_key: Vec<&'a str>,
    s_agent: Vec<&'a str>,
    s_status: Vec<&'a str>,
    s_metadata: Vec<Option<String>>,
    s_created: Vec<DateTime<Utc>>,
    s_active: Vec<DateTime<Utc>>,
    s_last_seq: Vec<i64>,
    s_summary: Vec<String>,
    s_fresh: Vec<bool>,
    // context entries
    e_session: Vec<Uuid>,
    e_seq: Vec<i64>,
    e_id: Vec<Uuid>,
    e_type: Vec<&'a str>,
    e_content: Vec<&'a [u8]>,
    e_metadata: Vec<Option<String>>,
    e_created: Vec<DateTime<Utc>>,
    /// The search index's words (see `search_words`).
    e_search: Vec<crate::storage::search_words::TsVector>,
    // handoffs
    h_id: Vec<Uuid>,
    h_tenant: Vec<&'a str>,
    h_session: Vec<Uuid>,
    h_key: Vec<&'a str>,
    h_source: Vec<&'a str>,
    h_target: Vec<&'a str>,
    h_type: Vec<&'a str>,
    h_status: Vec<&'a str>,
    h_data: Vec<Option<String>>,
    h_summary: Vec<String>,
    h_entries: Vec<i64>,
    h_created: Vec<DateTime<Utc>>,
    // accepted handoffs
    a_id: Vec<Uuid>,
    a_agent: Vec<&'a str>,
    a_at: Vec<DateTime<Utc>>,
    // audit rows
    l_seq: Vec<i64>,
    l_ts: Vec<&'a str>,
    l_tenant: Vec<&'a str>,
    l_action: Vec<&'a str>,
    l_actor: Vec<Option<&'a str>>,
    l_subject: Vec<Option<&'a str>>,
    l_details: Vec<&'a str>,
    l_prev: Vec<&'a str>,
    l_hash: Vec<&'a str>,
    // lifecycle events
    v_id: Vec<Uuid>,
    v_tenant: Vec<&'a str>,
    v_session: Vec<Option<Uuid>>,
    v_key: Vec<Option<&'a str>>,
    v_from: Vec<&'a str>,
    v_to: Vec<&'a str>,
    v_at: Vec<DateTime<Utc>>,
    v_reason: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    /// Everything of the batch but its entries.
    fn rows(units: &[&'a CommitUnit]) -> Self {
        let mut c = Columns {
            deletes: units.iter().filter_map(|u| u.delete).collect(),
            ..Default::default()
        };

        // Sequential upserts guarded by `last_seq >=` leave the last row with
        // the highest last_seq; keep just that one per id.
        let mut sessions: Vec<(&SessionRow, bool)> = Vec::new();
        let mut at: HashMap<Uuid, usize> = HashMap::new();
        for u in units.iter().copied() {
            let Some(s) = u.session.as_ref() else {
                continue;
            };
            match at.get(&s.id) {
                Some(&i) => {
                    let fresh = sessions[i].1 || u.session_is_new;
                    if s.last_seq >= sessions[i].0.last_seq {
                        sessions[i].0 = s;
                    }
                    sessions[i].1 = fresh;
                }
                None => {
                    at.insert(s.id, sessions.len());
                    sessions.push((s, u.session_is_new));
                }
            }
        }
        for (s, fresh) in sessions {
            c.s_fresh.push(fresh);
            c.s_id.push(s.id);
            c.s_tenant.push(&s.tenant);
            c.s_key.push(&s.session_key);
            c.s_agent.push(&s.agent_from);
            c.s_status.push(s.status.as_str());
            c.s_metadata.push(json_text(&s.metadata));
            c.s_created.push(s.created_at);
            c.s_active.push(s.last_activity_at);
            c.s_last_seq.push(s.last_seq);
            c.s_summary
                .push(serde_json::to_string(&s.summary).unwrap_or_else(|_| "{}".into()));
        }

        for h in units.iter().copied().flat_map(|u| u.handoffs.iter()) {
            c.h_id.push(h.id);
            c.h_tenant.push(&h.tenant);
            c.h_session.push(h.session_id);
            c.h_key.push(&h.session_key);
            c.h_source.push(&h.source_agent);
            c.h_target.push(&h.target_agent);
            c.h_type.push(h.request_type.as_str());
            c.h_status.push(&h.status);
            c.h_data.push(json_text(&h.request_data));
            c.h_summary.push(json_string(&h.context_summary));
            c.h_entries.push(h.context_entries);
            c.h_created.push(h.created_at);
        }

        for a in units.iter().copied().flat_map(|u| u.accepts.iter()) {
            c.a_id.push(a.id);
            c.a_agent.push(&a.agent);
            c.a_at.push(a.at);
        }

        for a in units.iter().copied().flat_map(|u| u.audit.iter()) {
            c.l_seq.push(a.seq);
            c.l_ts.push(&a.ts);
            c.l_tenant.push(&a.tenant);
            c.l_action.push(&a.action);
            c.l_actor.push(a.actor.as_deref());
            c.l_subject.push(a.subject_hash.as_deref());
            c.l_details.push(&a.details);
            c.l_prev.push(&a.prev_hash);
            c.l_hash.push(&a.hash);
        }

        for e in units.iter().copied().flat_map(|u| u.lifecycle.iter()) {
            c.v_id.push(e.id);
            c.v_tenant.push(&e.tenant);
            c.v_session.push(e.session_id);
            c.v_key.push(e.session_key.as_deref());
            c.v_from.push(e.from.as_str());
            c.v_to.push(e.to.as_str());
            c.v_at.push(e.at);
            c.v_reason.push(&e.reason);
        }
        c
    }

    fn entry(&mut self, e: &'a EntryRow, metadata: Option<String>) {
        self.e_session.push(e.session_id);
        self.e_seq.push(e.seq);
        self.e_id.push(e.id);
        self.e_type.push(e.context_type.as_str());
        self.e_content.push(e.content.as_bytes());
        self.e_metadata.push(metadata);
        self.e_created.push(e.created_at);
        self.e_search
            .push(crate::storage::search_words::tsvector(&e.content));
    }

    /// The groups this execution writes.
    fn shape(&self) -> Shape {
        let groups = [
            (!self.deletes.is_empty(), Shape::DELETES),
            (!self.s_id.is_empty(), Shape::SESSIONS),
            (!self.e_session.is_empty(), Shape::ENTRIES),
            (!self.h_id.is_empty(), Shape::HANDOFFS),
            (!self.a_id.is_empty(), Shape::ACCEPTS),
            (!self.l_seq.is_empty(), Shape::AUDIT),
            (!self.v_id.is_empty(), Shape::LIFECYCLE),
        ];
        Shape(
            groups
                .iter()
                .filter(|(present, _)| *present)
                .map(|(_, g)| g)
                .sum(),
        )
    }

    /// Runs the statement; the ids of new sessions whose registration lost
    /// (only when `partial`: otherwise such a loss aborts it).
    async fn execute(
        self,
        conn: &mut PgConnection,
        partial: bool,
    ) -> Result<Vec<Uuid>, StoreError> {
        let accepts = self.a_id.len() as i64;
        let row = sqlx::query(batch_sql(self.shape()))
            .bind(self.deletes)
            .bind(self.s_id)
            .bind(self.s_tenant)
            .bind(self.s_key)
            .bind(self.s_agent)
            .bind(self.s_status)
            .bind(self.s_metadata)
            .bind(self.s_created)
            .bind(self.s_active)
            .bind(self.s_last_seq)
            .bind(self.s_summary)
            .bind(self.e_session)
            .bind(self.e_seq)
            .bind(self.e_id)
            .bind(self.e_type)
            .bind(self.e_content)
            .bind(self.e_metadata)
            .bind(self.e_created)
            .bind(self.h_id)
            .bind(self.h_tenant)
            .bind(self.h_session)
            .bind(self.h_key)
            .bind(self.h_source)
            .bind(self.h_target)
            .bind(self.h_type)
            .bind(self.h_status)
            .bind(self.h_data)
            .bind(self.h_summary)
            .bind(self.h_entries)
            .bind(self.h_created)
            .bind(self.a_id)
            .bind(self.a_agent)
            .bind(self.a_at)
            .bind(self.l_seq)
            .bind(self.l_ts)
            .bind(self.l_tenant)
            .bind(self.l_action)
            .bind(self.l_actor)
            .bind(self.l_subject)
            .bind(self.l_details)
            .bind(self.l_prev)
            .bind(self.l_hash)
            .bind(self.v_id)
            .bind(self.v_tenant)
            .bind(self.v_session)
            .bind(self.v_key)
            .bind(self.v_from)
            .bind(self.v_to)
            .bind(self.v_at)
            .bind(self.v_reason)
            .bind(self.s_fresh)
            .bind(accepts)
            .bind(self.e_search)
            .bind(partial)
            .fetch_one(&mut *conn)
            .await
            .map_err(classify_write)?;
        let lost: Option<Vec<Uuid>> = row
            .try_get("lost")
            .map_err(|e| StoreError::Rejected(format!("batch result: {e}")))?;
        Ok(lost.unwrap_or_default())
    }
}

/// One batch, all or nothing: one execution of the batch statement (one
/// round trip, implicit transaction) when its entries fit in
/// `chunk_bytes`, else `BEGIN`, one execution per chunk of entries (the
/// first also carrying the sessions, handoffs and audit rows), `COMMIT`. `in_transaction` tells the
/// caller whether a failure left an explicit transaction to roll back.
pub(super) async fn write_batch(
    conn: &mut PgConnection,
    units: &[&CommitUnit],
    chunk_bytes: usize,
    partial: bool,
    in_transaction: &mut bool,
    in_outer_transaction: bool,
) -> Result<Vec<Uuid>, StoreError> {
    let mut chunks = vec![Columns::rows(units)];
    let mut bytes = 0usize;
    for e in units.iter().copied().flat_map(|u| u.entries.iter()) {
        let metadata = json_text(&e.metadata);
        let size = e.content.len() + metadata.as_ref().map_or(0, String::len);
        if bytes > 0 && bytes + size > chunk_bytes {
            chunks.push(Columns::default());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("a chunk").entry(e, metadata);
    }
    if chunks.len() == 1 || in_outer_transaction {
        let mut lost = Vec::new();
        for chunk in chunks {
            lost.extend(chunk.execute(conn, partial).await?);
        }
        return Ok(lost);
    }
    if chunks.len() == 1 {
        return chunks
            .pop()
            .expect("one chunk")
            .execute(conn, partial)
            .await;
    }
    conn.execute(sqlx::raw_sql("BEGIN"))
        .await
        .map_err(classify)?;
    *in_transaction = true;
    // Sessions travel in the first chunk: a lost one is known there, and
    // its entries in later chunks fail their foreign key (the whole batch
    // is then retried unit by unit).
    let mut lost = Vec::new();
    for chunk in chunks {
        lost.extend(chunk.execute(conn, partial).await?);
    }
    conn.execute(sqlx::raw_sql("COMMIT"))
        .await
        .map_err(classify)?;
    *in_transaction = false;
    Ok(lost)
}
