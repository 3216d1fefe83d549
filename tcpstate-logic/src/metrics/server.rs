//! A minimal HTTP/1.x endpoint for the exposition: `GET /metrics` (and
//! `HEAD`), nothing else. One small response per connection, then close;
//! requests are bounded in size and time, connections in number, so a
//! misbehaving client cannot hold tcpstate's memory or its reader loop.

use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;

use super::format;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::timeout,
};

const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Serves `registry` on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Beyond the limit the connection is closed unanswered.
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let _ = timeout(REQUEST_TIMEOUT, handle(stream, &registry)).await;
                drop(permit);
            });
        }
    });
}

/// What to answer to a request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

pub(crate) fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics {
            head: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            break;
        }
    }
    Ok(head)
}

async fn handle(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let (status, content_type, body, send_body) = match route(&head) {
        Route::Metrics { head: head_only } => {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(std::io::Error::other)?;
            if format::wants_openmetrics(&head) {
                ("200 OK", format::OPENMETRICS, body, !head_only)
            } else {
                (
                    "200 OK",
                    format::TEXT,
                    format::to_text_format(&body),
                    !head_only,
                )
            }
        }
        Route::NotFound => ("404 Not Found", "text/plain", "see /metrics\n".into(), true),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
            true,
        ),
        Route::BadRequest => ("400 Bad Request", "text/plain", String::new(), true),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if send_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x16\x03\x01garbage"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }
}
