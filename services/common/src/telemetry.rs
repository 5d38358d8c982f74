//! Logs and traces.
//!
//! Logs: JSON lines (default) or human-readable, filtered by `RUST_LOG`.
//! Span fields (correlation id, order id, message id) appear on every line,
//! and so do `trace_id` and `span_id` on every JSON line written inside a
//! traced unit of work (an HTTP request, a message handled, a saga step),
//! whether or not spans are exported.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are exported with
//! OTLP over HTTP/protobuf through `tracing-opentelemetry`; the standard
//! `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`).
//! The default sampler follows the caller's sampled flag (parent-based,
//! always on for new traces). When no endpoint is set no OpenTelemetry
//! layer is installed: [`start`] only draws the span's ids (what the logs
//! and the next hop need), as the hand-written traceparent code did.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Set once an OpenTelemetry layer is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the span exporter of a process; `shutdown` sends what is buffered.
#[must_use = "keep it until the process ends, then call shutdown()"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waits at most the exporter's timeout).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether an OTLP endpoint is configured for traces.
pub fn exporter_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

/// Whether spans are exported (an OpenTelemetry layer is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the log subscriber, and the span exporter if an OTLP endpoint
/// is configured. `service` is the default `service.name`; `platform`, if
/// given, becomes `service.namespace`.
pub fn init(format: LogFormat, service: &'static str, platform: Option<&str>) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !exporter_configured() {
        tracing_subscriber::registry().with(filter).with(log_layer(format)).try_init()?;
        return Ok(Telemetry { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    if let Some(platform) = platform {
        resource = resource.with_attribute(KeyValue::new("service.namespace", platform.to_owned()));
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_threads(false);
    tracing_subscriber::registry().with(filter).with(otel).with(log_layer(format)).try_init()?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Telemetry { provider: Some(provider) })
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    match format {
        LogFormat::Json => layer
            .json()
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                Format::default()
                    .json()
                    .with_target(false)
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .boxed(),
        LogFormat::Pretty => layer.boxed(),
    }
}

/// Makes `span` a child of `parent` (a context read from a request or a
/// message, or another span's) and returns the span's own context: what
/// goes on the wire, and what its children descend from. With an exporter
/// the span is an OpenTelemetry span; without one its ids are drawn here
/// (the parent's trace id and flags, a new span id; a new sampled trace
/// when there is no parent) and kept for the log lines.
pub fn start(span: &tracing::Span, parent: &Context) -> Context {
    if exporting() {
        // Fails only for a span the filter disabled: it then has no context of its own.
        if span.set_parent(parent.clone()).is_ok() {
            return span.context();
        }
    }
    let context = child_of(parent);
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch.downcast_ref::<Registry>().and_then(|registry| registry.span(id)) {
            span.extensions_mut().replace(SpanIds(context.trace_id(), context.span_id()));
        }
    });
    Context::new().with_remote_span_context(context)
}

/// Records that `span` is related to `other` (a batch and its messages).
/// Only exported spans keep links.
pub fn link(span: &tracing::Span, other: &Context) {
    if exporting() {
        span.add_link(other.span().span_context().clone());
    }
}

/// The context of a child of `parent` without a span: same trace, flags and
/// state, a new span id; a new sampled trace if `parent` names none.
pub fn child_of(parent: &Context) -> SpanContext {
    let ids = RandomIdGenerator::default();
    let span = parent.span();
    let parent = span.span_context();
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(ids.new_trace_id(), ids.new_span_id(), TraceFlags::SAMPLED, false, TraceState::default())
    }
}

/// The ids `start` drew for a span when no exporter is installed.
struct SpanIds(TraceId, SpanId);

/// The ids of the innermost traced span around an event: an exported span's
/// own ids, or those `start` drew.
fn event_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    for span in ctx.event_scope()? {
        let extensions = span.extensions();
        if let Some(otel) = extensions.get::<OtelData>()
            && let (Some(trace), Some(span)) = (otel.trace_id(), otel.span_id())
        {
            return Some((trace, span));
        }
        if let Some(ids) = extensions.get::<SpanIds>() {
            return Some((ids.0, ids.1));
        }
    }
    None
}

/// The JSON line of the wrapped format, with `trace_id` and `span_id` first
/// when the event happened inside a traced span.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some((trace_id, span_id)) = event_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}
