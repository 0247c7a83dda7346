//! Beacon v2: meta-core's UDP multicast discovery (spec §9).
//!
//! Nodes multicast an `advertise` every interval on 239.255.99.1:9099 (TTL
//! 1); a peer not heard for `missed_intervals` intervals is gone; a `bye`
//! removes it at once; a `probe` is answered by unicast to the prober's
//! address. meta-core advertises a resource with capability `metamesh.core`
//! whose `endpoints.http` is its API URL and `data.urls` its `/urls` object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::meta_core::UrlsResponse;

/// The capability of meta-core's own resource.
pub const CORE_CAPABILITY: &str = "metamesh.core";
/// The capability of our own advertisement.
pub const SERVICE_CAPABILITY: &str = "metamesh.service/meta-fuse";

/// Datagrams above this may fragment; a sender stays under it.
const MAX_DATAGRAM_BYTES: usize = 1400;
const RECEIVE_BUFFER_BYTES: usize = 8192;

/// Where and how often beacon v2 talks. Tests use a private port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconConfig {
    /// Multicast group (239.255.99.1).
    pub group: Ipv4Addr,
    /// UDP port (9099).
    pub port: u16,
    /// Interface address to join and send on; unspecified = the default route.
    pub interface: Ipv4Addr,
    /// Advertise interval (10 s).
    pub interval: Duration,
    /// A peer not heard for this many intervals is dropped (3).
    pub missed_intervals: u32,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        Self {
            group: Ipv4Addr::new(239, 255, 99, 1),
            port: 9099,
            interface: Ipv4Addr::UNSPECIFIED,
            interval: Duration::from_secs(10),
            missed_intervals: 3,
        }
    }
}

/// Every beacon v2 datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconMessage {
    /// Always `beacon`.
    pub proto: String,
    /// Always 2.
    pub v: u32,
    /// `probe`, `advertise` or `bye`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who is advertising (advertise and bye).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<BeaconNode>,
    /// What it offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<BeaconResource>,
    /// The prober's instance (probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Capability patterns the prober wants answered (probe; empty = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub want: Vec<String>,
}

/// Who sends an advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconNode {
    /// Service name (`meta-core`, `meta-fuse`).
    pub name: String,
    /// Unique instance id.
    pub instance: String,
    /// Version, if told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `starting` or `running` (absent = running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// One advertised resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconResource {
    /// Resource id.
    pub id: String,
    /// Capability strings.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Named endpoints (`http`, `ui`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// Free-form data (`urls` for the core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl BeaconMessage {
    /// A well-formed v2 message, or `None` for anything else on the group
    /// (beacon v1, other versions, an advertise without a node).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let message: Self = serde_json::from_slice(bytes).ok()?;
        if message.proto != "beacon" || message.v != 2 {
            return None;
        }
        match message.kind.as_str() {
            "probe" => Some(message),
            "advertise" | "bye" => message
                .node
                .as_ref()
                .is_some_and(|node| !node.name.is_empty() && !node.instance.is_empty())
                .then_some(message),
            _ => None,
        }
    }

    fn new(kind: &str) -> Self {
        Self {
            proto: "beacon".to_owned(),
            v: 2,
            kind: kind.to_owned(),
            node: None,
            resources: Vec::new(),
            from: None,
            want: Vec::new(),
        }
    }

    /// An `advertise` of `node` offering `resources`.
    pub fn advertise(node: BeaconNode, resources: Vec<BeaconResource>) -> Self {
        Self {
            node: Some(node),
            resources,
            ..Self::new("advertise")
        }
    }

    /// A `probe` from `instance` for capabilities `want`.
    pub fn probe(instance: &str, want: &[&str]) -> Self {
        Self {
            from: Some(instance.to_owned()),
            want: want.iter().map(|pattern| (*pattern).to_owned()).collect(),
            ..Self::new("probe")
        }
    }

    fn encode(&self) -> Vec<u8> {
        // Plain data with string keys: encoding cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether capability `cap` satisfies `pattern` (beacon v2 rules: `*`;
/// `x/*` for any variant of `x`; `@N` contracts must match when asked).
fn capability_matches(pattern: &str, cap: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let split = |text: &str| match text.rsplit_once('@') {
        Some((base, contract)) => (base.to_owned(), Some(contract.to_owned())),
        None => (text.to_owned(), None),
    };
    let (pattern_base, pattern_contract) = split(pattern);
    let (cap_base, cap_contract) = split(cap);
    if pattern_contract.is_some() && pattern_contract != cap_contract {
        return false;
    }
    match pattern_base.strip_suffix("/*") {
        Some(prefix) => cap_base
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        None => pattern_base == cap_base,
    }
}

/// A meta-core heard on the beacon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreAdvert {
    /// The node's instance id.
    pub instance: String,
    /// The node's name.
    pub name: String,
    /// Its API base URL (`endpoints.http`, else `data.urls.apiUrl`).
    pub api_url: String,
    /// Its `/urls` object as advertised (`redisUrl` is never in it).
    pub urls: UrlsResponse,
    /// Where the datagram came from.
    pub address: SocketAddr,
}

/// The core a message advertises, if it is a core's `advertise`.
fn core_of(message: &BeaconMessage, address: SocketAddr) -> Option<CoreAdvert> {
    if message.kind != "advertise" {
        return None;
    }
    let node = message.node.as_ref()?;
    let resource = message.resources.iter().find(|resource| {
        resource
            .caps
            .iter()
            .any(|cap| capability_matches(CORE_CAPABILITY, cap))
    })?;
    let urls: UrlsResponse = resource
        .data
        .as_ref()
        .and_then(|data| data.get("urls"))
        .and_then(|urls| serde_json::from_value(urls.clone()).ok())
        .unwrap_or_default();
    let api_url = resource
        .endpoints
        .get("http")
        .cloned()
        .filter(|url| !url.trim().is_empty())
        .or_else(|| urls.api_url.clone().filter(|url| !url.trim().is_empty()))?;
    Some(CoreAdvert {
        instance: node.instance.clone(),
        name: node.name.clone(),
        api_url: api_url.trim().trim_end_matches('/').to_owned(),
        urls,
        address,
    })
}

/// Which cores are alive and which one we use: the first heard, kept while
/// it lives; others are ignored with one warning each.
#[derive(Debug)]
struct CoreTable {
    alive: HashMap<String, (CoreAdvert, u64, Instant)>,
    next_order: u64,
    chosen: Option<String>,
    warned: HashSet<String>,
    lifetime: Duration,
    /// The API URL of the core already in use when listening started (a
    /// watch after discovery), and until when it is waited for: it wins
    /// over cores heard before it.
    preferred: Option<(String, Instant)>,
}

impl CoreTable {
    fn new(lifetime: Duration) -> Self {
        Self {
            alive: HashMap::new(),
            next_order: 0,
            chosen: None,
            warned: HashSet::new(),
            lifetime,
            preferred: None,
        }
    }

    fn heard(&mut self, advert: CoreAdvert, now: Instant) {
        let order = match self.alive.get(&advert.instance) {
            Some((_, order, _)) => *order,
            None => {
                self.next_order += 1;
                self.next_order
            }
        };
        self.alive
            .insert(advert.instance.clone(), (advert, order, now));
    }

    fn bye(&mut self, instance: &str) {
        self.alive.remove(instance);
        self.warned.remove(instance);
    }

    fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.alive
            .retain(|_, (_, _, last_seen)| now.duration_since(*last_seen) < lifetime);
        self.warned
            .retain(|instance| self.alive.contains_key(instance));
    }

    /// The core in use after the latest changes.
    fn choose(&mut self, now: Instant) -> Option<CoreAdvert> {
        if let Some((api_url, until)) = &self.preferred {
            let preferred = self
                .alive
                .values()
                .find(|(advert, _, _)| advert.api_url == *api_url)
                .map(|(advert, _, _)| advert.instance.clone());
            match preferred {
                Some(instance) => {
                    self.chosen = Some(instance);
                    self.preferred = None;
                }
                // Not heard yet: choose nothing rather than a newcomer.
                None if now < *until => return None,
                None => self.preferred = None,
            }
        }
        if self
            .chosen
            .as_ref()
            .is_none_or(|chosen| !self.alive.contains_key(chosen))
        {
            self.chosen = self
                .alive
                .values()
                .min_by_key(|(_, order, _)| *order)
                .map(|(advert, _, _)| advert.instance.clone());
        }
        let chosen = self.chosen.clone()?;
        for (instance, (advert, _, _)) in &self.alive {
            if *instance != chosen && self.warned.insert(instance.clone()) {
                tracing::warn!(
                    "ignoring meta-core {} ({}) heard on the beacon: already using meta-core {chosen}",
                    advert.instance,
                    advert.api_url
                );
            }
        }
        self.alive.get(&chosen).map(|(advert, _, _)| advert.clone())
    }
}

/// A UDP socket on the beacon group's port, joined to the group, TTL 1,
/// multicast loop on (a core on the same host is heard).
fn group_socket(config: &BeaconConfig) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several listeners (meta-core, us, tests) share the port on one host.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port).into())?;
    socket.join_multicast_v4(&config.group, &config.interface)?;
    configure_sending(&socket, config)?;
    UdpSocket::from_std(socket.into())
}

/// An ephemeral-port socket for sending: probe replies come back to it by
/// unicast, never load-balanced onto another socket sharing the group port.
fn sending_socket(config: &BeaconConfig) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())?;
    configure_sending(&socket, config)?;
    UdpSocket::from_std(socket.into())
}

fn configure_sending(socket: &socket2::Socket, config: &BeaconConfig) -> io::Result<()> {
    socket.set_multicast_ttl_v4(1)?;
    socket.set_multicast_loop_v4(true)?;
    if !config.interface.is_unspecified() {
        socket.set_multicast_if_v4(&config.interface)?;
    }
    Ok(())
}

/// The meta-cores heard on the beacon; stops listening when dropped.
#[derive(Debug)]
pub struct BeaconWatcher {
    chosen: watch::Receiver<Option<CoreAdvert>>,
    task: JoinHandle<()>,
}

impl Drop for BeaconWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BeaconWatcher {
    /// The core in use now, if any is alive.
    pub fn current(&self) -> Option<CoreAdvert> {
        self.chosen.borrow().clone()
    }

    /// Waits until a core is in use and returns it. Cancel-safe.
    pub async fn wait_for_core(&mut self) -> CoreAdvert {
        loop {
            if let Some(core) = self.chosen.borrow_and_update().clone() {
                return core;
            }
            if self.chosen.changed().await.is_err() {
                // The listener ended (it never does while we hold it).
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits for the next change of the core in use: `Some` for a new
    /// core, `None` when none is alive any more. Cancel-safe.
    pub async fn changed(&mut self) -> Option<CoreAdvert> {
        if self.chosen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.chosen.borrow_and_update().clone()
    }
}

/// Starts listening for meta-cores: joins the group, sends one probe for
/// `metamesh.core` (answers arrive at once rather than within an interval),
/// and keeps the table of live cores. `in_use` is the API URL of a core
/// already in use, which keeps winning while it is alive even if another
/// answers first. Must be called inside a tokio runtime.
pub fn watch_cores(config: &BeaconConfig, in_use: Option<&str>) -> io::Result<BeaconWatcher> {
    let listener = group_socket(config)?;
    let prober = sending_socket(config)?;
    let group = SocketAddr::V4(SocketAddrV4::new(config.group, config.port));
    let interval = config.interval;
    let lifetime = config.interval * config.missed_intervals.max(1);
    let (publish, chosen) = watch::channel(None);
    let instance = format!("meta-fuse-probe-{}", std::process::id());
    let in_use = in_use.map(|api_url| api_url.trim_end_matches('/').to_owned());
    let task = tokio::spawn(async move {
        let mut table = CoreTable::new(lifetime);
        table.preferred = in_use.map(|api_url| (api_url, Instant::now() + lifetime));
        let probe = BeaconMessage::probe(&instance, &[CORE_CAPABILITY]).encode();
        if let Err(error) = prober.send_to(&probe, group).await {
            tracing::warn!(%error, "cannot send a beacon probe; waiting for advertisements");
        }
        let mut expiry = tokio::time::interval(interval);
        let mut listener_buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        let mut prober_buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        loop {
            let received = tokio::select! {
                received = listener.recv_from(&mut listener_buffer) => received.map(|(length, from)| (&listener_buffer[..length], from)),
                received = prober.recv_from(&mut prober_buffer) => received.map(|(length, from)| (&prober_buffer[..length], from)),
                _ = expiry.tick() => {
                    table.expire(Instant::now());
                    publish.send_if_modified(|chosen| replace_if_different(chosen, table.choose(Instant::now())));
                    continue;
                }
            };
            let (datagram, from) = match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "beacon receive failed");
                    continue;
                }
            };
            let Some(message) = BeaconMessage::parse(datagram) else {
                continue;
            };
            match message.kind.as_str() {
                "bye" => {
                    if let Some(node) = &message.node {
                        table.bye(&node.instance);
                    }
                }
                "advertise" => {
                    if let Some(core) = core_of(&message, from) {
                        table.heard(core, Instant::now());
                    }
                }
                _ => continue,
            }
            table.expire(Instant::now());
            publish.send_if_modified(|chosen| {
                replace_if_different(chosen, table.choose(Instant::now()))
            });
        }
    });
    Ok(BeaconWatcher { chosen, task })
}

fn replace_if_different(slot: &mut Option<CoreAdvert>, new: Option<CoreAdvert>) -> bool {
    if *slot == new {
        return false;
    }
    *slot = new;
    true
}

/// Our own advertisement on the beacon; sends `bye` and stops when dropped.
#[derive(Debug)]
pub struct BeaconAdvertiser {
    socket: Arc<UdpSocket>,
    bye: Vec<u8>,
    group: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for BeaconAdvertiser {
    fn drop(&mut self) {
        self.task.abort();
        // Best effort: neighbours otherwise drop us after the missed intervals.
        let _ = self.socket.try_send_to(&self.bye, self.group);
    }
}

/// The `metamesh.service/meta-fuse` resource of a metafuse whose HTTP API
/// is at `http_url`.
pub fn service_resource(http_url: &str) -> BeaconResource {
    let mut endpoints = BTreeMap::new();
    endpoints.insert("http".to_owned(), http_url.trim_end_matches('/').to_owned());
    endpoints.insert("ui".to_owned(), http_url.trim_end_matches('/').to_owned());
    BeaconResource {
        id: "meta-fuse".to_owned(),
        caps: vec![SERVICE_CAPABILITY.to_owned()],
        endpoints,
        data: None,
    }
}

/// Advertises `node` with `resources` every interval (the first
/// advertisement is sent before this returns), answers probes that want
/// one of them by unicast, and says `bye` when dropped. Used for our
/// own `metamesh.service/meta-fuse` advertisement (with
/// [`service_resource`]) and by tests to play a meta-core. Must be called
/// inside a tokio runtime.
pub fn advertise(
    config: &BeaconConfig,
    node: BeaconNode,
    resources: Vec<BeaconResource>,
) -> io::Result<BeaconAdvertiser> {
    let listener = group_socket(config)?;
    let socket = Arc::new(sending_socket(config)?);
    let group = SocketAddr::V4(SocketAddrV4::new(config.group, config.port));
    let message = BeaconMessage::advertise(node.clone(), resources.clone());
    let advertisement = message.encode();
    if advertisement.len() > MAX_DATAGRAM_BYTES {
        tracing::warn!(
            bytes = advertisement.len(),
            "beacon advertisement exceeds {MAX_DATAGRAM_BYTES} bytes and may fragment"
        );
    }
    let bye = BeaconMessage {
        node: Some(node.clone()),
        ..BeaconMessage::new("bye")
    }
    .encode();
    let interval = config.interval;
    // The first advertisement leaves before this returns, so whoever
    // started us can tell the world we are announced.
    let first_sent = match socket.try_send_to(&advertisement, group) {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "first beacon advertise failed; retrying at once");
            false
        }
    };
    let sender = socket.clone();
    let task = tokio::spawn(async move {
        let first_tick = if first_sent {
            Instant::now() + interval
        } else {
            Instant::now()
        };
        let mut ticker = tokio::time::interval_at(first_tick, interval);
        let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = sender.send_to(&advertisement, group).await {
                        tracing::debug!(%error, "beacon advertise failed");
                    }
                }
                received = listener.recv_from(&mut buffer) => {
                    let Ok((length, from)) = received else { continue };
                    let Some(probe) = BeaconMessage::parse(&buffer[..length]) else { continue };
                    if probe.kind != "probe" || probe.from.as_deref() == Some(node.instance.as_str()) {
                        continue;
                    }
                    let wanted = probe.want.is_empty()
                        || resources.iter().any(|resource| {
                            probe.want.iter().any(|pattern| {
                                resource.caps.iter().any(|cap| capability_matches(pattern, cap))
                            })
                        });
                    if wanted && let Err(error) = sender.send_to(&advertisement, from).await {
                        tracing::debug!(%error, "beacon probe reply failed");
                    }
                }
            }
        }
    });
    Ok(BeaconAdvertiser {
        socket,
        bye,
        group,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_message(instance: &str, api_url: &str) -> BeaconMessage {
        let mut endpoints = BTreeMap::new();
        endpoints.insert("http".to_owned(), api_url.to_owned());
        BeaconMessage::advertise(
            BeaconNode {
                name: "meta-core".into(),
                instance: instance.into(),
                version: None,
                status: Some("running".into()),
            },
            vec![BeaconResource {
                id: "core".into(),
                caps: vec![CORE_CAPABILITY.into()],
                endpoints,
                data: Some(
                    serde_json::json!({"urls": {"hostname": "h", "webdavUrlInternal": "http://h/webdav"}}),
                ),
            }],
        )
    }

    #[test]
    fn only_well_formed_v2_messages_parse() {
        let advert = core_message("a", "http://a:9000").encode();
        assert!(BeaconMessage::parse(&advert).is_some());
        assert!(BeaconMessage::parse(br#"{"proto":"beacon","v":1,"type":"advertise"}"#).is_none());
        assert!(BeaconMessage::parse(br#"{"proto":"beacon","v":2,"type":"advertise"}"#).is_none());
        assert!(BeaconMessage::parse(br#"{"proto":"beacon","v":2,"type":"discovery"}"#).is_none());
        assert!(BeaconMessage::parse(b"junk").is_none());
        assert!(BeaconMessage::parse(br#"{"proto":"beacon","v":2,"type":"probe"}"#).is_some());
    }

    #[test]
    fn capability_patterns_follow_beacon_rules() {
        assert!(capability_matches("metamesh.core", "metamesh.core"));
        assert!(capability_matches("*", "anything"));
        assert!(capability_matches(
            "metamesh.service/*",
            "metamesh.service/meta-fuse"
        ));
        assert!(!capability_matches(
            "metamesh.service/*",
            "metamesh.service"
        ));
        assert!(capability_matches("x/nzb", "x/nzb@1"));
        assert!(!capability_matches("x/nzb@2", "x/nzb@1"));
    }

    #[test]
    fn the_first_core_heard_wins_until_it_is_gone() {
        let address: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let start = Instant::now();
        let mut table = CoreTable::new(Duration::from_secs(30));
        let a = core_of(&core_message("a", "http://a:9000/"), address).expect("core a");
        assert_eq!(a.api_url, "http://a:9000");
        assert_eq!(
            a.urls.webdav_url_internal.as_deref(),
            Some("http://h/webdav")
        );
        let b = core_of(&core_message("b", "http://b:9000"), address).expect("core b");
        table.heard(a.clone(), start);
        table.heard(b.clone(), start + Duration::from_secs(1));
        assert_eq!(
            table.choose(Instant::now()).map(|core| core.instance),
            Some("a".into())
        );
        // a keeps advertising: still a.
        table.heard(a.clone(), start + Duration::from_secs(20));
        table.heard(b.clone(), start + Duration::from_secs(25));
        assert_eq!(
            table.choose(Instant::now()).map(|core| core.instance),
            Some("a".into())
        );
        // a is silent for three intervals: b takes over.
        table.expire(start + Duration::from_secs(51));
        assert_eq!(
            table.choose(Instant::now()).map(|core| core.instance),
            Some("b".into())
        );
        table.bye("b");
        assert_eq!(table.choose(Instant::now()), None);
    }
}
