//! Responses written while they are sent: JSON serialized on a blocking thread into a small
//! bounded channel that the connection drains. A million entries never sit in memory as one
//! string, and a client that reads slowly holds a few chunks, not the whole response.

use std::io::{self, Write};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per chunk sent.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const CHUNKS_QUEUED: usize = 4;

/// Writes into the channel, a chunk at a time; fails once the client is gone.
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// A JSON response of `status` whose body `make` builds and serializes on a blocking thread
/// as it is sent. `etag`, when given, is the response's ETag.
pub(super) fn json_stream<T, F>(status: StatusCode, etag: Option<u64>, make: F) -> Response
where
    T: Serialize,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(CHUNKS_QUEUED);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut writer = ChannelWriter {
            buffer: Vec::with_capacity(CHUNK),
            sender,
        };
        let written = serde_json::to_writer(&mut writer, &make())
            .map_err(io::Error::from)
            .and_then(|()| writer.flush());
        if let Err(err) = written
            && err.kind() != io::ErrorKind::BrokenPipe
        {
            tracing::warn!(error = %err, "writing a response");
            // The client sees the body end in an error, not a truncated document.
            let _ = writer.sender.blocking_send(Err(err));
        }
    });
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(receiver)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(version) = etag
        && let Ok(value) = HeaderValue::from_str(&format!("\"{version}\""))
    {
        headers.insert(header::ETAG, value);
    }
    response
}
