//! What the `handoff://analytics/{type}` resources read from the database:
//! aggregates of one tenant's rows, computed on demand (no rollup tables),
//! so they are exact at the moment of the read. Each adapter implements the
//! queries (`sqlite/analytics.rs`, `postgres/analytics.rs`).

use serde::Serialize;

/// A label and how many rows carry it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counted {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionAnalytics {
    pub total: i64,
    pub by_status: Vec<Counted>,
    /// `YYYY-MM-DD` (UTC) → sessions created that day, days since `since`.
    pub created_per_day: Vec<Counted>,
    /// Context entries across the tenant's sessions.
    pub entries: i64,
    /// Registering agents with the most sessions (at most `TOP`).
    pub top_agents: Vec<Counted>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandoffAnalytics {
    pub total: i64,
    pub by_status: Vec<Counted>,
    pub by_request_type: Vec<Counted>,
    /// Target agents with the most handoffs (at most `TOP`).
    pub by_target_agent: Vec<Counted>,
    /// created → accepted, in milliseconds, of every accepted handoff,
    /// ascending.
    pub accept_latencies_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeStats {
    pub context_type: String,
    pub count: i64,
    /// UTF-8 bytes of content.
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextAnalytics {
    pub by_type: Vec<TypeStats>,
    /// `YYYY-MM-DD` (UTC) → entries created that day, days since `since`.
    pub per_day: Vec<Counted>,
}

/// How many agents the "top" lists keep.
pub const TOP: i64 = 10;

/// Tenant isolation of the read paths that aggregate or search across
/// sessions (stdio has one tenant, so the integration tests cannot show
/// it): two tenants with the same session key, each seeing only its own.
/// Run by each adapter's tests.
#[cfg(test)]
pub(crate) mod isolation {
    use std::sync::Arc;

    use handoff_actors::model::summary::Summary;
    use handoff_actors::model::{
        now, CommitUnit, ContextType, EntryRow, HandoffRow, HandoffType, SessionRow, SessionStatus,
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::super::Database;

    fn unit(tenant: &str, words: &[&str], handoffs: usize) -> CommitUnit {
        let id = Uuid::now_v7();
        let t = now();
        CommitUnit {
            session_is_new: true,
            session: Some(SessionRow {
                id,
                tenant: Arc::from(tenant),
                session_key: Arc::from("shared-key"),
                agent_from: format!("{tenant}-agent"),
                status: SessionStatus::Active,
                metadata: None,
                created_at: t,
                last_activity_at: t,
                last_seq: words.len() as i64,
                summary: Summary::with_participant("x"),
            }),
            entries: words
                .iter()
                .enumerate()
                .map(|(i, w)| EntryRow {
                    session_id: id,
                    seq: i as i64 + 1,
                    id: Uuid::now_v7(),
                    context_type: ContextType::Message,
                    content: format!("common {w}"),
                    metadata: None,
                    created_at: t,
                })
                .collect(),
            handoffs: (0..handoffs)
                .map(|_| HandoffRow {
                    id: Uuid::now_v7(),
                    tenant: Arc::from(tenant),
                    session_id: id,
                    session_key: Arc::from("shared-key"),
                    source_agent: format!("{tenant}-agent"),
                    target_agent: "target".into(),
                    request_type: HandoffType::ContextTransfer,
                    status: "pending".into(),
                    request_data: None,
                    context_summary: json!({}),
                    context_entries: 0,
                    created_at: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    pub(crate) async fn check(db: &dyn Database) {
        db.commit(&[
            &unit("t1", &["alpha", "beta"], 1),
            &unit("t2", &["gamma"], 2),
        ])
        .await
        .unwrap();
        let since = "2000-01-01T00:00:00.000000Z";
        for (tenant, entries, handoffs, own, other) in [
            ("t1", 2, 1, "alpha", "gamma"),
            ("t2", 1, 2, "gamma", "alpha"),
        ] {
            let s = db.session_analytics(tenant, since).await.unwrap();
            assert_eq!((s.total, s.entries), (1, entries), "{tenant}");
            assert_eq!(s.top_agents[0].name, format!("{tenant}-agent"));
            let h = db.handoff_analytics(tenant).await.unwrap();
            assert_eq!(h.total, handoffs, "{tenant}");
            let c = db.context_analytics(tenant, since).await.unwrap();
            assert_eq!(c.by_type[0].count, entries, "{tenant}");
            let hits = db.search(tenant, "common", None, None, 10).await.unwrap();
            assert_eq!(hits.len() as i64, entries, "{tenant}");
            assert_eq!(
                db.search(tenant, own, None, None, 10).await.unwrap().len(),
                1
            );
            assert!(db
                .search(tenant, other, None, None, 10)
                .await
                .unwrap()
                .is_empty());
            let hits = db
                .search(tenant, "common", Some("shared-key"), None, 10)
                .await
                .unwrap();
            assert_eq!(hits.len() as i64, entries, "{tenant}");
        }
        let s = db.session_analytics("t3", since).await.unwrap();
        assert_eq!((s.total, s.entries), (0, 0));
        assert!(db
            .search("t3", "common", None, None, 10)
            .await
            .unwrap()
            .is_empty());
    }
}
