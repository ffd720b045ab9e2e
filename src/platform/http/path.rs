//! Typed ids in paths: a handler takes `PathId(id): PathId<PaymentId>` and never sees a
//! malformed id. A value of the route's `{id}` segment that is no id of the kind names no
//! resource, so it answers what an unknown id answers: 404 `not_found`, "No such payment."

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use crate::platform::error::ApiError;
use crate::platform::ids::{Id, IdKind};

/// The id in the route's `{id}` segment, parsed as `T`, an id type (`PathId<PaymentId>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId<T>(pub T);

impl<T> PathId<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for PathId<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<K: IdKind> FromRequest for PathId<Id<K>> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_segment(req.match_info().get("id")).map(PathId))
    }
}

/// The id a path segment holds; 404 `not_found` naming the kind when it holds none.
fn parse_segment<K: IdKind>(segment: Option<&str>) -> Result<Id<K>, ApiError> {
    segment
        .and_then(|raw| Id::<K>::parse(raw).ok())
        .ok_or_else(|| ApiError::not_found(format!("No such {}.", K::NOUN)))
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;
    use actix_web::test::TestRequest;

    use super::*;

    crate::define_id!(PaymentId, PaymentIdKind, "pay", "payment");

    fn extract(segment: &str) -> Result<PaymentId, ApiError> {
        let req = TestRequest::default()
            .param("id", segment.to_owned())
            .to_http_request();
        PathId::<PaymentId>::from_request(&req, &mut Payload::None)
            .into_inner()
            .map(PathId::into_inner)
    }

    #[test]
    fn a_well_formed_id_is_extracted() {
        let id = PaymentId::new();
        assert_eq!(extract(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn a_malformed_id_or_another_kind_is_404_naming_the_kind() {
        for bad in [
            "pay_123",
            "wal_01h455vb4pex5vsknk084sn02q",
            "PAY_01h455vb4pex5vsknk084sn02q",
        ] {
            let err = extract(bad).unwrap_err();
            assert_eq!(err.status_code().as_u16(), 404, "{bad}");
            assert_eq!(err.code(), "not_found", "{bad}");
            assert_eq!(err.to_string(), "404 not_found: No such payment.", "{bad}");
        }
    }
}
