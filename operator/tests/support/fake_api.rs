//! A small in-memory Kubernetes API server behind a `tower_test` mock
//! service, so a real `kube::Client` and `Controller` run against it.
//!
//! It keeps objects by resource, hands out resourceVersions, streams watch
//! events (replaying those after the watch's resourceVersion), and supports
//! what the operator uses: GET, LIST, WATCH, server-side apply (simplified:
//! the applied fields replace the stored ones), merge and JSON patches,
//! create, replace with optimistic concurrency, the status subresource, and
//! deletion that honours finalizers. Faults (409, 500, …) can be injected.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::Client;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key { resource: resource.into(), namespace: namespace.into(), name: name.into() }
    }
}

struct Fault {
    method: Method,
    path_contains: String,
    code: u16,
    remaining: u32,
}

struct WatchEvent {
    version: u64,
    resource: String,
    namespace: String,
    payload: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    history: Vec<WatchEvent>,
    watchers: Vec<(String, Option<String>, mpsc::UnboundedSender<Bytes>)>,
    faults: Vec<Fault>,
    /// Requests to leave unanswered (the `code` of a hold is unused).
    holds: Vec<Fault>,
    /// The answers never sent: the held requests wait on them forever.
    held: Vec<tower_test::mock::SendResponse<Response<Body>>>,
    /// "METHOD path" of every request, in order.
    log: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeApi {
    /// A client talking to a new, empty fake API server.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let fake = FakeApi { state: Arc::default(), changed: Arc::new(Notify::new()) };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let Some(respond) = server.take_hold(request.method(), request.uri().path(), respond) else {
                    continue;
                };
                let response = server.serve(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    // ---- what tests do to the "cluster" ----

    /// Creates or replaces an object as `kubectl apply` would (spec changes bump generation).
    pub fn put(&self, resource: &str, object: Value) {
        let key = key_of(resource, &object);
        let mut state = self.state.lock().unwrap();
        let merged = match state.objects.get(&key) {
            Some(old) => {
                let mut new = old.clone();
                for (field, value) in object.as_object().unwrap() {
                    if field != "metadata" && field != "status" {
                        new[field] = value.clone();
                    }
                }
                if new.get("spec") != old.get("spec") {
                    bump_generation(&mut new);
                }
                new
            }
            None => fresh(object),
        };
        state.store(key, merged);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Sets the status of an object as another controller would (e.g. Deployment readiness).
    pub fn set_status(&self, key: &Key, status: Value) {
        let mut state = self.state.lock().unwrap();
        let mut object = state.objects.get(key).cloned().expect("object to update");
        object["status"] = status;
        state.store(key.clone(), object);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Requests deletion, as `kubectl delete` does.
    pub fn delete(&self, key: &Key) {
        let mut state = self.state.lock().unwrap();
        state.delete(key);
        drop(state);
        self.changed.notify_waiters();
    }

    /// The next `times` requests with this method whose path contains `path_contains` fail with `code`.
    pub fn fail(&self, method: Method, path_contains: &str, code: u16, times: u32) {
        let fault = Fault { method, path_contains: path_contains.into(), code, remaining: times };
        self.state.lock().unwrap().faults.push(fault);
    }

    /// The next `times` requests with this method whose path contains
    /// `path_contains` are never answered (nor closed): a half-open connection.
    pub fn hold(&self, method: Method, path_contains: &str, times: u32) {
        let hold = Fault { method, path_contains: path_contains.into(), code: 0, remaining: times };
        self.state.lock().unwrap().holds.push(hold);
    }

    /// How many requests are held unanswered now.
    pub fn held(&self) -> usize {
        self.state.lock().unwrap().held.len()
    }

    /// Keeps `respond` (never answering) when a hold matches; else gives it back.
    fn take_hold(
        &self,
        method: &Method,
        path: &str,
        respond: tower_test::mock::SendResponse<Response<Body>>,
    ) -> Option<tower_test::mock::SendResponse<Response<Body>>> {
        let mut state = self.state.lock().unwrap();
        let Some(hold) =
            state.holds.iter_mut().find(|h| h.remaining > 0 && h.method == method && path.contains(&h.path_contains))
        else {
            return Some(respond);
        };
        hold.remaining -= 1;
        state.log.push(format!("{method} {path} (held, never answered)"));
        state.held.push(respond);
        drop(state);
        self.changed.notify_waiters();
        None
    }

    pub fn faults_left(&self) -> u32 {
        self.state.lock().unwrap().faults.iter().map(|f| f.remaining).sum()
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.state.lock().unwrap().objects.get(key).cloned()
    }

    pub fn list(&self, resource: &str) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state.objects.iter().filter(|(k, _)| k.resource == resource).map(|(_, v)| v.clone()).collect()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Waits until `check` holds on the fake's state (re-checked on every change), or panics after `timeout`.
    pub async fn wait_for<T>(&self, what: &str, timeout: Duration, check: impl Fn(&FakeApi) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(value) = check(self) {
                return value;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let log = self.requests();
                let tail = &log[log.len().saturating_sub(15)..];
                panic!("timed out waiting for {what}; last requests:\n{}", tail.join("\n"));
            }
        }
    }

    // ---- the API server ----

    async fn serve(&self, request: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let response = {
            let mut state = self.state.lock().unwrap();
            state.log.push(format!("{} {}?{}", parts.method, path, query));
            if let Some(code) = state.take_fault(&parts.method, &path) {
                Err(status_error(code, "injected fault"))
            } else {
                state.handle(&parts.method, &path, &query, &content_type, &body)
            }
        };
        self.changed.notify_waiters();
        match response {
            Ok(Reply::Json(code, value)) => json_response(code, &value),
            Ok(Reply::Watch(receiver)) => {
                let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|line| (Ok::<_, Infallible>(Frame::data(line)), receiver))
                });
                Response::builder().status(200).body(StreamBody::new(stream).boxed_unsync()).unwrap()
            }
            Err((code, value)) => json_response(code, &value),
        }
    }
}

enum Reply {
    Json(StatusCode, Value),
    Watch(mpsc::UnboundedReceiver<Bytes>),
}

type Failure = (StatusCode, Value);

struct Route {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // api/v1/... or apis/group/version/...
    let rest = if parts[0] == "api" { &parts[2..] } else { &parts[3..] };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    Route {
        resource: rest[0].to_owned(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    }
}

impl State {
    fn take_fault(&mut self, method: &Method, path: &str) -> Option<u16> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))?;
        fault.remaining -= 1;
        Some(fault.code)
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply, Failure> {
        let route = route(path);
        let namespace = route.namespace.clone().unwrap_or_default();
        match (method.clone(), route.name.clone()) {
            (Method::GET, None) if query.contains("watch=true") => Ok(Reply::Watch(self.watch(&route, query))),
            (Method::GET, None) => Ok(Reply::Json(StatusCode::OK, self.list_json(&route))),
            (Method::GET, Some(name)) => {
                let key = Key::new(&route.resource, &namespace, &name);
                self.objects.get(&key).cloned().map(|o| Reply::Json(StatusCode::OK, o)).ok_or_else(|| not_found(&name))
            }
            (Method::POST, None) => {
                let object: Value = serde_json::from_slice(body).map_err(bad_request)?;
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let key = Key::new(&route.resource, &namespace, &name);
                if self.objects.contains_key(&key) {
                    return Err(status_error(409, "already exists"));
                }
                let mut object = fresh(object);
                object["metadata"]["namespace"] = json!(namespace);
                self.store(key.clone(), object);
                Ok(Reply::Json(StatusCode::CREATED, self.objects[&key].clone()))
            }
            (Method::PUT, Some(name)) => {
                let key = Key::new(&route.resource, &namespace, &name);
                let mut object: Value = serde_json::from_slice(body).map_err(bad_request)?;
                let current = self.objects.get(&key).ok_or_else(|| not_found(&name))?;
                if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return Err(status_error(409, "the object has been modified"));
                }
                object["metadata"]["uid"] = current["metadata"]["uid"].clone();
                self.store(key.clone(), object);
                Ok(Reply::Json(StatusCode::OK, self.objects[&key].clone()))
            }
            (Method::PATCH, Some(name)) => {
                let key = Key::new(&route.resource, &namespace, &name);
                let patch: Value = serde_json::from_slice(body).map_err(bad_request)?;
                let status_only = route.subresource.as_deref() == Some("status");
                let current = self.objects.get(&key).cloned();
                let updated = match (content_type, current) {
                    (c, current) if c.starts_with("application/apply-patch") => apply(current, patch, status_only),
                    (c, Some(mut current)) if c.starts_with("application/merge-patch") => {
                        merge(&mut current, &patch);
                        current
                    }
                    (c, Some(mut current)) if c.starts_with("application/json-patch") => {
                        let ops: json_patch::Patch = serde_json::from_value(patch).map_err(bad_request)?;
                        // Like the API server, a `test` for null passes on an absent field.
                        if current["metadata"].get("finalizers").is_none() {
                            current["metadata"]["finalizers"] = Value::Null;
                        }
                        json_patch::patch(&mut current, &ops).map_err(|e| status_error(422, &e.to_string()))?;
                        if current["metadata"]["finalizers"].is_null() {
                            current["metadata"].as_object_mut().unwrap().remove("finalizers");
                        }
                        current
                    }
                    (_, None) => return Err(not_found(&name)),
                    (c, Some(_)) => return Err(status_error(415, &format!("unsupported patch type {c}"))),
                };
                let mut updated = updated;
                updated["metadata"]["name"] = json!(name);
                updated["metadata"]["namespace"] = json!(namespace);
                self.store(key.clone(), updated);
                self.finish_deletion(&key);
                let stored = self.objects.get(&key).cloned().unwrap_or(Value::Null);
                Ok(Reply::Json(StatusCode::OK, stored))
            }
            (Method::DELETE, Some(name)) => {
                let key = Key::new(&route.resource, &namespace, &name);
                let object = self.objects.get(&key).cloned().ok_or_else(|| not_found(&name))?;
                self.delete(&key);
                Ok(Reply::Json(StatusCode::OK, object))
            }
            (method, _) => Err(status_error(405, &format!("{method} not supported here"))),
        }
    }

    fn list_json(&self, route: &Route) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| {
                k.resource == route.resource && route.namespace.as_ref().is_none_or(|ns| &k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": self.version.to_string()}, "items": items})
    }

    fn watch(&mut self, route: &Route, query: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let since: u64 = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.version);
        let (sender, receiver) = mpsc::unbounded_channel();
        for event in self.history.iter().filter(|e| e.version > since && e.resource == route.resource) {
            if route.namespace.as_ref().is_none_or(|ns| ns == &event.namespace) {
                let _ = sender.send(line(&event.payload));
            }
        }
        self.watchers.push((route.resource.clone(), route.namespace.clone(), sender));
        receiver
    }

    /// Stores with a new resourceVersion and tells the watchers.
    fn store(&mut self, key: Key, mut object: Value) {
        // Like the API server, a write that changes nothing is not an event.
        if let Some(current) = self.objects.get(&key) {
            object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            if &object == current {
                return;
            }
        }
        let existed = self.objects.contains_key(&key);
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.emit(&key, if existed { "MODIFIED" } else { "ADDED" }, object);
    }

    fn delete(&mut self, key: &Key) {
        let Some(mut object) = self.objects.get(key).cloned() else { return };
        let has_finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                self.store(key.clone(), object);
            }
        } else {
            self.objects.remove(key);
            self.version += 1;
            object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            self.emit(key, "DELETED", object);
        }
    }

    /// An object being deleted goes away once its last finalizer is removed.
    fn finish_deletion(&mut self, key: &Key) {
        let Some(object) = self.objects.get(key) else { return };
        let deleting = !object["metadata"]["deletionTimestamp"].is_null();
        let finalized = object["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        if deleting && finalized {
            self.delete(key);
        }
    }

    fn emit(&mut self, key: &Key, type_: &str, object: Value) {
        let payload = json!({"type": type_, "object": object});
        let bytes = line(&payload);
        self.watchers.retain(|(resource, namespace, sender)| {
            if resource != &key.resource || namespace.as_ref().is_some_and(|ns| ns != &key.namespace) {
                return !sender.is_closed();
            }
            sender.send(bytes.clone()).is_ok()
        });
        self.history.push(WatchEvent {
            version: self.version,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            payload,
        });
    }
}

/// Server-side apply, simplified: the applied top-level fields replace the
/// stored ones (status only through the status subresource, and vice versa).
fn apply(current: Option<Value>, patch: Value, status_only: bool) -> Value {
    let Some(mut object) = current else {
        let mut object = fresh(patch);
        if !status_only {
            object.as_object_mut().unwrap().remove("status");
        }
        return object;
    };
    if status_only {
        object["status"] = patch["status"].clone();
        return object;
    }
    let old_spec = object.get("spec").cloned();
    for (field, value) in patch.as_object().unwrap() {
        match field.as_str() {
            "status" => {}
            "metadata" => {
                for key in ["labels", "annotations", "ownerReferences"] {
                    if let Some(value) = value.get(key) {
                        object["metadata"][key] = value.clone();
                    }
                }
            }
            _ => object[field] = value.clone(),
        }
    }
    if object.get("spec") != old_spec.as_ref() {
        bump_generation(&mut object);
    }
    object
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    target.as_object_mut().unwrap().remove(key);
                } else {
                    merge(&mut target[key], value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn fresh(mut object: Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    object["metadata"]["uid"] = json!(format!("uid-{name}-{}", uuid::Uuid::new_v4()));
    object["metadata"]["generation"] = json!(1);
    object["metadata"]["creationTimestamp"] = json!(now());
    object
}

fn bump_generation(object: &mut Value) {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    object["metadata"]["generation"] = json!(generation + 1);
}

fn key_of(resource: &str, object: &Value) -> Key {
    let metadata = &object["metadata"];
    Key::new(resource, metadata["namespace"].as_str().unwrap_or("default"), metadata["name"].as_str().unwrap())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed_unsync();
    Response::builder().status(code).header("content-type", "application/json").body(body).unwrap()
}

fn status_error(code: u16, message: &str) -> Failure {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        500 => "InternalError",
        _ => "Invalid",
    };
    let status = StatusCode::from_u16(code).unwrap();
    (
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(name: &str) -> Failure {
    status_error(404, &format!("{name} not found"))
}

fn bad_request(error: impl std::fmt::Display) -> Failure {
    status_error(400, &error.to_string())
}
