//! A fleet of gateways from one source of truth, kept in etcd
//! (docs/fleet.md): `wgbpf push` writes a revision, `wgbpf run --etcd`
//! follows it, `wgbpf fleet status` reads what each gateway reports.
//!
//! Beside [`crate::source`]: where that reads a mesh file from disk, this
//! reads the parts of a gateway's mesh from the store and joins them
//! ([`document`]); the plan builder consumes the resulting mesh as any
//! other. Nothing here touches the kernel.
//!
//! - [`layout`]: the keys under the prefix;
//! - [`document`]: a gateway's own part and the shared part → one mesh;
//! - [`store`]: the connection (endpoints, TLS client certificates, auth);
//! - [`push`]: one revision written in one guarded transaction;
//! - [`follow`]: a gateway's snapshot, watched, caught up after a loss;
//! - [`report`]: a gateway's report under a lease, and the fleet's status.

pub mod document;
pub mod follow;
pub mod layout;
pub mod push;
pub mod report;
pub mod store;

use thiserror::Error;

pub use document::{GatewayDocument, Part};
pub use layout::Layout;
pub use store::{Auth, Connection, TlsFiles};

/// What can go wrong between wgbpf and the store.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd: {what}: {source}")]
    Etcd {
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{file}: {message}")]
    Credentials { file: String, message: String },
    #[error(
        "another push landed first (the store is at revision {found}, this push was made \
         against {expected}); nothing was written: check and push again"
    )]
    Raced { expected: u64, found: u64 },
    #[error("{key}: {message}")]
    BadValue { key: String, message: String },
    #[error("gateway name `{name}`: {message}")]
    GatewayName { name: String, message: String },
    #[error(transparent)]
    Document(#[from] crate::mesh::MeshError),
}

impl FleetError {
    fn etcd(what: &'static str) -> impl FnOnce(etcd_client::Error) -> FleetError {
        move |source| FleetError::Etcd { what, source }
    }
}
