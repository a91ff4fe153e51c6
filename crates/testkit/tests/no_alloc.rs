//! A plain proxied request allocates nothing on the shard in steady state.
//!
//! A counting global allocator counts allocations made on shard threads
//! only (the test's own client and mock upstream allocate freely). After a
//! warm-up that fills the buffer and connection pools, hundreds of
//! keep-alive requests, with and without bodies, must not allocate once.
#![allow(unsafe_code)]

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, TestGateway};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static SHARD_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// 0 unknown, 1 shard thread, 2 other thread, 3 being decided.
    static KIND: Cell<u8> = const { Cell::new(0) };
}

fn on_shard_thread() -> bool {
    KIND.with(|k| match k.get() {
        1 => true,
        2 | 3 => false,
        _ => {
            k.set(3);
            let shard = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("shardgate-shard"));
            k.set(if shard { 1 } else { 2 });
            shard
        }
    })
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts, using a const thread-local with no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_shard_thread() {
            SHARD_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_shard_thread() {
            SHARD_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn exchange(c: &mut RawClient, req: &[u8]) {
    c.send(req);
    assert_eq!(c.read_response().expect("a response").status, 200);
}

#[test]
fn steady_state_requests_do_not_allocate_on_the_shard() {
    let get: &[u8] = b"GET /items/42?full=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\n\
                       Accept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let post: &[u8] =
        b"POST /items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n\r\nhello";
    let chunked: &[u8] =
        b"PUT /items/1 HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
                          5\r\nhello\r\n0\r\n\r\n";
    let filtered: &[u8] = b"GET /f/items?x=1 HTTP/1.1\r\nHost: api.example.com\r\nX-Api-Key: k\r\n\
                            traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
    for driver in DRIVERS {
        let up = MockUpstream::ok("{\"id\":42}");
        // Connections retire after max_requests_per_connection (a reconnect
        // allocates); keep the pooled one for the whole test.
        let key = shardgate_filters::api_key::hash_key("k");
        let gw = TestGateway::proxy(
            driver,
            &[up.addr()],
            &format!(
                "[pool]\nmax_requests_per_connection = 1000000\n\
                 [[routes]]\nname = \"filtered\"\nprefix = \"/f\"\nupstream = \"backend\"\n\
                 filters = [\
                   {{ type = \"ip-filter\", allow = [\"127.0.0.0/8\"] }},\
                   {{ type = \"api-key\", keys = [{{ sha256 = \"{key}\", consumer = \"c\" }}] }},\
                   {{ type = \"rate-limit\", rate = 1000000, burst = 1000000, key = \"consumer\" }},\
                   {{ type = \"request-id\" }}, {{ type = \"trace-context\" }},\
                   {{ type = \"rewrite\", strip_prefix = \"/f\" }},\
                   {{ type = \"headers\", request = {{ set = {{ \"X-Env\" = \"t\" }} }}, \
                      response = {{ remove = [\"Server\"] }} }}]\n"
            ),
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..200 {
            exchange(&mut c, get);
            exchange(&mut c, post);
            exchange(&mut c, chunked);
            exchange(&mut c, filtered);
        }
        let before = SHARD_ALLOCS.load(Ordering::Relaxed);
        for _ in 0..300 {
            exchange(&mut c, get);
            exchange(&mut c, post);
            exchange(&mut c, chunked);
        }
        let allocs = SHARD_ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{driver:?}: {allocs} allocations on the shard over 900 requests"
        );
        // A route whose filters need no allocation (all but jwt) makes none either.
        let before = SHARD_ALLOCS.load(Ordering::Relaxed);
        for _ in 0..300 {
            exchange(&mut c, filtered);
        }
        let allocs = SHARD_ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            allocs, 0,
            "{driver:?}: {allocs} allocations on the shard over 300 filtered requests"
        );
    }
}
