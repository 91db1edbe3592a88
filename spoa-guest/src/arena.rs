//! A per-call arena in front of the system allocator (feature `arena`).
//!
//! A guest handles one message at a time, and everything allocated for a
//! call — the message the host lowers into guest memory, the actions
//! returned — is freed by the end of it (the host calls `post-return`). So a
//! bump allocator that rewinds whenever nothing in it is alive serves every
//! allocation of a call in a few instructions, where the general-purpose
//! allocator (dlmalloc on `wasm32-unknown-unknown`) costs a noticeable part
//! of a whole `handle-message` call.
//!
//! Anything that does not fit, or arrives while the arena is pinned by a
//! long-lived allocation (a cache kept across calls), goes to the system
//! allocator: the arena can make the guest faster, never wrong.
//!
//! It is not thread-safe, and it is only `Sync` (which a
//! `#[global_allocator]` static must be) on `wasm32` without the `atomics`
//! feature, where a guest cannot run two threads: `wasm32-unknown-unknown`
//! and `wasm32-wasip2`. Install it with [`arena_allocator!`](crate::arena_allocator),
//! which does nothing on other targets, so native unit tests keep the
//! system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

const ARENA_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Buffer([u8; ARENA_SIZE]);

/// See the module documentation.
pub struct Arena {
    buffer: UnsafeCell<Buffer>,
    state: UnsafeCell<State>,
}

#[derive(Clone, Copy)]
struct State {
    /// Bytes of the buffer handed out (or skipped for alignment) so far.
    used: usize,
    /// Allocations from the buffer not yet freed.
    live: usize,
}

// SAFETY: a wasm32 guest without the `atomics` target feature has a single
// thread, so the cells are never accessed concurrently.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for Arena {}

/// Makes [`Arena`] the guest's global allocator on single-threaded `wasm32`;
/// expands to nothing on other targets. Use it once, at the crate root:
/// `spoa_guest::arena_allocator!();`
#[macro_export]
macro_rules! arena_allocator {
    () => {
        #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
        #[global_allocator]
        static SPOA_GUEST_ARENA: $crate::arena::Arena = $crate::arena::Arena::new();
    };
}

impl Arena {
    /// An empty arena (64 KiB, in the static data of the module).
    pub const fn new() -> Arena {
        Arena {
            buffer: UnsafeCell::new(Buffer([0; ARENA_SIZE])),
            state: UnsafeCell::new(State { used: 0, live: 0 }),
        }
    }

    #[inline]
    fn base(&self) -> usize {
        self.buffer.get() as usize
    }

    #[inline]
    fn contains(&self, ptr: *mut u8) -> bool {
        let address = ptr as usize;
        address >= self.base() && address < self.base() + ARENA_SIZE
    }

    /// Whether every arena allocation has been freed (the next one starts at
    /// the beginning again).
    pub fn is_empty(&self) -> bool {
        // SAFETY: single-threaded; no reference to the state outlives a call.
        unsafe { (*self.state.get()).live == 0 }
    }
}

impl Default for Arena {
    fn default() -> Arena {
        Arena::new()
    }
}

unsafe impl GlobalAlloc for Arena {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded; the state is only touched inside these calls.
        let state = unsafe { &mut *self.state.get() };
        let start = (self.base() + state.used).next_multiple_of(layout.align()) - self.base();
        match start.checked_add(layout.size()) {
            Some(end) if end <= ARENA_SIZE => {
                state.used = end;
                state.live += 1;
                (self.base() + start) as *mut u8
            }
            // SAFETY: forwarding the caller's contract.
            _ => unsafe { System.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.contains(ptr) {
            // SAFETY: it came from System.alloc above.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: single-threaded; the state is only touched inside these calls.
        let state = unsafe { &mut *self.state.get() };
        state.live -= 1;
        if state.live == 0 {
            state.used = 0;
        } else if ptr as usize + layout.size() == self.base() + state.used {
            // The most recent allocation: give its bytes back.
            state.used = ptr as usize - self.base();
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(ptr) {
            // SAFETY: single-threaded; the state is only touched inside these calls.
            let state = unsafe { &mut *self.state.get() };
            let start = ptr as usize - self.base();
            let is_last = start + layout.size() == state.used;
            if is_last && start + new_size <= ARENA_SIZE {
                state.used = start + new_size;
                return ptr;
            }
        }
        // SAFETY: forwarding the caller's contract; the default moves the data.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn rewinds_when_everything_is_freed() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(layout(15, 1));
            let b = arena.alloc(layout(24, 8));
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0);
            arena.dealloc(a, layout(15, 1));
            assert!(!arena.is_empty());
            arena.dealloc(b, layout(24, 8));
            assert!(arena.is_empty());
            assert_eq!(arena.alloc(layout(4, 4)), a.cast::<u8>());
        }
    }

    #[test]
    fn overflow_and_pinned_arena_fall_back_to_the_system() {
        let arena = Box::new(Arena::new());
        unsafe {
            let big = arena.alloc(layout(ARENA_SIZE + 1, 1));
            assert!(!big.is_null() && !arena.contains(big));
            arena.dealloc(big, layout(ARENA_SIZE + 1, 1));
            // A long-lived allocation pins the arena; it fills, then the
            // system allocator takes over, and everything stays usable.
            let pinned = arena.alloc(layout(8, 8));
            let mut others = Vec::new();
            for _ in 0..(ARENA_SIZE / 1024 + 4) {
                let p = arena.alloc(layout(1024, 8));
                assert!(!p.is_null());
                p.write_bytes(0xAB, 1024);
                others.push(p);
            }
            assert!(others.iter().any(|&p| !arena.contains(p)));
            for p in others {
                arena.dealloc(p, layout(1024, 8));
            }
            arena.dealloc(pinned, layout(8, 8));
            assert!(arena.is_empty());
        }
    }

    #[test]
    fn realloc_grows_the_last_allocation_in_place_and_moves_others() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(layout(8, 8));
            a.write_bytes(7, 8);
            let grown = arena.realloc(a, layout(8, 8), 64);
            assert_eq!(grown, a);
            let b = arena.alloc(layout(8, 8));
            let moved = arena.realloc(grown, layout(64, 8), 128);
            assert_ne!(moved, grown);
            assert_eq!(*moved, 7);
            arena.dealloc(b, layout(8, 8));
            arena.dealloc(moved, layout(128, 8));
            assert!(arena.is_empty());
        }
    }
}
