//! The MCP server: turns protocol requests into tool and resource calls.
//! One instance per connection; each carries the connection's tenant.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use handoff_actors::changes::{Change, Changes};
use rmcp::model::{
    ResourceUpdatedNotificationParam, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::SubscriptionContext;
use tokio::sync::broadcast;

use handoff_actors::metrics::metrics;
use handoff_actors::{Core, ErrorCode, HandoffError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use uuid::Uuid;

use super::context::{Caller, Ctx};
use super::reply;
use super::resources;
use super::tools::Catalog;
use crate::config::Config;
use crate::logging::key_hash;
use crate::storage::Storage;

/// Resource subscriptions one connection may hold: each costs memory and
/// a check on every committed change.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

#[derive(Clone)]
pub struct HandoffServer {
    core: Core,
    storage: Storage,
    cfg: Arc<Config>,
    catalog: Arc<Catalog>,
    tenant: Arc<str>,
    caller: Caller,
    changes: Changes,
    /// Legacy `resources/subscribe` subscriptions of this connection:
    /// watch key → the URIs subscribed under it (as the client wrote them).
    subscriptions: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    /// Whether the task that forwards change notices is running.
    forwarding: Arc<AtomicBool>,
    /// The transport writes successful results' structured content from
    /// their text (see `reply`).
    structured_in_transport: bool,
    /// Over HTTP with API keys: the tenant of the first authenticated
    /// request of this connection. Later requests must be of the same
    /// tenant (a session id is not a credential that crosses tenants).
    bound: Arc<std::sync::OnceLock<Arc<str>>>,
}

impl HandoffServer {
    pub fn new(
        core: Core,
        storage: Storage,
        cfg: Arc<Config>,
        changes: Changes,
        tenant: &str,
        caller: Caller,
    ) -> Self {
        let catalog = Arc::new(Catalog::new(cfg.test_hooks));
        Self {
            core,
            storage,
            cfg,
            catalog,
            tenant: Arc::from(tenant),
            caller,
            changes,
            subscriptions: Default::default(),
            forwarding: Default::default(),
            structured_in_transport: false,
            bound: Default::default(),
        }
    }

    /// Where audit events go (the HTTP transport's auth failures).
    pub fn auditor(&self) -> handoff_actors::audit::Auditor {
        self.core.audit().clone()
    }

    /// For a transport that writes the structured content of results
    /// marked `reply::STRUCTURED_IS_TEXT` itself.
    pub fn with_structured_content_in_transport(mut self) -> Self {
        self.structured_in_transport = true;
        self
    }

    /// The URIs (of `uris`, by watch key) that a committed change touches.
    fn touched(&self, change: &Change, uris: &HashMap<String, HashSet<String>>) -> Vec<String> {
        if *change.tenant != *self.tenant() {
            return Vec::new();
        }
        resources::change_keys(change)
            .iter()
            .filter_map(|k| uris.get(k))
            .flatten()
            .cloned()
            .collect()
    }

    /// Forward change notices to a legacy-subscribed client until it leaves.
    fn start_forwarding(&self, peer: rmcp::Peer<RoleServer>) {
        if self.forwarding.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let mut rx = self.changes.subscribe();
        tokio::spawn(async move {
            loop {
                let change = match rx.recv().await {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "subscription notices lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let uris = {
                    let subs = me.subscriptions.lock().expect("subscriptions lock");
                    me.touched(&change, &subs)
                };
                for uri in uris {
                    let param = ResourceUpdatedNotificationParam::new(uri);
                    if peer.notify_resource_updated(param).await.is_err() {
                        return; // the connection is gone
                    }
                }
            }
        });
    }

    /// The same server for another connection (an HTTP session, or one
    /// stateless request): shared core, fresh per-connection state.
    pub fn for_new_connection(&self) -> Self {
        Self {
            subscriptions: Default::default(),
            forwarding: Default::default(),
            bound: Default::default(),
            ..self.clone()
        }
    }

    /// `handoff://health`, for the operators' listener.
    pub async fn health(&self) -> serde_json::Value {
        let mut ctx = self.ctx();
        ctx.caller.admin = true;
        resources::health(&ctx).await
    }

    /// The connection's tenant: bound by its first authenticated request,
    /// else the transport's (`local` on stdio).
    fn tenant(&self) -> Arc<str> {
        self.bound
            .get()
            .cloned()
            .unwrap_or_else(|| self.tenant.clone())
    }

    /// The context of one request: over HTTP with API keys, the tenant and
    /// capabilities of the key the HTTP layer verified for this request.
    fn ctx_for(&self, rc: &RequestContext<RoleServer>) -> Result<Ctx, HandoffError> {
        let principal = rc
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<crate::auth::Principal>());
        let Some(p) = principal else {
            return Ok(self.ctx());
        };
        let tenant = self.bound.get_or_init(|| Arc::from(p.tenant.as_str()));
        if **tenant != *p.tenant {
            return Err(HandoffError::new(
                ErrorCode::Forbidden,
                "this MCP session was opened with a key of another tenant",
            ));
        }
        Ok(Ctx {
            tenant: tenant.clone(),
            caller: Caller::key(p),
            ..self.ctx()
        })
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            core: self.core.clone(),
            storage: self.storage.clone(),
            cfg: self.cfg.clone(),
            tenant: self.tenant(),
            caller: self.caller.clone(),
        }
    }
}

/// The id of this call: the HTTP request's (`x-request-id`, made by the
/// transport), or a new one on stdio.
fn request_id(rc: &RequestContext<RoleServer>) -> Uuid {
    rc.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<crate::logging::RequestId>())
        .map(|r| r.0)
        .unwrap_or_else(Uuid::now_v7)
}

/// What a log line may say about a call's arguments: the session key (to be
/// hashed) and the content's length, never the content.
fn log_fields(args: Option<&rmcp::model::JsonObject>) -> (Option<String>, usize) {
    let Some(a) = args else { return (None, 0) };
    let key = a
        .get("session_key")
        .or_else(|| a.get("sessionKey"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let mut len = a
        .get("content")
        .and_then(|v| v.as_str())
        .map_or(0, str::len);
    if let Some(serde_json::Value::Array(items)) = a.get("entries") {
        len += items
            .iter()
            .filter_map(|e| e.get("content").and_then(|v| v.as_str()))
            .map(str::len)
            .sum::<usize>();
    }
    (key, len)
}

/// The internal cause of an error (a database's message) goes to the log
/// under the reply's `request_id`, redacted; the client gets the code and
/// the message only.
fn log_internal(request_id: Uuid, e: &HandoffError) {
    if let Some(cause) = &e.internal {
        tracing::warn!(%request_id, error_code = e.code.as_str(), cause = %crate::logging::redact(cause), "error cause");
    }
}

impl ServerHandler for HandoffServer {
    // `enable_logging`: logging is deprecated by SEP-2577 (2026-07-28), and
    // still part of 2025-11-25.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                // `logging/setLevel` is accepted (clients such as the MCP
                // Inspector set a level on connecting); no log notification
                // is sent at any level: the daemon's log is on stderr.
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("handoff", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "handoff keeps ordered context for agent sessions and hands them between agents. \
             register_session, then update_context as work happens, then request_handoff to pass \
             the session on; the receiving agent reads handoff://summary/{key} and get_context.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.catalog.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let request_id = request_id(&context);
        let ctx = match self.ctx_for(&context) {
            Ok(ctx) => ctx,
            Err(e) => return Ok(reply::failure(&e, request_id).into()),
        };
        let tenant = ctx.tenant.clone();
        let started = Instant::now();
        let tool = request.name.to_string();
        let (raw_key, content_length) = log_fields(request.arguments.as_ref());
        // The keyed hash costs a blake3 pass: only pay it when a line is written.
        let key_hash = || raw_key.as_deref().map(key_hash);
        let outcome = self.catalog.call(ctx, &tool, request.arguments).await;
        let Some(outcome) = outcome else {
            // The name is the client's text (up to the message limit): the
            // log and the reply carry a cut, redacted form.
            let shown = crate::logging::client_str(&tool);
            let e = HandoffError::new(ErrorCode::NotFound, format!("unknown tool '{shown}'"))
                .detail("tool", shown.clone());
            tracing::info!(%request_id, tool = %shown, error_code = "NOT_FOUND", "unknown tool");
            return Err(McpError::invalid_params(
                format!("unknown tool '{shown}'"),
                Some(reply::error_json(&e, request_id)),
            ));
        };
        let elapsed = started.elapsed();
        let m = metrics();
        m.tool_seconds
            .with_label_values(&[&tool])
            .observe(elapsed.as_secs_f64());
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let result = match outcome {
            Ok(json) => {
                m.tool_calls.with_label_values(&[&tool, "ok"]).inc();
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(%request_id, %tenant, tool, session_key_hash = key_hash(), content_length, duration_ms, "tool call");
                }
                reply::success(json, self.structured_in_transport)
            }
            Err(e) => {
                m.tool_calls
                    .with_label_values(&[&tool, e.code.as_str()])
                    .inc();
                tracing::info!(%request_id, %tenant, tool, session_key_hash = key_hash(), content_length, duration_ms, error_code = e.code.as_str(), "tool call failed");
                log_internal(request_id, &e);
                reply::failure(&e, request_id)
            }
        };
        Ok(result.into())
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tracing::debug!(tenant = %self.tenant(), level = ?request.level, "client log level set");
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Binds the connection's tenant (notices are filtered by it).
        self.ctx_for(&context)
            .map_err(|e| reply::protocol_error(&e, Uuid::now_v7()))?;
        let Some(key) = resources::watch_key(&request.uri) else {
            let e = HandoffError::new(
                ErrorCode::NotFound,
                "only handoff://context/{key}, handoff://summary/{key} and handoff://agents/{id}/handoffs can be subscribed to",
            )
            .detail("uri", request.uri.clone());
            return Err(reply::protocol_error(&e, Uuid::now_v7()));
        };
        {
            let mut subs = self.subscriptions.lock().expect("subscriptions lock");
            let held: usize = subs.values().map(HashSet::len).sum();
            let known = subs.get(&key).is_some_and(|s| s.contains(&request.uri));
            if !known && held >= MAX_SUBSCRIPTIONS {
                let e = HandoffError::validation(format!(
                    "a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first"
                ))
                .detail("limit", MAX_SUBSCRIPTIONS);
                return Err(reply::protocol_error(&e, Uuid::now_v7()));
            }
            subs.entry(key).or_default().insert(request.uri);
        }
        self.start_forwarding(context.peer);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(key) = resources::watch_key(&request.uri) {
            let mut subs = self.subscriptions.lock().expect("subscriptions lock");
            if let Some(set) = subs.get_mut(&key) {
                set.remove(&request.uri);
                if set.is_empty() {
                    subs.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// 2026-07-28 `subscriptions/listen`: resource updates for the URIs we
    /// can watch; list-change notices are not offered (the lists are fixed).
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = Some(
            requested
                .resource_subscriptions
                .iter()
                .flatten()
                .filter(|u| resources::watch_key(u).is_some())
                .take(MAX_SUBSCRIPTIONS)
                .cloned()
                .collect(),
        );
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.ctx_for(context.request_context())
            .map_err(|e| reply::protocol_error(&e, Uuid::now_v7()))?;
        let mut watched: HashMap<String, HashSet<String>> = HashMap::new();
        for uri in context.accepted().resource_subscriptions.iter().flatten() {
            if let Some(k) = resources::watch_key(uri) {
                watched.entry(k).or_default().insert(uri.clone());
            }
        }
        let mut rx = self.changes.subscribe();
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                r = rx.recv() => match r {
                    Ok(change) => {
                        for uri in self.touched(&change, &watched) {
                            if context.sink().notify_resource_updated(uri).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "subscription notices lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let request_id = request_id(&context);
        let uri = request.uri;
        let ctx = self
            .ctx_for(&context)
            .map_err(|e| reply::protocol_error(&e, request_id))?;
        let tenant = ctx.tenant.clone();
        match resources::read(&ctx, &uri).await {
            Ok((mime, body)) => {
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(body, uri).with_mime_type(mime)
                ])
                .into())
            }
            Err(e) => {
                tracing::info!(%request_id, %tenant, error_code = e.code.as_str(), "resource read failed");
                log_internal(request_id, &e);
                let mut err = reply::protocol_error(&e, request_id);
                // SEP-2164: the requested URI in the error's data.
                if let Some(serde_json::Value::Object(data)) = err.data.as_mut() {
                    data.insert("uri".into(), uri.into());
                }
                Err(err)
            }
        }
    }
}
