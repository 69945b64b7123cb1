//! The control socket: the protocol (layer 2), the server the supervisor
//! polls (layer 2) and the `ctl` client (layer 4); and the HTTP endpoint
//! of the metrics (layer 2), polled like the control socket.

pub mod client;
pub mod http;
pub mod proto;
pub mod server;
