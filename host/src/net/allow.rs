//! `--allow-from`: the source addresses that may connect over TCP.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks allowed to connect; empty means everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    networks: Vec<IpNet>,
}

impl AllowList {
    pub fn new(networks: Vec<IpNet>) -> AllowList {
        AllowList { networks }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `address` may connect. An IPv4 peer on a dual-stack socket
    /// (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
    pub fn allows(&self, address: IpAddr) -> bool {
        if self.networks.is_empty() {
            return true;
        }
        let address = address.to_canonical();
        self.networks.iter().any(|net| net.contains(&address))
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32`, or a single address (`/32`, `/128`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not a CIDR network (e.g. 10.0.0.0/8) or an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_both_families_and_mapped_addresses() {
        let list = AllowList::new(vec![
            parse_network("10.0.0.0/8").expect("v4"),
            parse_network("2001:db8::/32").expect("v6"),
            parse_network("192.0.2.7").expect("host"),
        ]);
        let allowed = |text: &str| list.allows(text.parse().expect("address"));
        assert!(allowed("10.1.2.3"));
        assert!(allowed("::ffff:10.1.2.3"), "v4-mapped");
        assert!(allowed("2001:db8::1"));
        assert!(allowed("192.0.2.7"));
        assert!(!allowed("192.0.2.8"));
        assert!(!allowed("127.0.0.1"));
        assert!(!allowed("2001:db9::1"));
        assert!(AllowList::default().allows("203.0.113.1".parse().expect("address")));
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("ten").is_err());
    }
}
