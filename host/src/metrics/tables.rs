//! `spoa_ip_table_*`: the IP tables' figures, copied from their counters at
//! each scrape (a lookup counts into its table's atomic, nothing here is on
//! its path).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tables::{IpTables, TableFailure};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableResultLabels {
    table: String,
    source: String,
    result: &'static str,
}

pub(super) struct TableSeries {
    entries: Family<TableLabels, Gauge>,
    malformed: Family<TableLabels, Gauge>,
    load_seconds: Family<TableLabels, Gauge<f64, AtomicU64>>,
    lookups: Family<TableLabels, Counter>,
    loads: Family<TableResultLabels, Counter>,
}

impl TableSeries {
    pub(super) fn register(r: &mut super::Registrar) -> TableSeries {
        TableSeries {
            entries: r.series(
                "ip_table_entries",
                "Networks in each IP table's serving version",
            ),
            malformed: r.series(
                "ip_table_malformed_lines",
                "Lines the serving version of each list skipped as malformed",
            ),
            load_seconds: r.series(
                "ip_table_load_seconds",
                "How long the last successful load of each IP table took",
            ),
            lookups: r.series("ip_table_lookups", "Lookups guests made in each IP table"),
            loads: r.series(
                "ip_table_loads",
                "Loads of each IP table, by result: ok, or the cause that kept the last version serving (read, format, malformed, unavailable)",
            ),
        }
    }

    pub(super) fn update(&self, tables: &IpTables) {
        let raise = |counter: &Counter, to: &AtomicU64| {
            super::raise_to(counter, to.load(Ordering::Relaxed));
        };
        for table in tables.all() {
            let labels = TableLabels {
                table: table.name().to_owned(),
                source: table.source().to_string(),
            };
            let stats = &table.stats;
            self.entries
                .get_or_create(&labels)
                .set(stats.entries.load(Ordering::Relaxed) as i64);
            self.malformed
                .get_or_create(&labels)
                .set(stats.malformed_lines.load(Ordering::Relaxed) as i64);
            self.load_seconds
                .get_or_create(&labels)
                .set(stats.last_load_micros.load(Ordering::Relaxed) as f64 / 1e6);
            raise(&self.lookups.get_or_create(&labels), &stats.lookups);
            let result = |result: &'static str| TableResultLabels {
                table: labels.table.clone(),
                source: labels.source.clone(),
                result,
            };
            raise(&self.loads.get_or_create(&result("ok")), &stats.loads_ok);
            for cause in TableFailure::ALL {
                raise(
                    &self.loads.get_or_create(&result(cause.name())),
                    &stats.loads_failed[cause as usize],
                );
            }
        }
    }
}
