//! The control socket: the protocol (layer 2), the server the supervisor
//! polls (layer 2) and the `ctl` client (layer 4).

pub mod client;
pub mod proto;
pub mod server;
