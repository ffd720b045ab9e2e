//! HTTP plumbing shared by every module: the request context middleware (request id, tracing
//! span, metrics, body limit, panic containment, problem+json for bare errors), the
//! extractors (JSON bodies, typed path ids) and configuration that turn malformed input into
//! stable 4xx codes, and the list envelope.

mod extractors;
mod middleware;
pub mod pagination;
mod path;

pub use extractors::{Json, check_storable, json_config, path_config, query_config};
pub use middleware::{REQUEST_ID_HEADER, RequestContext, current_request_id, request_context};
pub use path::PathId;
