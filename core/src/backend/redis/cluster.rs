//! Redis Cluster arithmetic: a key's hash slot, keys grouped by slot, and the primaries that
//! `CLUSTER NODES` lists.

use std::collections::BTreeMap;

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The positions of `keys`, grouped by hash slot.
pub(super) fn by_slot(keys: &[&[u8]]) -> BTreeMap<u16, Vec<usize>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(key_slot(k)).or_default().push(i);
    }
    groups
}

/// `(host, port)` of every primary that `CLUSTER NODES` lists as serving slots.
pub(super) fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags = fields[2];
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        // ip:port@cport[,hostname]
        let addr = fields[1].split('@').next().unwrap_or("");
        if let Some((host, port)) = addr.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                out.push((host.to_owned(), port));
            }
        }
    }
    out
}

/// One primary of a Cluster as `CLUSTER NODES` lists it: its address and the slots it serves
/// (ranges as the server writes them, `0-5460`; migration markers left out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ClusterPrimary {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) slots: Vec<String>,
}

/// Every primary of a `CLUSTER NODES` reply that may own keys, sorted: those serving slots,
/// and those without slots that are not failed (a node just added, which slots may move to).
/// Two nodes that see the same topology give the same list (the `myself` flag and the
/// migration markers, which differ from node to node, are left out).
pub(crate) fn cluster_topology(nodes: &str) -> Vec<ClusterPrimary> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| *f == "handshake" || *f == "noaddr") {
            continue;
        }
        let slots: Vec<String> = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .map(|s| (*s).to_owned())
            .collect();
        if slots.is_empty() && flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        let addr = fields[1].split('@').next().unwrap_or("");
        if let Some((host, port)) = addr.rsplit_once(':') {
            match port.parse() {
                Ok(port) if !host.is_empty() && port != 0 => out.push(ClusterPrimary {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                    slots,
                }),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// How the tracking connections of [`crate::TrackingBus`] reach the nodes of a Cluster: the
/// URL's nodes to ask for the topology, and the auth and TLS settings of every node.
pub(crate) struct ClusterNodes {
    seeds: Vec<(String, u16)>,
    auth: redis::RedisConnectionInfo,
    /// `Some(insecure)` over TLS.
    tls: Option<bool>,
    certs: Option<redis::TlsCertificates>,
    /// The URL without its password, for messages.
    shown: String,
}

impl ClusterNodes {
    pub(super) fn new(
        seeds: Vec<(String, u16)>,
        auth: redis::RedisConnectionInfo,
        tls: Option<bool>,
        certs: Option<redis::TlsCertificates>,
        shown: String,
    ) -> ClusterNodes {
        ClusterNodes {
            seeds,
            auth,
            tls,
            certs,
            shown,
        }
    }

    /// The nodes the URL names, to ask for the topology.
    pub(crate) fn seeds(&self) -> &[(String, u16)] {
        &self.seeds
    }

    /// The URL without its password.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// A client of the node at `host:port` with the Cluster's auth and TLS, speaking
    /// `protocol`.
    pub(crate) fn client(
        &self,
        host: &str,
        port: u16,
        protocol: redis::ProtocolVersion,
    ) -> crate::error::Result<redis::Client> {
        let addr = super::address::tcp_addr(host.to_owned(), port, self.tls);
        let auth = self.auth.clone().set_protocol(protocol);
        let info = super::address::connection_info(addr, auth)?;
        super::address::client_for(info, self.certs.clone(), &self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
    }

    #[test]
    fn cluster_nodes_lists_live_primaries() {
        let text = "\
a 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:30002@40002,host2 master - 0 0 2 connected 5461-10922
c 127.0.0.1:30003@40003 master,fail - 0 0 3 connected 10923-16383
d 127.0.0.1:30004@40004 slave a 0 0 1 connected
";
        assert_eq!(
            cluster_primaries(text),
            [("127.0.0.1".into(), 30001), ("127.0.0.1".into(), 30002)]
        );
    }

    #[test]
    fn cluster_topology_is_the_same_from_every_node() {
        let seen_from_a = "\
a 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461-<-b]
b 127.0.0.1:30002@40002,host2 master - 0 0 2 connected 5461-10922
c 127.0.0.1:30003@40003 master,fail - 0 0 3 connected
d 127.0.0.1:30004@40004 slave a 0 0 1 connected
e 127.0.0.1:30005@40005 master - 0 0 4 connected 10923-16383
f 127.0.0.1:30006@40006 master - 0 0 0 connected
g :0@0 master,noaddr - 0 0 0 connected
";
        let seen_from_b = "\
b 127.0.0.1:30002@40002,host2 myself,master - 0 0 2 connected 5461-10922 [5461->-a]
e 127.0.0.1:30005@40005 master - 0 0 4 connected 10923-16383
f 127.0.0.1:30006@40006 master - 0 0 0 connected
a 127.0.0.1:30001@40001 master - 0 0 1 connected 0-5460
";
        let topology = cluster_topology(seen_from_a);
        assert_eq!(topology, cluster_topology(seen_from_b));
        let ports: Vec<u16> = topology.iter().map(|p| p.port).collect();
        assert_eq!(ports, [30001, 30002, 30005, 30006]);
        assert_eq!(topology[0].slots, ["0-5460"]);
        assert!(topology[3].slots.is_empty());
    }
}
