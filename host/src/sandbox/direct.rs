//! Direct calls for components built by the standard toolchains.
//!
//! `cargo build --target wasm32-wasip2` (like most toolchains) links the
//! guest against WASI streams and polls for its stdio, even when its
//! messages never print. wasmtime-wasi's functions for those can wait, so
//! they only run on a fiber, and a component importing them used to be
//! entered on a fiber for every call (a quarter of `guest-iprep`'s cost).
//!
//! Instead such a component gets a second linking for direct calls: the
//! same imports, but every function of an interface that can wait is a stub
//! that cuts the call. A direct call that reaches one is stopped before the
//! host does anything, its module moves to fibers for good, and the message
//! runs again on a fiber (exactly as a direct call that ran a whole tick).
//! The functions that answer at once (clocks, randomness, environment,
//! `exit`, configuration) stay real, so a guest that reads the clock or
//! seeds a hash map stays direct.
//!
//! The stubs cover whole interfaces, including the getters of stdio streams,
//! so a direct call can never hold a stream or a socket whose destructor
//! would wait.

use std::sync::Arc;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, ResourceType};
use wasmtime::{Engine, StoreContextMut};

use super::state::GuestState;

/// The version wasmtime-wasi 48 links WASI 0.2 at; every `0.2.x` import a
/// component names resolves to it by semver, so the stubs shadow the
/// definitions under this name. A test proves they are there.
const HOST_WASI_VERSION: &str = "0.2.12";

/// WASI interfaces whose functions all answer at once in wasmtime-wasi:
/// they stay real in direct calls.
const ANSWER_AT_ONCE: &[&str] = &[
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/terminal-",
    "wasi:config/",
];

/// Whether the import `name` (an instance, with its version) is a WASI
/// interface that can wait, and so is stubbed for direct calls.
fn can_wait(name: &str) -> bool {
    name.starts_with("wasi:") && !ANSWER_AT_ONCE.iter().any(|p| name.starts_with(p))
}

/// The interface a versioned import name stands for, at the host's version.
fn at_host_version(name: &str) -> String {
    let unversioned = name
        .split_once('@')
        .map_or(name, |(interface, _)| interface);
    format!("{unversioned}@{HOST_WASI_VERSION}")
}

/// Links `component` for direct calls, when it imports WASI that can wait
/// (`None`: it does not, or the stubs could not be linked, and its calls run
/// as before). `linker` is the one every call uses.
pub(crate) fn link_for_direct_calls(
    engine: &Engine,
    linker: &Linker<GuestState>,
    component: &Component,
) -> Option<InstancePre<GuestState>> {
    let waiting: Vec<Stubs> = component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| can_wait(name))
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let interface = at_host_version(name);
                let mut stubs = Stubs::default();
                for (export, item) in instance.exports(engine) {
                    match item.ty {
                        ComponentItem::ComponentFunc(_) => stubs.funcs.push(export.to_owned()),
                        ComponentItem::Resource(_) if !kept_real(export) => {
                            stubs.resources.push(export.to_owned())
                        }
                        _ => {}
                    }
                }
                stubs.interface = interface;
                Some(stubs)
            }
            _ => None,
        })
        .collect();
    if waiting.is_empty() {
        return None;
    }
    let mut direct = linker.clone();
    direct.allow_shadowing(true);
    let stubbed = stub(&mut direct, &waiting).and_then(|()| direct.instantiate_pre(component));
    match stubbed {
        Ok(pre) => Some(pre),
        Err(err) => {
            tracing::debug!(error = %format!("{err:#}"), "no direct calls: the WASI stubs do not link");
            None
        }
    }
}

/// The stubs of one interface that can wait.
#[derive(Default)]
struct Stubs {
    interface: String,
    funcs: Vec<String>,
    /// Its resources, whose destructors may wait (a stream's does): as
    /// long as one is linked with an async destructor, wasmtime requires
    /// every call of the instance to be async. No direct call can hold one
    /// (every function that gives one out is a stub), so they are stubbed.
    resources: Vec<String>,
}

/// A resource of a stubbed interface kept as wasmtime-wasi links it,
/// wherever an interface uses it: a clock's `subscribe` (which answers at
/// once) gives out a pollable, and dropping one never waits.
fn kept_real(resource: &str) -> bool {
    resource == "pollable"
}

/// The type of every stubbed resource: no value of it ever exists.
struct NeverHeld;

fn stub(linker: &mut Linker<GuestState>, waiting: &[Stubs]) -> wasmtime::Result<()> {
    for stubs in waiting {
        let interface = &stubs.interface;
        let mut instance = linker.instance(interface)?;
        for resource in &stubs.resources {
            let import: Arc<str> = format!("{interface}#[drop]{resource}").into();
            instance.resource(
                resource,
                ResourceType::host::<NeverHeld>(),
                move |store, _| cut_for_fiber(store, &import),
            )?;
        }
        for func in &stubs.funcs {
            let import: Arc<str> = format!("{interface}#{func}").into();
            instance.func_new(func, move |store, _ty, _params, _results| {
                cut_for_fiber(store, &import)
            })?;
        }
    }
    Ok(())
}

/// What a stub does: marks the call cut, so it runs again on a fiber, and
/// the module's calls all run on fibers from now on.
fn cut_for_fiber(
    mut store: StoreContextMut<'_, GuestState>,
    import: &Arc<str>,
) -> wasmtime::Result<()> {
    let state = store.data_mut();
    state.cut_for_fiber = true;
    state.cut_at_import = Some(import.clone());
    state
        .module_on_fibers
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Err(wasmtime::Error::msg(format!(
        "{import} can wait: the call runs again on a fiber"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stubbed() {
        for name in [
            "wasi:io/streams@0.2.6",
            "wasi:io/poll@0.2.0",
            "wasi:cli/stderr@0.2.6",
            "wasi:filesystem/types@0.2.0",
            "wasi:sockets/tcp@0.2.0",
            "wasi:http/types@0.2.0",
        ] {
            assert!(can_wait(name), "{name}");
        }
        for name in [
            "wasi:clocks/monotonic-clock@0.2.6",
            "wasi:random/insecure-seed@0.2.6",
            "wasi:cli/environment@0.2.6",
            "wasi:cli/exit@0.2.6",
            "wasi:cli/terminal-stderr@0.2.6",
            "wasi:config/store@0.2.0-rc.1",
            "spoa:agent/log@0.1.5",
        ] {
            assert!(!can_wait(name), "{name}");
        }
        assert_eq!(
            at_host_version("wasi:io/streams@0.2.0"),
            "wasi:io/streams@0.2.12"
        );
    }

    /// The stubs shadow wasmtime-wasi's definitions only if they are named
    /// as it names them: with shadowing refused, defining one of its
    /// functions again must fail, which proves it is there.
    #[test]
    fn the_host_links_wasi_at_the_version_the_stubs_shadow() {
        let engine = Engine::default();
        let mut linker = Linker::<GuestState>::new(&engine);
        super::super::wasi::add_to_linker(&mut linker).expect("WASI links");
        for (interface, func) in [
            (
                "wasi:io/streams",
                "[method]output-stream.blocking-write-and-flush",
            ),
            ("wasi:io/poll", "poll"),
            ("wasi:cli/stderr", "get-stderr"),
            ("wasi:filesystem/types", "[method]descriptor.read"),
            ("wasi:sockets/tcp", "[method]tcp-socket.start-bind"),
            ("wasi:http/outgoing-handler", "handle"),
        ] {
            let mut instance = linker
                .instance(&format!("{interface}@{HOST_WASI_VERSION}"))
                .expect("the instance");
            let again = instance.func_new(func, |_, _, _, _| Ok(()));
            assert!(
                again.is_err(),
                "{interface}#{func} is not linked at {HOST_WASI_VERSION}"
            );
        }
    }
}
