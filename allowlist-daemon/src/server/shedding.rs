//! Making room under pressure: the connections open and what each is doing (waiting for a
//! request, since when, and whether it has served one; or serving one), so that at the
//! connection limit the one that has waited longest is closed for the newcomer: kept-alive
//! idle connections first, then those that have not sent a whole request. A request being
//! served is never cut; a request whose headers complete as its connection is shed gets a 503
//! without reaching the API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::task::AbortHandle;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Waiting for a request (its headers, or with TLS its handshake) since `since`; `served`
    /// when it is a kept-alive connection that has served one before.
    Waiting { since: Instant, served: bool },
    /// Serving a request, until its response's body is sent.
    Serving,
    /// Closed to make room: serves nothing more.
    Shed,
}

/// One open connection.
struct Open {
    activity: Arc<Mutex<Activity>>,
    /// Ends the connection's task; set once it is spawned.
    abort: Option<AbortHandle>,
}

/// The open connections, by the id each was registered with.
#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Open>,
}

/// The connections the server has open, shared by the accept loop and every connection.
#[derive(Clone, Default)]
pub(super) struct Connections {
    table: Arc<Mutex<Table>>,
}

/// Locks `mutex`, whose data no panic can leave half-written (each update is one store).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connections {
    /// Registers a connection just accepted: waiting for its first request.
    pub(super) fn register(&self) -> Registration {
        let activity = Arc::new(Mutex::new(Activity::Waiting {
            since: Instant::now(),
            served: false,
        }));
        let mut table = lock(&self.table);
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Open {
                activity: activity.clone(),
                abort: None,
            },
        );
        Registration {
            id,
            connections: self.clone(),
            activity,
        }
    }

    /// Notes how to end connection `id`'s task (a connection already gone is left alone).
    pub(super) fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(open) = lock(&self.table).open.get_mut(&id) {
            open.abort = Some(abort);
        }
    }

    /// Closes the connection that has waited longest for a request, idle kept-alive ones
    /// first; returns whether there was one (every connection may be serving a request).
    pub(super) fn shed_longest_waiting(&self) -> bool {
        let table = lock(&self.table);
        let oldest = table
            .open
            .values()
            .filter(|open| open.abort.is_some())
            .filter_map(|open| match *lock(&open.activity) {
                // Idle kept-alive connections sort first, then the longest waiting.
                Activity::Waiting { since, served } => Some(((!served, since), open)),
                Activity::Serving | Activity::Shed => None,
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, open)| open);
        let Some(open) = oldest else {
            return false;
        };
        // Still waiting: a request starts only under the table's lock, held here.
        *lock(&open.activity) = Activity::Shed;
        if let Some(abort) = &open.abort {
            abort.abort();
        }
        true
    }

    /// The connections open.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).open.len()
    }
}

/// A connection's place among the open ones: says what it is doing, and leaves the table
/// when dropped (when its task ends).
pub(super) struct Registration {
    id: u64,
    connections: Connections,
    activity: Arc<Mutex<Activity>>,
}

impl Registration {
    /// Its id, for [`Connections::set_abort`].
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// A request's headers are in: marks the connection serving, unless it was shed (then
    /// the request must not be served). The table's lock is taken first, as the shedding
    /// does, so that a request never starts on a connection being shed.
    pub(super) fn begin_request(self: &Arc<Self>) -> Option<RequestGuard> {
        let _table = lock(&self.connections.table);
        let mut activity = lock(&self.activity);
        if *activity == Activity::Shed {
            return None;
        }
        *activity = Activity::Serving;
        Some(RequestGuard {
            registration: self.clone(),
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.connections.table).open.remove(&self.id);
    }
}

/// Held while a request is served, until its response's body is sent (or dropped): then the
/// connection waits for its next request, from now.
pub(super) struct RequestGuard {
    registration: Arc<Registration>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut activity = lock(&self.registration.activity);
        if *activity == Activity::Serving {
            *activity = Activity::Waiting {
                since: Instant::now(),
                served: true,
            };
        }
    }
}

/// A response body that holds its request's [`RequestGuard`] until it is sent.
pub(super) struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl GuardedBody {
    /// `body`, holding `guard` until it is sent or dropped.
    pub(super) fn wrap(body: Body, guard: RequestGuard) -> Body {
        Body::new(GuardedBody {
            body,
            _guard: guard,
        })
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that waits forever, for its abort handle.
    fn parked(runtime: &tokio::runtime::Runtime) -> tokio::task::JoinHandle<()> {
        runtime.spawn(std::future::pending())
    }

    #[test]
    fn idle_kept_alive_connections_go_first_then_the_longest_waiting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let connections = Connections::default();
        let open = |connections: &Connections| {
            let registration = Arc::new(connections.register());
            let task = parked(&runtime);
            connections.set_abort(registration.id(), task.abort_handle());
            (registration, task)
        };
        let (oldest_new, oldest_task) = open(&connections);
        let (idle, idle_task) = open(&connections);
        let (serving, serving_task) = open(&connections);
        drop(idle.begin_request().expect("not shed"));
        let _serving = serving.begin_request().expect("not shed");

        assert!(connections.shed_longest_waiting());
        runtime.block_on(async {
            assert!(idle_task.await.expect_err("aborted").is_cancelled());
        });
        assert!(
            idle.begin_request().is_none(),
            "a shed connection serves nothing"
        );

        assert!(connections.shed_longest_waiting());
        runtime.block_on(async {
            assert!(oldest_task.await.expect_err("aborted").is_cancelled());
        });

        assert!(
            !connections.shed_longest_waiting(),
            "a request is never cut"
        );
        assert!(!serving_task.is_finished());
        drop((oldest_new, idle));
        assert_eq!(connections.len(), 1);
    }
}
