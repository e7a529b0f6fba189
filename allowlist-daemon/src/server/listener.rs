//! The listening socket: TCP (with TLS when configured) or a unix socket private to its owner
//! or a group.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::sys::socket::{Backlog, listen};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Group, chown};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;

use super::{ListenAddress, Peer, ServerError, ServerSettings, tls};

/// A bound listening socket.
pub(super) enum Listener {
    /// TCP, with the TLS acceptor when TLS is configured.
    Tcp(TcpListener, Option<TlsAcceptor>),
    /// A unix socket, removed again when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

/// An accepted connection, before any TLS handshake.
pub(super) enum Accepted {
    /// A TCP connection; TLS, if any, is still to be negotiated.
    Tcp(TcpStream),
    /// A unix socket connection.
    Unix(UnixStream),
}

impl Listener {
    /// Binds what `settings` configures: reads the TLS files, and makes a unix socket
    /// readable and writable by the daemon's user only (or also by `--socket-group`). The
    /// listen backlog is the longest the kernel allows (`net.core.somaxconn`, 4096 by
    /// default): a crowd of clients that connect again as soon as they are closed fills a
    /// shorter one, and the operator's connection attempts are dropped with theirs.
    pub(super) async fn bind(settings: &ServerSettings) -> Result<Listener, ServerError> {
        let listener = Listener::bind_socket(settings).await?;
        let resized = match &listener {
            Listener::Tcp(socket, _) => listen(socket, Backlog::MAXCONN),
            Listener::Unix(socket, _) => listen(socket, Backlog::MAXCONN),
        };
        resized.map_err(|err| ServerError::Bind {
            address: settings.listen.clone(),
            source: err.into(),
        })?;
        Ok(listener)
    }

    /// Binds the socket, with the default backlog.
    async fn bind_socket(settings: &ServerSettings) -> Result<Listener, ServerError> {
        let bind_error = |source| ServerError::Bind {
            address: settings.listen.clone(),
            source,
        };
        match &settings.listen {
            ListenAddress::Tcp(address) => {
                let tls = settings.tls.as_ref().map(tls::acceptor).transpose()?;
                let listener = TcpListener::bind(address).await.map_err(bind_error)?;
                Ok(Listener::Tcp(listener, tls))
            }
            ListenAddress::Unix(path) => {
                remove_stale_socket(path)?;
                // Created 0600 from the start: no moment at which another user could connect.
                let previous = umask(Mode::from_bits_truncate(0o177));
                let bound = UnixListener::bind(path);
                umask(previous);
                let listener = bound.map_err(bind_error)?;
                if let Some(group) = &settings.socket_group {
                    share_with_group(path, group)?;
                }
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// The next connection and its peer.
    pub(super) async fn accept(&self) -> std::io::Result<(Accepted, Peer)> {
        match self {
            Listener::Tcp(listener, _) => {
                let (stream, address) = listener.accept().await?;
                Ok((Accepted::Tcp(stream), Peer::Tcp(address)))
            }
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                let credentials = stream.peer_cred()?;
                let peer = Peer::Unix {
                    uid: credentials.uid(),
                    pid: credentials.pid(),
                };
                Ok((Accepted::Unix(stream), peer))
            }
        }
    }

    /// The TLS acceptor, when connections must negotiate TLS.
    pub(super) fn tls(&self) -> Option<&TlsAcceptor> {
        match self {
            Listener::Tcp(_, tls) => tls.as_ref(),
            Listener::Unix(..) => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket left by a daemon that is gone; refuses to touch one another process
/// still answers on, or a path that is no socket.
fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let socket_error = |action| {
        move |source| ServerError::Socket {
            action,
            path: path.to_owned(),
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(socket_error("removing the stale socket"))
        }
        Ok(_) => Err(ServerError::NotASocket(path.to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(socket_error("inspecting")(err)),
    }
}

/// Gives `group` read and write access to the socket (mode 0660).
fn share_with_group(path: &Path, group: &str) -> Result<(), ServerError> {
    let socket_error = |action| {
        move |source| ServerError::Socket {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let gid = Group::from_name(group)
        .map_err(|err| socket_error("looking up --socket-group for")(err.into()))?
        .ok_or_else(|| ServerError::UnknownGroup(group.to_owned()))?
        .gid;
    chown(path, None, Some(gid))
        .map_err(|err| socket_error("changing the group of")(err.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(socket_error("changing the mode of"))
}
