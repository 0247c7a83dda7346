//! How a source is deployed (one node, a cluster, a sentinel-watched
//! master) and what each of its nodes served, for health, stats and
//! metrics.

use std::sync::Arc;

/// The shape of a source's deployment, as it stands when read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceTopology {
    /// `single`, `cluster` or `sentinel` for Redis; `http` for meta-core.
    pub mode: &'static str,
    /// The nodes known now (a cluster's masters, a sentinel's current
    /// master, the one node), with what was fetched from each.
    pub nodes: Vec<SourceNode>,
}

/// One node of a [`SourceTopology`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceNode {
    /// `host:port`.
    pub address: String,
    /// `master` while it serves, `gone` for a node fetched from earlier
    /// that serves no more (failed over, resharded away).
    pub role: &'static str,
    /// Values fetched from it since the start, where counted per node.
    pub fetched_keys: Option<u64>,
}

/// Reads a source's [`SourceTopology`] from any thread without touching
/// the source (it reads the source's shared figures, no IO).
pub type TopologyReader = Arc<dyn Fn() -> SourceTopology + Send + Sync>;
