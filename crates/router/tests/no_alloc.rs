//! Lookups allocate nothing: a counting global allocator around many lookups that find routes
//! with parameters, catch-alls and prefixes, answer 405 (and render `Allow`) and miss.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;

use shardgate_router::{Lookup, Method, Normalized, RouteSpec, RouterBuilder, normalize_path};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only a thread-local `Cell` (const-initialised, so it never allocates itself).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A `fmt::Write` into a fixed array, to render `Allow` without a `String`.
struct Fixed {
    buf: [u8; 256],
    len: usize,
}

impl std::fmt::Write for Fixed {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Host, method, path, and the route name (or `405`, `404`) expected.
type Request = (&'static [u8], &'static [u8], &'static [u8], &'static str);

#[test]
fn lookups_do_not_allocate() {
    let get = || Method::Get;
    let mut b = RouterBuilder::new();
    let routes = [
        RouteSpec::exact("list", "/users")
            .host("api.example.com")
            .method(get()),
        RouteSpec::exact("one", "/users/:id")
            .host("api.example.com")
            .method(get())
            .method(Method::Delete),
        RouteSpec::exact("eight", "/p/:a/:b/:c/:d/:e/:f/:g/*h").host("api.example.com"),
        RouteSpec::exact("files", "/static/*path")
            .host("*.example.com")
            .method(get()),
        RouteSpec::prefix("api", "/api").method(Method::Extension("PURGE".into())),
        RouteSpec::prefix("all", "/"),
    ];
    for (i, r) in routes.into_iter().enumerate() {
        b.insert(r, i).unwrap();
    }
    let router = b.build().unwrap();
    let requests: &[Request] = &[
        (b"api.example.com", b"GET", b"/users", "list"),
        (b"API.example.com:443", b"DELETE", b"/users/42", "one"),
        (
            b"api.example.com",
            b"GET",
            b"/p/1/2/3/4/5/6/7/rest/of/it",
            "eight",
        ),
        (b"cdn.eu.example.com", b"GET", b"/static/a/b.css", "files"),
        (b"other.org", b"PURGE", b"/api/x", "api"),
        (b"other.org", b"GET", b"/api/x", "405"),
        (b"other.org", b"GET", b"/elsewhere", "all"),
        (b"api.example.com", b"POST", b"/users/42", "405"),
        (b"cdn.example.com", b"POST", b"/static/x", "405"),
        (b"api.example.com", b"GET", b"/nope", "404"),
        (b"x.example.com", b"GET", b"/nope", "404"),
    ];
    let mut allow = Fixed {
        buf: [0; 256],
        len: 0,
    };
    let mut scratch = Vec::with_capacity(64);
    let before = allocations();
    let mut found = 0usize;
    for _ in 0..1000 {
        for (host, method, path, want) in requests {
            match router.lookup(host, method, path) {
                Lookup::Found(m) => {
                    assert_eq!(m.name, *want);
                    found += m.params.iter().map(|(_, v)| v.len()).sum::<usize>();
                }
                Lookup::MethodNotAllowed(a) => {
                    assert_eq!(*want, "405");
                    allow.len = 0;
                    write!(allow, "{a}").unwrap();
                }
                Lookup::NotFound => assert_eq!(*want, "404"),
            }
        }
        // The normaliser allocates neither on its fast path nor, with a warm buffer, on its
        // rewrite path.
        assert_eq!(
            normalize_path(b"/users/42?x=1", &mut scratch),
            Ok(Normalized::Unchanged)
        );
        assert_eq!(
            normalize_path(b"//users/./%34%32?x=1", &mut scratch),
            Ok(Normalized::Rewritten)
        );
    }
    let after = allocations();
    assert_eq!(after - before, 0, "lookups allocated");
    assert!(found > 0);
    assert_eq!(&allow.buf[..allow.len], b"GET");
    assert_eq!(scratch, b"/users/42?x=1");
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
    drop(v);
    assert_eq!(allocations() - before, 1);
}
