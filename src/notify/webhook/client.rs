//! The HTTP client every delivery goes through: no redirects, a timeout, the guarded
//! resolver, no proxies, HTTP/1.1 over rustls.

use std::sync::Arc;
use std::time::Duration;

use super::{GuardedResolver, USER_AGENT, WebhookError};

/// Builds the client every delivery goes through, so the SSRF and TLS policy
/// lives in one place.
///
/// * redirects are not followed: a 3xx is a failed delivery (following one
///   would let a partner bounce us to an internal address);
/// * `timeout` bounds the whole request, connect to last body byte;
/// * user agent [`USER_AGENT`];
/// * DNS through [`GuardedResolver`] with `allow_private`;
/// * no proxies, not even from `HTTP(S)_PROXY`, so the resolver is never
///   bypassed;
/// * HTTP/1.1 only;
/// * TLS 1.2/1.3 via rustls with the ring provider and the Mozilla roots of
///   `webpki-roots` (no aws-lc-rs, no platform verifier).
///
/// Callers must still pass every URL through [`check_url`](super::check_url) first: IP
/// literals are not resolved, so only `check_url` stops them.
///
/// # Errors
/// [`WebhookError::Tls`] or [`WebhookError::HttpClient`] if the
/// configuration is refused.
pub fn http_client(
    timeout: Duration,
    allow_private: bool,
) -> Result<reqwest::Client, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .dns_resolver(GuardedResolver::new(allow_private))
        .no_proxy()
        .http1_only()
        .build()
        .map_err(WebhookError::HttpClient)
}

#[cfg(test)]
mod tests {
    use super::*;

    use secrecy::SecretString;
    use tokio::net::{TcpListener, TcpStream};

    use crate::notify::webhook::{
        HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, SigningKey,
        check_url, headers,
    };

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(&SecretString::from(secret)).unwrap()
    }

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// Reads one HTTP/1.1 request (head plus Content-Length body).
    async fn read_request(stream: &TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if request_complete(&buf) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        String::from_utf8(buf).unwrap()
    }

    fn request_complete(buf: &[u8]) -> bool {
        let text = String::from_utf8_lossy(buf);
        let Some(head_end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..head_end]
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, value)| value.trim().parse::<usize>().unwrap());
        buf.len() >= head_end + 4 + length
    }

    async fn write_all(stream: &TcpStream, mut data: &[u8]) {
        while !data.is_empty() {
            stream.writable().await.unwrap();
            match stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// Serves one connection with `response` and returns the request it got.
    async fn respond_once(listener: TcpListener, response: &'static str) -> String {
        let (stream, _) = listener.accept().await.unwrap();
        let request = read_request(&stream).await;
        write_all(&stream, response.as_bytes()).await;
        request
    }

    async fn local_listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    const OK_RESPONSE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[test]
    fn the_client_builds_with_and_without_private_addresses() {
        http_client(Duration::from_secs(10), false).unwrap();
        http_client(Duration::from_secs(10), true).unwrap();
    }

    #[test]
    fn a_request_to_a_forbidden_ip_literal_is_stopped_by_check_url() {
        let err = check_url("http://127.0.0.1:8080/hook", false, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook URL points to 127.0.0.1, an address webhooks may not reach"
        );
    }

    #[tokio::test]
    async fn a_signed_post_reaches_a_local_receiver_when_private_addresses_are_allowed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(listener, OK_RESPONSE));

        let url = check_url(&format!("http://127.0.0.1:{port}/hook"), false, true).unwrap();
        let body = br#"{"type":"payment.created"}"#;
        let h = headers(&[key(SPEC_SECRET)], "msg_local", 1_700_000_000, body);
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client
            .post(url)
            .header(HEADER_WEBHOOK_ID, &h.id)
            .header(HEADER_WEBHOOK_TIMESTAMP, &h.timestamp)
            .header(HEADER_WEBHOOK_SIGNATURE, &h.signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "ok");

        let request = server.await.unwrap();
        let lower = request.to_ascii_lowercase();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(
            lower.contains("user-agent: flowlet-webhooks/1\r\n"),
            "{request}"
        );
        assert!(lower.contains(&format!(
            "webhook-signature: {}\r\n",
            h.signature.to_ascii_lowercase()
        )));
        assert!(
            request.ends_with(r#"{"type":"payment.created"}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_local_receiver_is_reached_by_name_through_the_resolver_when_allowed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(listener, OK_RESPONSE));
        let url = check_url(&format!("http://localhost:{port}/"), false, true).unwrap();
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client.post(url).body("{}").send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_redirect_is_returned_as_is_and_not_followed() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(respond_once(
            listener,
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ));
        let client = http_client(Duration::from_secs(10), true).unwrap();
        let response = client
            .post(format!("http://127.0.0.1:{port}/"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_client_will_not_connect_to_localhost_when_private_addresses_are_forbidden() {
        let (_listener, port) = local_listener().await;
        // check_url cannot know where a name points; the resolver must stop it.
        let url = check_url(&format!("http://localhost:{port}/"), false, false).unwrap();
        let client = http_client(Duration::from_secs(10), false).unwrap();
        let err = client.post(url).body("{}").send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        assert!(
            chain
                .iter()
                .any(|m| m.contains("localhost resolves only to addresses webhooks may not reach")),
            "{chain:?}"
        );
    }
}
