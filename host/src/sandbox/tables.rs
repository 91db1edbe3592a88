//! `spoa:agent/ip-table` for guests: the tables the operator granted, looked
//! up in the host's memory. A `table` resource holds the live table, so
//! every lookup answers from the version serving at that moment; nothing
//! here can wait, so a guest that only adds tables is still entered
//! directly, without a fiber.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ipnet::IpNet;
use wasmtime::component::Resource;

use super::bindings::ip_table as wit;
use super::log::Level;
use super::state::GuestState;
use crate::tables::{FieldValue, LiveTable, check_table_name};

/// An open table, as the guest's `table` resource.
pub struct OpenTable {
    live: Arc<LiveTable>,
    /// Lookups not yet added to the table's shared counter: one atomic add
    /// per lookup, on a counter every worker shares, would cost more than
    /// the lookup.
    uncounted: u64,
}

/// Lookups counted locally before they are published.
const COUNT_EVERY: u64 = 256;

impl OpenTable {
    fn counted(&mut self) -> &LiveTable {
        self.uncounted += 1;
        if self.uncounted >= COUNT_EVERY {
            self.flush_lookups();
        }
        &self.live
    }

    fn flush_lookups(&mut self) {
        self.live
            .stats
            .lookups
            .fetch_add(std::mem::take(&mut self.uncounted), Ordering::Relaxed);
    }
}

impl Drop for OpenTable {
    fn drop(&mut self) {
        self.flush_lookups();
    }
}

fn address(address: wit::IpAddress) -> IpAddr {
    match address {
        wit::IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

fn network(network: IpNet) -> wit::IpNetwork {
    let address = match network.network() {
        IpAddr::V4(v4) => wit::IpAddress::Ipv4(super::convert::ipv4_to_wit(v4)),
        IpAddr::V6(v6) => wit::IpAddress::Ipv6(super::convert::ipv6_to_wit(v6)),
    };
    wit::IpNetwork {
        address,
        prefix_len: network.prefix_len(),
    }
}

fn field(value: FieldValue) -> wit::FieldValue {
    match value {
        FieldValue::Text(text) => wit::FieldValue::Text(text),
        FieldValue::Unsigned(n) => wit::FieldValue::Unsigned(n),
        FieldValue::Signed(n) => wit::FieldValue::Signed(n),
        FieldValue::Float(n) => wit::FieldValue::Float(n),
        FieldValue::Boolean(b) => wit::FieldValue::Boolean(b),
    }
}

impl GuestState {
    /// The table behind a handle, with the lookup counted.
    fn open_table(&mut self, table: &Resource<OpenTable>) -> wasmtime::Result<&LiveTable> {
        Ok(self.table.get_mut(table)?.counted())
    }
}

impl wit::Host for GuestState {
    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<OpenTable>, wit::Error>> {
        if let Err(reason) = check_table_name(&name) {
            self.log
                .record(Level::Debug, &format!("ip-table open: {reason}"));
            return Ok(Err(wit::Error::NoSuchTable));
        }
        let Some(live) = self.ip_tables.get(&name) else {
            self.log.record(
                Level::Debug,
                &format!("ip-table open: table `{name}` is not granted to this guest"),
            );
            return Ok(Err(wit::Error::AccessDenied));
        };
        let live = live.clone();
        Ok(Ok(self.table.push(OpenTable { live, uncounted: 0 })?))
    }
}

impl wit::HostTable for GuestState {
    fn contains(
        &mut self,
        table: Resource<OpenTable>,
        address: wit::IpAddress,
    ) -> wasmtime::Result<bool> {
        let address = self::address(address);
        Ok(self.open_table(&table)?.current().contains(address))
    }

    fn lookup(
        &mut self,
        table: Resource<OpenTable>,
        address: wit::IpAddress,
    ) -> wasmtime::Result<Option<wit::Hit>> {
        let current = self.open_table(&table)?.current();
        Ok(current.lookup(self::address(address)).map(|hit| wit::Hit {
            network: network(hit.network),
            label: hit.label.map(str::to_owned),
        }))
    }

    fn lookup_fields(
        &mut self,
        table: Resource<OpenTable>,
        address: wit::IpAddress,
        paths: Vec<String>,
    ) -> wasmtime::Result<Option<wit::FieldsHit>> {
        let current = self.open_table(&table)?.current();
        Ok(current
            .lookup_fields(self::address(address), &paths)
            .map(|hit| wit::FieldsHit {
                network: network(hit.network),
                values: hit
                    .values
                    .into_iter()
                    .map(|value| value.map(field))
                    .collect(),
            }))
    }

    fn len(&mut self, table: Resource<OpenTable>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&table)?.live.current().len() as u64)
    }

    fn drop(&mut self, table: Resource<OpenTable>) -> wasmtime::Result<()> {
        self.table.delete(table)?;
        Ok(())
    }
}
