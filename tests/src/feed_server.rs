//! A feed for lists that follow one: an HTTP server in a test link's server namespace that
//! answers every request with what the test last set (a status and a body).

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};

use crate::netns::TestLink;

/// The feed: its URL, and what it answers.
pub struct FeedServer {
    /// Where allowlistd (in the same namespace) reads it.
    pub url: String,
    answer: Arc<Mutex<(u16, String)>>,
}

impl FeedServer {
    /// Serves `body` with status 200 on loopback in `link`'s server namespace.
    pub fn serve(link: &TestLink, body: &str) -> anyhow::Result<FeedServer> {
        let listener = link.server.enter(|| TcpListener::bind("127.0.0.1:0"))??;
        let url = format!("http://{}/ranges.txt", listener.local_addr()?);
        let answer = Arc::new(Mutex::new((200, body.to_owned())));
        let served = answer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let (status, body) = served
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Ok(FeedServer { url, answer })
    }

    /// From now on, answers `status` and `body`.
    pub fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = (status, body.to_owned());
    }
}
