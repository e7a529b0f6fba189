//! The accept loop and each connection's life: TLS handshake, HTTP/1.1 with a header
//! timeout, the peer in every request, a connection limit that makes room for newcomers by
//! closing the connection that waited longest for a request, and a bounded stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::file_limit::ensure_file_limit;
use super::listener::{Accepted, Listener};
use super::shedding::{Connections, GuardedBody, Registration};
use super::{ServerError, ServerSettings};

/// How long a stop waits for connections under way to finish before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long accepting pauses after it failed (out of files, say) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often at most the log says that every connection is in use (connections shed, or a
/// newcomer waiting).
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What a connection's bytes go through: TCP, TLS over TCP, or a unix socket.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The admin API's listening socket, bound, with its limits.
pub struct Server {
    listener: Listener,
    settings: ServerSettings,
}

impl Server {
    /// Binds the configured address, after making sure the process may open a file for every
    /// connection allowed.
    pub async fn bind(settings: &ServerSettings) -> Result<Server, ServerError> {
        let files = ensure_file_limit(settings.max_connections)?;
        tracing::debug!(files, "open-file limit");
        Ok(Server {
            listener: Listener::bind(settings).await?,
            settings: settings.clone(),
        })
    }

    /// Serves `app` until `stop` completes, then lets requests under way finish for up to
    /// [`SHUTDOWN_GRACE`] and closes every connection still open (idle, stalled or not).
    pub async fn serve(self, app: Router, stop: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(self.settings.max_connections));
        let mut connections = JoinSet::new();
        let open = Connections::default();
        let mut warned_full: Option<Instant> = None;
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let permit = match permits.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => {
                            // Room for the newcomer: an operator always gets through a
                            // crowd of idle or stalled clients.
                            let shed = open.shed_longest_waiting();
                            if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                                warned_full = Some(Instant::now());
                                tracing::warn!(
                                    max_connections = self.settings.max_connections,
                                    shed,
                                    "every API connection is in use: the one that waited \
                                     longest for a request is closed for a new one, or the \
                                     new one waits while all serve requests (--max-connections)"
                                );
                            }
                            tokio::select! {
                                () = &mut stop => break,
                                permit = permits.clone().acquire_owned() => match permit {
                                    Ok(permit) => permit,
                                    Err(_) => break,
                                },
                            }
                        }
                    };
                    let registration = Arc::new(open.register());
                    let id = registration.id();
                    let connection = Connection {
                        tls: self.listener.tls().cloned(),
                        app: app.clone(),
                        settings: self.settings.clone(),
                        watcher: graceful.watcher(),
                        registration,
                        _permit: permit,
                    };
                    let abort = connections.spawn(connection.serve(stream, peer));
                    open.set_abort(id, abort);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting an API connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
            while connections.try_join_next().is_some() {}
        }
        // Each connection finishes the request it serves and closes; one still in its TLS
        // handshake closes as it enters HTTP.
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "API connections still open after the stop's grace: closed"
            );
        }
        connections.shutdown().await;
    }
}

/// What serving one connection needs.
struct Connection {
    tls: Option<TlsAcceptor>,
    app: Router,
    settings: ServerSettings,
    /// Tells the connection that the server stops.
    watcher: Watcher,
    /// Its place among the open connections: what it is doing, for the shedding.
    registration: Arc<Registration>,
    /// Held while the connection lives: one of --max-connections.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Negotiates TLS if configured, then serves HTTP/1.1 requests, each carrying `peer` in
    /// its extensions, until the client leaves, a timeout closes the connection, or the
    /// daemon stops.
    async fn serve(self, stream: Accepted, peer: super::Peer) {
        let header_timeout = self.settings.header_timeout;
        let io: Box<dyn Stream> = match (stream, &self.tls) {
            (Accepted::Tcp(stream), Some(tls)) => {
                match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
            (Accepted::Tcp(stream), None) => Box::new(stream),
            (Accepted::Unix(stream), _) => Box::new(stream),
        };
        let app = self.app;
        let service_peer = peer.clone();
        let registration = self.registration.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let app = app.clone();
            let registration = registration.clone();
            request.extensions_mut().insert(service_peer.clone());
            async move {
                let Some(guard) = registration.begin_request() else {
                    return Ok(shed_response());
                };
                let response = app.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| GuardedBody::wrap(body, guard)),
                )
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service);
        if let Err(err) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, error = %err, "API connection ended");
        }
    }
}

/// The answer to a request whose connection was closed to make room as its headers came in.
fn shed_response() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        [(hyper::header::CONNECTION, "close")],
        "the connection was closed to make room for others: connect again\n",
    )
        .into_response()
}
