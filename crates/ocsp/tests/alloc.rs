//! The cache-hit path allocates nothing: strict parse, lookup, reference-count increment.
//! (A counting global allocator; the only `unsafe` of the crate's tests, forwarding to
//! `System`.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use cps_ocsp::NotIssuedPolicy;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn cache_hits_do_not_allocate() {
    let now = 1_800_000_000;
    let pki = build_pki(now, 1);
    let (r, _) = responder(&pki, config(NotIssuedPolicy::Unknown));
    let ca = &pki.cas[0];
    let req = request(
        vec![cert_id(&ca.cert_der, &ca.ee[0].serial, Hash::Sha1, true)],
        None,
    );

    let before = allocations();
    let miss = r.respond(&req, now);
    assert!(!miss.from_cache);
    assert!(
        allocations() > before,
        "the counter counts (a miss signs and allocates)"
    );

    let before = allocations();
    for i in 0..1000 {
        let hit = r.respond(&req, now + i % 500);
        assert!(hit.from_cache);
        std::hint::black_box(hit);
    }
    assert_eq!(allocations() - before, 0, "allocations on 1000 cache hits");
}
