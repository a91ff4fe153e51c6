//! The frozen per-host path table and the lookup walk over it.
//!
//! Nodes sit in one array, each node's static children at consecutive indices (its parameter
//! child right after them), labels in one byte array. The walk reads a 32-byte node per step,
//! two to a cache line; what only rare nodes need (long labels, catch-alls, prefix leaves) is
//! in a parallel cold array. A lookup allocates nothing.
//!
//! The hot loop handles the two common shapes — static children only, a lone parameter — and
//! hands a node with alternatives to an out-of-line function, so the loop keeps little state.
//!
//! The walk is a depth-first search in priority order — static child, then parameter, then
//! catch-all — and stops at the first leaf that accepts the method. Each node is entered at
//! most once per lookup (a node fixes how many bytes and segments came before it), so a lookup
//! is bounded by the size of the table even when it backtracks. Leaves hold a method bitset
//! (the union of their routes') so rejecting a method is one `AND`.

use smallvec::SmallVec;

use crate::pattern::MAX_PARAMS;

pub(crate) const NONE: u32 = u32::MAX;

/// Parameter captures of one lookup: byte spans into the path.
pub(crate) type Spans = SmallVec<[(u32, u32); MAX_PARAMS]>;

/// A node as the walk sees it: 32 bytes, so that two share a cache line. What only
/// [`Shape::Mixed`] nodes and long labels need is in [`ColdNode`].
#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
pub(crate) struct FrozenNode {
    /// The label's first (up to) eight bytes, little-endian, zero-padded: most labels are
    /// compared with one load.
    pub(crate) head: u64,
    /// First bytes of the first eight static children, little-endian, zero-padded.
    pub(crate) kid_firsts: u64,
    /// Index of the first child. The static children are consecutive, and the parameter child
    /// (if any) comes right after them.
    pub(crate) kids: u32,
    /// Leaf of patterns that end here (an index into `PathTable::leaves`), or `NONE`.
    pub(crate) exact: u32,
    pub(crate) label_len: u32,
    /// At most 256: the children's first bytes differ.
    pub(crate) kids_len: u16,
    /// Which of the walk's paths the node takes: see [`Shape`].
    pub(crate) shape: Shape,
    /// `8 * (8 - min(label_len, 8))`: shifting a word left by it keeps the label's bytes.
    pub(crate) head_shift: u8,
}

impl FrozenNode {
    /// The parameter child (when there is one).
    #[inline(always)]
    fn param(&self) -> u32 {
        self.kids + self.kids_len as u32
    }
}

/// The rest of a node, parallel to `PathTable::nodes`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColdNode {
    /// Offset of the label in `PathTable::bytes`.
    pub(crate) label: u32,
    /// Leaves (indices into `PathTable::leaves`), or `NONE`.
    pub(crate) catch_all: u32,
    pub(crate) prefix: u32,
    pub(crate) has_param: bool,
}

/// What a node offers besides an exact leaf, for the walk's fast paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Static children only (or none).
    Static,
    /// A parameter child only: no static children, catch-all or prefix leaf.
    Param,
    /// Anything else.
    Mixed,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct FrozenLeaf {
    /// Union of the routes' methods.
    pub(crate) mask: u64,
    /// The first route; usually the only one.
    pub(crate) first_route: u32,
    /// Further `(mask, route)` pairs in `PathTable::more`.
    pub(crate) more: u32,
    pub(crate) more_len: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PathTable {
    /// Where lookups start: the root, or its only child when the root offers nothing else
    /// (the usual case: every pattern starts with '/'). The root's label is empty, so either
    /// is entered at byte 0.
    pub(crate) start: u32,
    pub(crate) nodes: Vec<FrozenNode>,
    pub(crate) cold: Vec<ColdNode>,
    /// First byte of each node's label (0 for parameter nodes), for nodes with more than
    /// eight children.
    pub(crate) firsts: Vec<u8>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) leaves: Vec<FrozenLeaf>,
    pub(crate) more: Vec<(u64, u32)>,
}

/// State of one lookup.
pub(crate) struct Walk<'p> {
    path: &'p [u8],
    bit: u64,
    pub(crate) spans: Spans,
    /// Union of the methods of every route whose whole path matched.
    pub(crate) allow: u64,
    /// The longest prefix route so far, if it accepts the method (a longer
    /// prefix that does not resets it: a less specific route never answers
    /// for a more specific one).
    pub(crate) prefix_route: u32,
    /// The methods of the longest prefix route so far.
    pub(crate) prefix_allow: u64,
}

impl<'p> Walk<'p> {
    #[inline]
    pub(crate) fn new(path: &'p [u8], bit: u64) -> Walk<'p> {
        Walk {
            path,
            bit,
            spans: Spans::new(),
            allow: 0,
            prefix_route: NONE,
            prefix_allow: 0,
        }
    }
}

impl PathTable {
    /// Runs a lookup; the route that matched path and method, if any. On `None`, `walk.allow`
    /// and `walk.prefix_route` tell the rest.
    #[inline]
    pub(crate) fn find(&self, walk: &mut Walk<'_>) -> Option<u32> {
        let start = &self.nodes[self.start as usize];
        let pos = match start.label_len {
            // The root, when it is where lookups start.
            0 => 0,
            // Usually "/".
            1 if walk.path.first() == Some(&(start.head as u8)) => 1,
            1 => return None,
            _ => self.label_end(self.start, walk.path, 0)?,
        };
        self.walk_loop(self.start, pos, walk)
    }

    /// Visits static node `n` (a non-empty label) entered at `pos`: its label first, then
    /// [`PathTable::walk_from`].
    fn visit(&self, n: u32, pos: usize, w: &mut Walk<'_>) -> Option<u32> {
        let pos = self.label_end(n, w.path, pos)?;
        self.walk_from(n, pos, w)
    }

    /// Where the label of static node `n` ends when it matches `path` at `pos`.
    #[inline(always)]
    fn label_end(&self, n: u32, path: &[u8], pos: usize) -> Option<usize> {
        self.node_label_end(n, &self.nodes[n as usize], path, pos)
    }

    /// [`PathTable::label_end`] with the node at hand.
    #[inline(always)]
    fn node_label_end(&self, n: u32, node: &FrozenNode, path: &[u8], pos: usize) -> Option<usize> {
        let len = node.label_len as usize;
        let rest = &path[pos..];
        if rest.len() < len {
            return None;
        }
        let head = match rest.first_chunk::<8>() {
            Some(word) => u64::from_le_bytes(*word),
            None => word_at(path, pos),
        };
        debug_assert!(len > 0);
        if (head ^ node.head) << node.head_shift != 0 {
            return None;
        }
        if len > 8 {
            let start = self.cold[n as usize].label as usize + 8;
            let label = &self.bytes[start..][..len - 8];
            if !same_bytes(&rest[8..len], label) {
                return None;
            }
        }
        Some(pos + len)
    }

    /// Continues at node `n`, whose label has matched up to `pos`: static children and lone
    /// parameters in this loop, the rare node with alternatives in [`PathTable::mixed`].
    fn walk_from(&self, n: u32, pos: usize, w: &mut Walk<'_>) -> Option<u32> {
        self.walk_loop(n, pos, w)
    }

    /// [`PathTable::walk_from`], inline: a lookup runs it once, in its own frame.
    #[inline(always)]
    fn walk_loop(&self, mut n: u32, mut pos: usize, w: &mut Walk<'_>) -> Option<u32> {
        let path = w.path;
        let mut node = &self.nodes[n as usize];
        loop {
            if node.shape == Shape::Mixed {
                return self.mixed(n, pos, w);
            }
            let Some(&b) = path.get(pos) else {
                return if node.exact != NONE {
                    self.leaf_route(node.exact, w)
                } else {
                    None
                };
            };
            if node.shape == Shape::Static {
                n = self.child(node, b)?;
                node = &self.nodes[n as usize];
                // The first byte is `b`: a one-byte label (a '/' after a parameter, a
                // split point) needs no comparison.
                pos = if node.label_len == 1 {
                    pos + 1
                } else {
                    self.node_label_end(n, node, path, pos)?
                };
            } else {
                // A parameter takes a non-empty segment; parameter nodes have empty labels.
                if b == b'/' {
                    return None;
                }
                let seg_end = segment_end(path, pos);
                w.spans.push((pos as u32, seg_end as u32));
                n = node.param();
                node = &self.nodes[n as usize];
                pos = seg_end;
                // What follows a segment is '/', and so is the first byte of every static
                // child of a parameter node: when there is one such child and nothing
                // else, go straight to it.
                if node.shape == Shape::Static && node.kids_len == 1 && pos < path.len() {
                    n = node.kids;
                    node = &self.nodes[n as usize];
                    pos = if node.label_len == 1 {
                        pos + 1
                    } else {
                        self.node_label_end(n, node, path, pos)?
                    };
                }
            }
        }
    }

    /// Node `n` ([`Shape::Mixed`]), whose label has matched up to `pos`. Alternatives in
    /// priority order: static child, parameter, catch-all; the walk comes back here only when
    /// one was tried before another.
    #[inline(never)]
    fn mixed(&self, n: u32, pos: usize, w: &mut Walk<'_>) -> Option<u32> {
        let path = w.path;
        let node = &self.nodes[n as usize];
        let cold = &self.cold[n as usize];
        if cold.prefix != NONE && path.get(pos).is_none_or(|&b| b == b'/') {
            self.prefix_candidate(cold.prefix, w);
        }
        let Some(&b) = path.get(pos) else {
            return if node.exact != NONE {
                self.leaf_route(node.exact, w)
            } else {
                None
            };
        };
        let child = self.child(node, b);
        // A parameter takes a non-empty segment.
        let param = cold.has_param && b != b'/';
        if !param && cold.catch_all == NONE {
            let c = child?;
            let pos = self.label_end(c, path, pos)?;
            return self.walk_from(c, pos, w);
        }
        if let Some(c) = child {
            let saved = w.spans.len();
            if let Some(r) = self.visit(c, pos, w) {
                return Some(r);
            }
            w.spans.truncate(saved);
        }
        if param {
            // Parameter nodes have empty labels.
            let seg_end = segment_end(path, pos);
            w.spans.push((pos as u32, seg_end as u32));
            if cold.catch_all == NONE {
                return self.walk_from(node.param(), seg_end, w);
            }
            let saved = w.spans.len() - 1;
            if let Some(r) = self.walk_from(node.param(), seg_end, w) {
                return Some(r);
            }
            w.spans.truncate(saved);
        }
        w.spans.push((pos as u32, path.len() as u32));
        let r = self.leaf_route(cold.catch_all, w);
        if r.is_none() {
            w.spans.pop();
        }
        r
    }

    /// The static child of `node` whose label starts with `b`. Up to eight children's first
    /// bytes are held in the node, more are read from `firsts`. A plain scan, not a branch-free
    /// SWAR index: its branches are predicted, so the CPU starts loading the child before the
    /// compare is done, and that measured faster than computing the index.
    #[inline(always)]
    fn child(&self, node: &FrozenNode, b: u8) -> Option<u32> {
        let len = node.kids_len as usize;
        if len <= 8 {
            let mut firsts = node.kid_firsts;
            for k in 0..len as u32 {
                if firsts as u8 == b {
                    return Some(node.kids + k);
                }
                firsts >>= 8;
            }
            return None;
        }
        let firsts = &self.firsts[node.kids as usize..][..len];
        firsts
            .iter()
            .position(|&f| f == b)
            .map(|k| node.kids + k as u32)
    }

    #[inline]
    fn leaf_route(&self, leaf: u32, w: &mut Walk<'_>) -> Option<u32> {
        let r = self.leaf_for(leaf, w.bit);
        if r.is_none() {
            w.allow |= self.leaves[leaf as usize].mask;
        }
        r
    }

    /// The route of `leaf` that takes the method `bit`, if any.
    #[inline]
    fn leaf_for(&self, leaf: u32, bit: u64) -> Option<u32> {
        let leaf = &self.leaves[leaf as usize];
        if leaf.mask & bit == 0 {
            return None;
        }
        if leaf.more_len == 0 {
            return Some(leaf.first_route);
        }
        let more = &self.more[leaf.more as usize..][..leaf.more_len as usize];
        // The first route is the one whose mask is not in `more`: check the others first.
        match more.iter().find(|(m, _)| m & bit != 0) {
            Some(&(_, r)) => Some(r),
            None => Some(leaf.first_route),
        }
    }

    /// Prefix leaves are met in order of increasing length, so a later one
    /// replaces an earlier one, whether or not it takes the method.
    #[inline]
    fn prefix_candidate(&self, leaf: u32, w: &mut Walk<'_>) {
        w.prefix_route = self.leaf_for(leaf, w.bit).unwrap_or(NONE);
        w.prefix_allow = self.leaves[leaf as usize].mask;
    }
}

/// The index of the first '/' at or after `pos` (`pos < path.len()`), or the path's length;
/// eight bytes at a time.
#[inline(always)]
fn segment_end(path: &[u8], pos: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const SLASHES: u64 = LO * b'/' as u64;
    // High bit of the lowest '/' byte of `w`.
    let slash = |w: u64| {
        let w = w ^ SLASHES;
        w.wrapping_sub(LO) & !w & (LO << 7)
    };
    let mut rest = &path[pos..];
    while let Some(chunk) = rest.first_chunk::<8>() {
        let hit = slash(u64::from_le_bytes(*chunk));
        if hit != 0 {
            return path.len() - rest.len() + (hit.trailing_zeros() / 8) as usize;
        }
        rest = &rest[8..];
    }
    if rest.is_empty() {
        return path.len();
    }
    // Fewer than eight bytes left; the padding past the end is never a '/'.
    let at = path.len() - rest.len();
    let hit = slash(word_at(path, at));
    if hit != 0 {
        at + (hit.trailing_zeros() / 8) as usize
    } else {
        path.len()
    }
}

/// Eight bytes of `s` from `i` (`i < s.len()`), zero-padded past the end, little-endian.
#[inline(always)]
pub(crate) fn word_at(s: &[u8], i: usize) -> u64 {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    if let Some(b) = s.get(i..i + 8) {
        return word(b);
    }
    let rest = s.len() - i;
    if s.len() >= 8 {
        // The last eight bytes, shifted so the wanted ones come first.
        word(&s[s.len() - 8..]) >> (8 * (8 - rest))
    } else {
        s[i..]
            .iter()
            .enumerate()
            .fold(0, |w, (k, &b)| w | (b as u64) << (8 * k))
    }
}

/// Equality of two equally long, usually short, slices, inline: labels are a few bytes, and
/// a call into the C library's `memcmp` per trie node measured slower than this loop.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return false;
        }
        i += 8;
    }
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
