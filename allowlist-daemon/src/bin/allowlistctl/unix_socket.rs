//! HTTP to allowlistd over its unix socket (`--url unix:/run/allowlistd/api.sock`): a ureq
//! transport that connects to the socket whatever host the request names.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// Bytes buffered each way.
const BUFFER: usize = 128 * 1024;

/// Connects every request to the socket at `path`.
#[derive(Debug)]
pub(crate) struct UnixConnector {
    /// The socket.
    pub(crate) path: PathBuf,
}

/// One connection to the socket.
#[derive(Debug)]
pub(crate) struct UnixTransport {
    stream: UnixStream,
    buffers: LazyBuffers,
}

impl Connector<()> for UnixConnector {
    type Out = UnixTransport;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<UnixTransport>, ureq::Error> {
        let stream = UnixStream::connect(&self.path)?;
        Ok(Some(UnixTransport {
            stream,
            buffers: LazyBuffers::new(BUFFER, BUFFER),
        }))
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_write_timeout(timeout.not_zero().map(|after| *after))?;
        self.stream.write_all(&self.buffers.output()[..amount])?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_read_timeout(timeout.not_zero().map(|after| *after))?;
        let read = self.stream.read(self.buffers.input_append_buf())?;
        self.buffers.input_appended(read);
        Ok(read > 0)
    }

    fn is_open(&mut self) -> bool {
        // A connection per request: nothing to probe.
        false
    }
}
