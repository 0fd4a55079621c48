//! Bearer-token authentication for the rcfd services (health and reflection stay open,
//! so load balancers and grpcurl's `list` work without it).

use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub struct BearerToken {
    expected: Option<String>,
}

impl BearerToken {
    /// `None`: authentication is off and every call passes.
    pub fn new(expected: Option<String>) -> Self {
        BearerToken { expected }
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <token>`"))?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("authorization: the token is not valid"))
        }
    }
}

/// Compares without stopping at the first difference, so timing does not leak how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().expect("ascii"));
        }
        request
    }

    #[test]
    fn only_the_right_token_passes() {
        let auth = BearerToken::new(Some("0123456789abcdef".into()));
        assert!(auth.check(call(Some("Bearer 0123456789abcdef"))).is_ok());
        for bad in [None, Some("Bearer 0123456789abcdeX"), Some("0123456789abcdef"), Some("Bearer ")] {
            let status = auth.check(call(bad)).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert!(BearerToken::new(None).check(call(None)).is_ok());
    }
}
