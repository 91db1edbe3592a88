//! Text lists: an address or network per line, `#` comments, and an
//! optional label after it (`192.0.2.0/24 spam`, `192.0.2.0/24,spam`, or
//! Spamhaus DROP's `192.0.2.0/24 ; SBL123`). FireHOL `.netset` and
//! `.ipset` files, Spamhaus DROP and most published block lists read as they
//! are. A line that is not an address or network is skipped and counted.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::prefix::{Entry, PrefixTable};

/// Most bytes of a label kept (longer ones are cut at a character boundary).
const MAX_LABEL_BYTES: usize = 256;

/// What parsing a list found.
#[derive(Debug)]
pub struct ParsedList {
    pub table: PrefixTable,
    /// Lines skipped as malformed, and the first of them (number, text).
    pub malformed: usize,
    pub first_malformed: Option<(usize, String)>,
    /// Networks listed more than once (the first label is kept).
    pub duplicates: usize,
}

/// Parses a list from its text.
pub fn parse(text: &str) -> ParsedList {
    // A byte-order mark (editors on Windows write one) is not a line's text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = ListBuilder::default();
    for (index, line) in text.lines().enumerate() {
        builder.line(index + 1, line);
    }
    builder.finish()
}

/// Builds a table from lines, one at a time (a file, or a Redis set's
/// members).
#[derive(Default)]
pub struct ListBuilder {
    v4: Vec<Entry<u32>>,
    v6: Vec<Entry<u128>>,
    labels: Vec<Box<str>>,
    label_index: HashMap<Box<str>, u32>,
    malformed: usize,
    first_malformed: Option<(usize, String)>,
}

impl ListBuilder {
    pub fn line(&mut self, number: usize, line: &str) {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            return;
        }
        let (network_text, rest) = content
            .split_once(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .unwrap_or((content, ""));
        let label = rest
            .trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .trim();
        let Some(network) = parse_network(network_text) else {
            self.malformed += 1;
            if self.first_malformed.is_none() {
                self.first_malformed = Some((number, truncate(content, 80).to_owned()));
            }
            return;
        };
        let label = if label.is_empty() {
            u32::MAX
        } else {
            self.intern(truncate(label, MAX_LABEL_BYTES))
        };
        match network {
            IpNet::V4(net) => self.v4.push(Entry {
                start: u32::from(net.network()),
                prefix: net.prefix_len(),
                label,
            }),
            IpNet::V6(net) => self.v6.push(Entry {
                start: u128::from(net.network()),
                prefix: net.prefix_len(),
                label,
            }),
        }
    }

    fn intern(&mut self, label: &str) -> u32 {
        if let Some(&index) = self.label_index.get(label) {
            return index;
        }
        let index = self.labels.len() as u32;
        self.labels.push(label.into());
        self.label_index.insert(label.into(), index);
        index
    }

    pub fn finish(self) -> ParsedList {
        let (table, duplicates) = PrefixTable::new(self.v4, self.v6, self.labels);
        ParsedList {
            table,
            malformed: self.malformed,
            first_malformed: self.first_malformed,
            duplicates,
        }
    }
}

/// `a.b.c.d`, `a.b.c.d/len`, or the IPv6 forms; host bits are cleared, and
/// an IPv4-mapped IPv6 network (`::ffff:a.b.c.d/120`) is the IPv4 network.
pub fn parse_network(text: &str) -> Option<IpNet> {
    let network = match text.parse::<IpNet>() {
        Ok(network) => network.trunc(),
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(match network {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => network,
        },
        other => other,
    })
}

fn truncate(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_of(list: &ParsedList, address: &str) -> Option<Option<String>> {
        list.table
            .lookup(address.parse().unwrap())
            .map(|hit| hit.label.map(str::to_owned))
    }

    #[test]
    fn the_formats_of_published_lists_read() {
        let list = parse(
            "# FireHOL level1\n\
             192.0.2.0/24\n\
             198.51.100.7\n\
             203.0.113.0/24 ; SBL123\n\
             2001:db8::/32,documentation\n\
             10.0.0.0/8 private # comment after\n\
             \n\
             ::ffff:100.64.0.0/106\n",
        );
        assert_eq!(list.malformed, 0);
        assert_eq!(list.table.len(), 6);
        assert_eq!(label_of(&list, "192.0.2.77"), Some(None));
        assert_eq!(label_of(&list, "198.51.100.7"), Some(None));
        assert_eq!(label_of(&list, "198.51.100.8"), None);
        assert_eq!(label_of(&list, "203.0.113.1"), Some(Some("SBL123".into())));
        assert_eq!(
            label_of(&list, "2001:db8:1::1"),
            Some(Some("documentation".into()))
        );
        assert_eq!(label_of(&list, "10.9.9.9"), Some(Some("private".into())));
        // The mapped network is the IPv4 one, 100.64.0.0/10.
        assert_eq!(label_of(&list, "100.100.1.1"), Some(None));
        assert_eq!(label_of(&list, "::ffff:192.0.2.1"), Some(None));
    }

    #[test]
    fn malformed_lines_are_counted_and_the_first_kept() {
        let list = parse("192.0.2.0/24\nnot-an-address\n300.1.1.1\n10.0.0.0/33\n");
        assert_eq!(list.malformed, 3);
        assert_eq!(list.first_malformed, Some((2, "not-an-address".into())));
        assert_eq!(list.table.len(), 1);
    }

    #[test]
    fn host_bits_are_cleared() {
        let list = parse("192.0.2.77/24\n");
        let hit = list.table.lookup("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(hit.network.to_string(), "192.0.2.0/24");
    }
}
