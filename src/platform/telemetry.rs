//! Logging through `tracing`: pretty lines locally, one JSON object per line in production.
//!
//! Logs go to stderr so that commands printing JSON on stdout (`flowlet admin ... --json`) stay
//! machine-readable. Every line logged while serving a request carries that request's span,
//! and so its `request_id`.

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::platform::config::{LogFormat, LogSettings};

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(settings: &LogSettings) {
    let Ok(filter) = settings.level.parse::<Targets>() else {
        // Settings validation already rejected a bad filter; fall back rather than abort.
        return init_with(
            LogFormat::Pretty,
            Targets::new().with_default(tracing::Level::INFO),
        );
    };
    init_with(settings.format, filter);
}

fn init_with(format: LogFormat, filter: Targets) {
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(layer(format, std::io::stderr))
        .try_init();
    // Already initialised (several apps in one test process): keep the first subscriber.
    drop(result);
}

/// The layer that formats log lines as `format` says and hands them to `writer`: stderr for
/// [`init`], a buffer for a test that searches every line the app writes (e.g. for a card
/// number) in exactly the form an operator's log pipeline receives.
pub fn layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
            .boxed(),
    }
}
