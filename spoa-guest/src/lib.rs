//! Write `spoa-host` SPOE message handlers in Rust.
//!
//! This crate runs `wit_bindgen::generate!` on the `handler-with-packed-batch` world
//! of `spoa:agent` and adds a few helpers, so a guest depends on it alone:
//!
//! ```
//! use spoa_guest::{Action, Guest, Message, VarScope};
//!
//! struct Echo;
//!
//! impl Guest for Echo {
//!     fn handle_message(msg: Message) -> Result<Vec<Action>, String> {
//!         let Some(n) = msg.int("n") else { return Ok(vec![]) };
//!         Ok(vec![Action::set(VarScope::Txn, "n_plus_one", n + 1)])
//!     }
//! }
//!
//! spoa_guest::export_handler!(Echo);
//! ```
//!
//! Build a `cdylib` for `wasm32-wasip2` (a component as is) or for
//! `wasm32-unknown-unknown` (then wrap it with `componentize`).
//!
//! Everything here except [`random`], [`log`], [`config`], [`kv`],
//! [`metrics`], [`tables`] and [`store::HostStore`] is plain Rust and runs
//! natively too, so a guest's logic can be unit-tested with `cargo test`:
//! [`headers`] parses `req.hdrs_bin`, and [`store::MemoryStore`] stands in
//! for the shared store. Those others call into the host and only work
//! inside it.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[cfg(any(feature = "arena", test))]
pub mod arena;
pub mod headers;
pub mod packed;
pub mod store;

/// The raw output of `wit_bindgen::generate!` for the
/// `handler-with-packed-batch` world. Guests implement [`Guest`](crate::Guest) and export it with
/// [`export_handler!`](crate::export_handler), not these directly.
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler-with-packed-batch",
        path: "wit",
        // The world imports `wasi:config/store` from another package: generate
        // its bindings here too (else wit-bindgen wants a `with` mapping).
        generate_all,
        // Lets guests (and their unit tests) compare values and actions.
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "$crate::bindings",
    });
}

/// A handler guest: `handle_message` for every message, and `init` once per
/// instance before its first message (under `--guest-init-timeout`, not the
/// per-message deadline).
///
/// Per-instance state, the one idiom: prepare it in `init` and keep it in a
/// `static` (`std::sync::OnceLock`, or `std::cell::OnceCell` in a
/// `thread_local!`): settings parsed, patterns compiled, tables and buckets
/// opened. An instance serves many messages; a new one (after a trap, a
/// reload, or `--fresh-instance`) runs `init` again.
pub trait Guest {
    /// Prepares this instance; `Err` refuses it (at load, the version is
    /// refused). The default does nothing.
    fn init() -> Result<(), String> {
        Ok(())
    }

    /// Answers one SPOE message; `Err` sends no action for it (the reason
    /// goes to the host's log).
    fn handle_message(msg: Message) -> Result<Vec<Action>, String>;

    /// Answers the messages of a batch (the host enters a guest once per
    /// read burst rather than once per message): each answer goes to
    /// [`batch::answer`] as soon as it is ready, in order. The default
    /// answers each with [`Guest::handle_message`]; override it only to
    /// share work across the messages of a batch.
    fn handle_messages(msgs: Vec<Message>) {
        for (index, msg) in msgs.into_iter().enumerate() {
            if !batch::answer(index, &Self::handle_message(msg)) {
                return;
            }
        }
    }
}

/// The guest's own counters in the agent's metrics (`spoa:agent/metrics`,
/// 0.1.5), shown as `spoa_guest_counter_total{guest,name}`. The operator
/// allows each name (`metrics = ["rule_hits"]`, `--guest-metric`); others
/// are refused. An atomic add in the host: count per message freely.
pub mod metrics {
    pub use crate::bindings::spoa::agent::metrics::CounterError;

    /// Adds `by` to the counter `name`.
    pub fn increment(name: &str, by: u64) -> Result<(), CounterError> {
        crate::bindings::spoa::agent::metrics::increment(name, by)
    }

    /// Adds one to the counter `name`, ignoring a name the operator did not
    /// allow (counting is not worth failing a message over).
    pub fn count(name: &str) {
        let _ = increment(name, 1);
    }
}

/// Answers of a batch call (`spoa:agent/batch`, 0.1.4, and
/// `spoa:agent/packed`, 0.1.6).
pub mod batch {
    use std::cell::RefCell;

    use crate::Action;
    use crate::packed::HeldAnswers;

    thread_local! {
        /// The answers of a packed batch not yet handed over (`None` in a
        /// `handle-messages` call).
        static HELD: RefCell<Option<HeldAnswers>> = const { RefCell::new(None) };
    }

    /// Gives the host the answer to message `index` of the batch being
    /// handled. Answers go in order, once each; one out of turn traps the
    /// guest (costing that message). `false`: return from
    /// `handle_messages` now, the host enters the guest again with the
    /// messages left.
    ///
    /// In a packed batch (the host's default for this SDK) answers are
    /// held back and handed over `answer-every` at a time, as the host
    /// asked: `false` can only come with the last of a group.
    pub fn answer(index: usize, answer: &Result<Vec<Action>, String>) -> bool {
        let held = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let group = held.as_mut()?;
            if group.next() != index {
                // Out of turn: what was held goes first, and the host
                // refuses this one (it traps the guest).
                hand_over(group);
                return Some(out_of_turn(index, answer));
            }
            Some(!group.hold(answer) || hand_over(group))
        });
        match held {
            Some(go_on) => go_on,
            None => {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                crate::bindings::spoa::agent::batch::answer(
                    index,
                    answer.as_ref().map(Vec::as_slice).map_err(String::as_str),
                )
            }
        }
    }

    /// Answers from message `first` on, to the host; whether to go on.
    fn send(first: usize, answers: &[u8]) -> bool {
        crate::bindings::spoa::agent::packed::answer(
            u32::try_from(first).unwrap_or(u32::MAX),
            answers,
        )
    }

    /// Hands the held answers over; whether to go on.
    fn hand_over(held: &mut HeldAnswers) -> bool {
        match held.take() {
            Some((first, bytes)) => send(first, &bytes),
            None => true,
        }
    }

    fn out_of_turn(index: usize, answer: &Result<Vec<Action>, String>) -> bool {
        let mut bytes = Vec::new();
        crate::packed::encode_answer(answer, &mut bytes);
        send(index, &bytes)
    }

    /// The body of the `handle-packed-messages` export: decodes the
    /// messages, runs them through [`Guest::handle_messages`](crate::Guest::handle_messages)
    /// (whose answers [`answer`] holds back), and hands over what is left.
    #[doc(hidden)]
    pub fn handle_packed<G: crate::Guest + ?Sized>(count: u32, messages: &[u8], answer_every: u32) {
        let messages = match crate::packed::decode_messages(messages, count) {
            Ok(messages) => messages,
            // The host builds these bytes from checked messages: this is
            // not a guest's to recover from.
            Err(malformed) => panic!("packed messages do not decode: {}", malformed.0),
        };
        HELD.with(|held| *held.borrow_mut() = Some(HeldAnswers::new(answer_every)));
        G::handle_messages(messages);
        HELD.with(|held| {
            if let Some(mut group) = held.borrow_mut().take() {
                hand_over(&mut group);
            }
        });
    }
}

/// Exports a type implementing [`Guest`] as the component's `init`,
/// `handle-message`, `handle-messages` and `handle-packed-messages`:
/// `spoa_guest::export_handler!(MyGuest);`, once per guest crate.
#[macro_export]
macro_rules! export_handler {
    ($guest:ty) => {
        const _: () = {
            struct SpoaGuestExport;
            impl $crate::bindings::Guest for SpoaGuestExport {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    <$guest as $crate::Guest>::init()
                }
                fn handle_message(
                    msg: $crate::Message,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Action>, ::std::string::String>
                {
                    <$guest as $crate::Guest>::handle_message(msg)
                }
                fn handle_messages(msgs: ::std::vec::Vec<$crate::Message>) {
                    <$guest as $crate::Guest>::handle_messages(msgs)
                }
                fn handle_packed_messages(
                    count: u32,
                    messages: ::std::vec::Vec<u8>,
                    answer_every: u32,
                ) {
                    $crate::batch::handle_packed::<$guest>(count, &messages, answer_every)
                }
            }
            $crate::bindings::export_world!(SpoaGuestExport);
        };
    };
}

pub use bindings::spoa::agent::types::{
    Action, Arg, Message, SetVar, TypedData, UnsetVar, VarScope,
};

/// The host's randomness (cryptographically seeded); a guest has no other.
pub mod random {
    pub use crate::bindings::spoa::agent::random::{get_random_bytes, get_random_u64};

    /// A uniform integer in `0..n` (multiply-shift: no `%` bias worth the
    /// name, no retry loop). `n == 0` gives 0.
    pub fn below(n: u64) -> u64 {
        ((u128::from(get_random_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Log records in the host's log, tagged with the module name.
pub mod log {
    pub use crate::bindings::spoa::agent::log::{Level, log};

    /// `log(Level::Debug, message)`.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// `log(Level::Info, message)`.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// `log(Level::Warn, message)`.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// `log(Level::Error, message)`.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The operator's settings (`spoa-host --guest-config KEY=VALUE`), through
/// `wasi:config/store`.
pub mod config {
    use crate::bindings::wasi::config::store;
    pub use store::Error;

    /// The value of `key`; `None` if it is not set (or the store failed).
    pub fn get(key: &str) -> Option<String> {
        store::get(key).ok().flatten()
    }

    /// The value of `key` parsed as a `T` (surrounding whitespace ignored),
    /// or `default` if `key` is not set. A value that does not parse is an
    /// error naming the key, for the guest to return from `handle_message`.
    pub fn get_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
        parse_or(key, get(key), default)
    }

    pub(crate) fn parse_or<T: std::str::FromStr>(
        key: &str,
        value: Option<String>,
        default: T,
    ) -> Result<T, String> {
        match value {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("config {key}: invalid value {v:?}")),
        }
    }

    /// Every `(key, value)` pair; empty if the store failed.
    pub fn get_all() -> Vec<(String, String)> {
        store::get_all().unwrap_or_default()
    }

    /// [`get`] with the store's error.
    pub fn try_get(key: &str) -> Result<Option<String>, Error> {
        store::get(key)
    }
}

/// Shared state (`wasi:keyvalue` and `spoa:agent/expiry`): buckets every
/// instance and worker of the agent shares, and with `--kv redis://…` every
/// agent on that Redis. A guest may open `default` (or `""`) unless the
/// operator grants more. Calls are held to the call's deadline: a store that
/// is slow or down gives `Err(Error::Other(..))` soon, and the guest decides
/// what to answer.
///
/// ```no_run
/// use spoa_guest::kv;
///
/// # fn count(ip: &str) -> Result<u64, kv::Error> {
/// let bucket = kv::open(kv::DEFAULT_BUCKET)?;
/// // Requests of this address in the minute since its first one.
/// let n = kv::expiry::increment_within(&bucket, &format!("rate:{ip}"), 1, 60_000)?;
/// if n > 100 {
///     // Remember it for ten minutes.
///     kv::expiry::set_with_ttl(&bucket, &format!("ban:{ip}"), b"1", 600_000)?;
/// }
/// # Ok(n)
/// # }
/// ```
pub mod kv {
    pub use crate::bindings::spoa::agent::expiry;
    pub use crate::bindings::wasi::keyvalue::store::{Bucket, Error, KeyResponse, open};
    pub use crate::bindings::wasi::keyvalue::{atomics, batch};

    /// The bucket every guest may open unless the operator says otherwise.
    pub const DEFAULT_BUCKET: &str = "default";

    /// A counter's value as the store keeps it: canonical decimal text, as
    /// `atomics` and `expiry` write it (`0`, or digits without a sign or a
    /// leading zero, at most 2^63 - 1). Anything else is not a counter, the
    /// host refuses to increment it, and this says `None`.
    pub fn parse_counter(value: &[u8]) -> Option<u64> {
        let canonical = match value {
            [b'0'] => true,
            [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        let number: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
        (canonical && number <= i64::MAX as u64).then_some(number)
    }

    /// A one-line description of a store error, for logs and `err` answers.
    pub fn describe(error: &Error) -> String {
        match error {
            Error::NoSuchStore => "no such store".to_owned(),
            Error::AccessDenied => "access denied (bucket not granted)".to_owned(),
            Error::Other(text) => text.clone(),
        }
    }
}

/// IP tables the host owns (`spoa:agent/ip-table`): block lists and MaxMind
/// DB files the operator grants by name (`--ip-table blocklist=PATH`). Open
/// them in [`Guest::init`] and keep them; a lookup is about 0.1 µs and
/// always answers from the table's current version.
///
/// ```no_run
/// use spoa_guest::tables::IpTable;
///
/// # fn check(ip: std::net::IpAddr) -> Result<bool, String> {
/// let blocklist = IpTable::open("blocklist").map_err(|e| e.to_string())?;
/// let blocked = blocklist.contains(ip);
/// let country = IpTable::open("country")
///     .ok()
///     .and_then(|db| db.text_field(ip, "country.iso_code"));
/// # Ok(blocked)
/// # }
/// ```
pub mod tables {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use crate::bindings::spoa::agent::ip_table as wit;
    pub use wit::{Error, FieldValue};

    /// An open table.
    pub struct IpTable(wit::Table);

    /// The most specific network holding an address.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Hit {
        /// The network's first address and prefix length.
        pub network: (IpAddr, u8),
        /// The entry's label (lists only).
        pub label: Option<String>,
    }

    /// The most specific network holding an address, with the fields asked
    /// for (one per path, in order; `None` where the record has none).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Fields {
        pub network: (IpAddr, u8),
        pub values: Vec<Option<FieldValue>>,
    }

    fn to_wit(ip: IpAddr) -> wit::IpAddress {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                wit::IpAddress::Ipv4((a, b, c, d))
            }
            IpAddr::V6(v6) => {
                let [a, b, c, d, e, f, g, h] = v6.segments();
                wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
            }
        }
    }

    fn from_wit(network: wit::IpNetwork) -> (IpAddr, u8) {
        let address = match network.address {
            wit::IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).into(),
            wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
                Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
            }
        };
        (address, network.prefix_len)
    }

    impl IpTable {
        /// Opens the table granted as `name`.
        pub fn open(name: &str) -> Result<IpTable, Error> {
            wit::open(name).map(IpTable)
        }

        /// Whether a network of the table holds `ip` (the cheapest call).
        /// An IPv4-mapped IPv6 address matches IPv4 networks.
        pub fn contains(&self, ip: IpAddr) -> bool {
            self.0.contains(to_wit(ip))
        }

        /// The most specific network holding `ip`, with its label.
        pub fn lookup(&self, ip: IpAddr) -> Option<Hit> {
            self.0.lookup(to_wit(ip)).map(|hit| Hit {
                network: from_wit(hit.network),
                label: hit.label,
            })
        }

        /// The fields at `paths` of the MaxMind DB record for `ip`
        /// (`country.iso_code`, `autonomous_system_number`), with the
        /// matched network; `None` when no network holds `ip`.
        pub fn fields(&self, ip: IpAddr, paths: &[&str]) -> Option<Fields> {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            self.0.lookup_fields(to_wit(ip), &paths).map(|hit| Fields {
                network: from_wit(hit.network),
                values: hit.values,
            })
        }

        /// The text field at `path` (a country code), if the record has one.
        pub fn text_field(&self, ip: IpAddr, path: &str) -> Option<String> {
            match self.fields(ip, &[path])?.values.pop()?? {
                FieldValue::Text(text) => Some(text),
                _ => None,
            }
        }

        /// The unsigned field at `path` (an AS number), if the record has one.
        pub fn number_field(&self, ip: IpAddr, path: &str) -> Option<u64> {
            match self.fields(ip, &[path])?.values.pop()?? {
                FieldValue::Unsigned(n) => Some(n),
                _ => None,
            }
        }

        /// Networks in the table now.
        pub fn len(&self) -> u64 {
            self.0.len()
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }
}

impl TypedData {
    /// The address of an `ipv4` or `ipv6` value.
    #[inline]
    pub fn as_ip(&self) -> Option<IpAddr> {
        match *self {
            TypedData::Ipv4((a, b, c, d)) => Some(Ipv4Addr::new(a, b, c, d).into()),
            TypedData::Ipv6((a, b, c, d, e, f, g, h)) => {
                Some(Ipv6Addr::new(a, b, c, d, e, f, g, h).into())
            }
            _ => None,
        }
    }

    /// The value of any of the four integer types, if it fits an `i64`.
    #[inline]
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            TypedData::Int32(n) => Some(n.into()),
            TypedData::Uint32(n) => Some(n.into()),
            TypedData::Int64(n) => Some(n),
            TypedData::Uint64(n) => n.try_into().ok(),
            _ => None,
        }
    }

    /// The value of a `boolean`.
    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            TypedData::Boolean(b) => Some(b),
            _ => None,
        }
    }

    /// The raw bytes of a `string` or `binary` value (SPOP strings are not
    /// guaranteed to be UTF-8).
    #[inline]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            TypedData::String(bytes) | TypedData::Binary(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// Whether this is `null` (HAProxy sends it when a sample fetch fails).
    #[inline]
    pub fn is_null(&self) -> bool {
        matches!(self, TypedData::Null)
    }
}

impl Message {
    /// The value of the first argument named `name`.
    #[inline]
    pub fn arg(&self, name: &str) -> Option<&TypedData> {
        self.args.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// The argument `name` as an address (`ipv4` or `ipv6`).
    #[inline]
    pub fn ip(&self, name: &str) -> Option<IpAddr> {
        self.arg(name)?.as_ip()
    }

    /// The argument `name` as an integer (any integer type that fits `i64`).
    #[inline]
    pub fn int(&self, name: &str) -> Option<i64> {
        self.arg(name)?.as_int()
    }

    /// The argument `name` as a boolean.
    #[inline]
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.arg(name)?.as_bool()
    }

    /// The raw bytes of the `string` or `binary` argument `name`.
    #[inline]
    pub fn str(&self, name: &str) -> Option<&[u8]> {
        self.arg(name)?.as_bytes()
    }

    /// [`Message::str`] as text, invalid UTF-8 replaced by U+FFFD.
    #[inline]
    pub fn str_lossy(&self, name: &str) -> Option<Cow<'_, str>> {
        self.str(name).map(String::from_utf8_lossy)
    }
}

impl Action {
    /// Sets the variable `name` in `scope` (HAProxy adds the SPOE prefix).
    pub fn set(scope: VarScope, name: impl Into<String>, value: impl Into<TypedData>) -> Action {
        Action::SetVar(SetVar {
            scope,
            name: name.into(),
            value: value.into(),
        })
    }

    /// Unsets the variable `name` in `scope`.
    pub fn unset(scope: VarScope, name: impl Into<String>) -> Action {
        Action::UnsetVar(UnsetVar {
            scope,
            name: name.into(),
        })
    }
}

/// [`Action::set`].
pub fn set_var(scope: VarScope, name: impl Into<String>, value: impl Into<TypedData>) -> Action {
    Action::set(scope, name, value)
}

/// [`Action::unset`].
pub fn unset_var(scope: VarScope, name: impl Into<String>) -> Action {
    Action::unset(scope, name)
}

macro_rules! typed_data_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for TypedData {
            #[inline]
            fn from(value: $t) -> TypedData {
                TypedData::$variant(value.into())
            }
        })*
    };
}

typed_data_from! {
    bool => Boolean,
    i32 => Int32,
    u32 => Uint32,
    i64 => Int64,
    u64 => Uint64,
    &str => String,
    String => String,
    &[u8] => Binary,
    Vec<u8> => Binary,
}

impl From<Ipv4Addr> for TypedData {
    #[inline]
    fn from(ip: Ipv4Addr) -> TypedData {
        let [a, b, c, d] = ip.octets();
        TypedData::Ipv4((a, b, c, d))
    }
}

impl From<Ipv6Addr> for TypedData {
    #[inline]
    fn from(ip: Ipv6Addr) -> TypedData {
        let [a, b, c, d, e, f, g, h] = ip.segments();
        TypedData::Ipv6((a, b, c, d, e, f, g, h))
    }
}

impl From<IpAddr> for TypedData {
    #[inline]
    fn from(ip: IpAddr) -> TypedData {
        match ip {
            IpAddr::V4(ip) => ip.into(),
            IpAddr::V6(ip) => ip.into(),
        }
    }
}

/// `None` becomes `null`.
impl<T: Into<TypedData>> From<Option<T>> for TypedData {
    #[inline]
    fn from(value: Option<T>) -> TypedData {
        value.map_or(TypedData::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(args: Vec<(&str, TypedData)>) -> Message {
        Message {
            name: "test".into(),
            args: args
                .into_iter()
                .map(|(name, value)| Arg {
                    name: name.into(),
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn arguments_by_name_and_type() {
        let msg = message(vec![
            ("ip", TypedData::Ipv4((192, 0, 2, 1))),
            ("ip6", TypedData::Ipv6((0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            ("n", TypedData::Uint32(7)),
            ("big", TypedData::Uint64(u64::MAX)),
            ("neg", TypedData::Int64(-3)),
            ("ok", TypedData::Boolean(true)),
            ("host", TypedData::String(b"ex\xffample".to_vec())),
            ("body", TypedData::Binary(vec![1, 2])),
            ("missing", TypedData::Null),
            ("", TypedData::Int32(1)),
        ]);
        assert_eq!(msg.ip("ip"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(msg.ip("ip6"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(msg.ip("n"), None);
        assert_eq!(msg.int("n"), Some(7));
        assert_eq!(msg.int("neg"), Some(-3));
        assert_eq!(msg.int("big"), None, "u64 above i64::MAX does not fit");
        assert_eq!(msg.int(""), Some(1), "unnamed arguments have an empty name");
        assert_eq!(msg.bool("ok"), Some(true));
        assert_eq!(msg.str("host"), Some(&b"ex\xffample"[..]));
        assert_eq!(msg.str_lossy("host").as_deref(), Some("ex\u{fffd}ample"));
        assert_eq!(msg.str("body"), Some(&[1u8, 2][..]));
        assert!(msg.arg("missing").is_some_and(TypedData::is_null));
        assert_eq!(msg.int("missing"), None);
        assert_eq!(msg.arg("nope"), None);
    }

    #[test]
    fn the_first_argument_of_a_name_wins() {
        let msg = message(vec![("a", 1i32.into()), ("a", 2i32.into())]);
        assert_eq!(msg.int("a"), Some(1));
    }

    #[test]
    fn conversions_into_typed_data() {
        assert_eq!(TypedData::from(7i32), TypedData::Int32(7));
        assert_eq!(TypedData::from(7u32), TypedData::Uint32(7));
        assert_eq!(TypedData::from(-7i64), TypedData::Int64(-7));
        assert_eq!(TypedData::from(7u64), TypedData::Uint64(7));
        assert_eq!(TypedData::from(true), TypedData::Boolean(true));
        assert_eq!(TypedData::from("é"), TypedData::String("é".into()));
        assert_eq!(
            TypedData::from(String::from("x")),
            TypedData::String(b"x".to_vec())
        );
        assert_eq!(
            TypedData::from(&[0u8, 1][..]),
            TypedData::Binary(vec![0, 1])
        );
        assert_eq!(TypedData::from(vec![9u8]), TypedData::Binary(vec![9]));
        assert_eq!(TypedData::from(None::<i32>), TypedData::Null);
        assert_eq!(TypedData::from(Some(false)), TypedData::Boolean(false));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::ff:1".parse().unwrap();
        assert_eq!(TypedData::from(v4), TypedData::Ipv4((192, 0, 2, 1)));
        assert_eq!(TypedData::from(v4).as_ip(), Some(v4));
        assert_eq!(TypedData::from(v6).as_ip(), Some(v6));
    }

    #[test]
    fn counters_parse_as_the_host_writes_them() {
        assert_eq!(kv::parse_counter(b"0"), Some(0));
        assert_eq!(kv::parse_counter(b"42"), Some(42));
        assert_eq!(
            kv::parse_counter(b"9223372036854775807"),
            Some(i64::MAX as u64)
        );
        for refused in [
            &b"+7"[..],
            b"007",
            b"",
            b"-1",
            b" 1",
            b"9223372036854775808",
            b"1e3",
        ] {
            assert_eq!(kv::parse_counter(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn config_values_parse_or_default() {
        assert_eq!(config::parse_or("t", None, 20i64), Ok(20));
        assert_eq!(config::parse_or("t", Some(" 30\n".into()), 20i64), Ok(30));
        assert_eq!(
            config::parse_or("t", Some("x".into()), 20i64),
            Err(r#"config t: invalid value "x""#.to_string())
        );
        assert_eq!(
            config::parse_or("t", Some("on".into()), false),
            Err(r#"config t: invalid value "on""#.into())
        );
    }

    #[test]
    fn actions() {
        assert_eq!(
            Action::set(VarScope::Sess, "ip_score", 7),
            Action::SetVar(SetVar {
                scope: VarScope::Sess,
                name: "ip_score".into(),
                value: TypedData::Int32(7),
            })
        );
        assert_eq!(
            set_var(VarScope::Txn, String::from("blocked"), true),
            Action::set(VarScope::Txn, "blocked", TypedData::Boolean(true))
        );
        assert_eq!(
            unset_var(VarScope::Req, "x"),
            Action::UnsetVar(UnsetVar {
                scope: VarScope::Req,
                name: "x".into(),
            })
        );
    }
}
