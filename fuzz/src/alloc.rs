//! A global allocator that counts, per thread: the bytes this thread
//! allocated and has not freed, and the most of them since the last
//! [`measure`] began. The fuzz targets assert that handling guest input
//! raises the peak by no more than a fixed cap, so "no unbounded
//! allocation" is checked, not hoped for. Per thread, so tests running side
//! by side don't count each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without destructors: usable from the allocator
    // at any point of a thread's life, without allocating.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// [`System`], counting.
#[derive(Debug)]
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System` upholds the `GlobalAlloc` contract; the counters
// only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

fn grew(bytes: usize) {
    let live = LIVE.get().wrapping_add(bytes as isize);
    LIVE.set(live);
    PEAK.set(PEAK.get().max(live));
}

fn shrank(bytes: usize) {
    // Memory another thread allocated counts against this one: harmless,
    // the counts are only ever compared within one thread.
    LIVE.set(LIVE.get().wrapping_sub(bytes as isize));
}

/// Bytes this thread allocated and has not freed (relative: it may be
/// negative after freeing other threads' memory).
pub fn live() -> isize {
    LIVE.get()
}

/// Runs `f`; returns its result and how far this thread's live heap rose
/// above where it started.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = live();
    PEAK.set(start);
    let r = f();
    (r, usize::try_from(PEAK.get() - start).unwrap_or(0))
}
