//! The per-host path table: a compressed radix trie over path bytes.
//!
//! Static edges carry byte labels and are indexed by their first byte; a parameter is a child
//! node with an empty label that consumes one whole segment; a catch-all and the end of a
//! pattern are leaves hanging off a node. Prefix routes are leaves too: they are static, so they
//! sit on the purely static spine of the trie, which the walk always explores first.
//!
//! The walk is a depth-first search in priority order — static child, then parameter, then
//! catch-all — and stops at the first leaf that accepts the method. Each node is entered at
//! most once per lookup (a node fixes how many bytes and segments came before it), so a lookup
//! is bounded by the size of the trie even when it backtracks. Leaves hold a method bitset
//! (the union of their routes') so rejecting a method is one `AND`.

use smallvec::SmallVec;

use crate::pattern::{MAX_PARAMS, Piece};

pub(crate) const NONE: u32 = u32::MAX;

/// Parameter captures of one lookup: byte spans into the path.
pub(crate) type Spans = SmallVec<[(u32, u32); MAX_PARAMS]>;

#[derive(Clone, Debug)]
struct Node {
    /// Bytes consumed when entering this node; empty for parameter nodes.
    label: Box<[u8]>,
    /// First byte of each static child, parallel to `children`.
    first: Vec<u8>,
    children: Vec<u32>,
    /// Parameter child (a node), or `NONE`.
    param: u32,
    /// Leaf of patterns that end here, or `NONE`.
    exact: u32,
    /// Leaf of a catch-all that follows here, or `NONE`.
    catch_all: u32,
    /// Leaf of prefix routes that end here, or `NONE`.
    prefix: u32,
}

impl Node {
    fn new(label: &[u8]) -> Node {
        Node {
            label: label.into(),
            first: Vec::new(),
            children: Vec::new(),
            param: NONE,
            exact: NONE,
            catch_all: NONE,
            prefix: NONE,
        }
    }
}

/// Routes of one shape: the union of their methods and each route's own set.
#[derive(Clone, Debug, Default)]
pub(crate) struct Leaf {
    mask: u64,
    routes: Vec<(u64, u32)>,
}

/// Where a pattern ends in the trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Exact(u32),
    CatchAll(u32),
    Prefix(u32),
}

/// State of one lookup.
pub(crate) struct Walk<'p> {
    path: &'p [u8],
    bit: u64,
    pub(crate) spans: Spans,
    /// Union of the methods of every route whose path matched.
    pub(crate) allow: u64,
    /// Longest prefix route so far that accepts the method.
    pub(crate) prefix_route: u32,
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
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct PathTrie {
    nodes: Vec<Node>,
    leaves: Vec<Leaf>,
}

impl Default for PathTrie {
    fn default() -> PathTrie {
        PathTrie {
            nodes: vec![Node::new(b"")],
            leaves: Vec::new(),
        }
    }
}

impl PathTrie {
    /// Finds (creating nodes as needed) the slot where an exact pattern ends. Creating nodes
    /// without leaves never changes what the trie matches, so a caller may give up afterwards.
    pub(crate) fn exact_slot(&mut self, pieces: &[Piece]) -> Slot {
        let mut node = 0;
        for piece in pieces {
            match piece {
                Piece::Static(bytes) => node = self.static_node(node, bytes),
                Piece::Param(_) => {
                    if self.nodes[node as usize].param == NONE {
                        let p = self.push_node(b"");
                        self.nodes[node as usize].param = p;
                    }
                    node = self.nodes[node as usize].param;
                }
                Piece::CatchAll(_) => return Slot::CatchAll(node),
            }
        }
        Slot::Exact(node)
    }

    /// Finds (creating nodes as needed) the slot of a prefix route.
    pub(crate) fn prefix_slot(&mut self, prefix: &[u8]) -> Slot {
        Slot::Prefix(self.static_node(0, prefix))
    }

    fn leaf_id(&self, slot: Slot) -> u32 {
        match slot {
            Slot::Exact(n) => self.nodes[n as usize].exact,
            Slot::CatchAll(n) => self.nodes[n as usize].catch_all,
            Slot::Prefix(n) => self.nodes[n as usize].prefix,
        }
    }

    /// The first route in `slot` whose methods overlap `mask`, and the overlap.
    pub(crate) fn conflict(&self, slot: Slot, mask: u64) -> Option<(u32, u64)> {
        let leaf = self.leaf_id(slot);
        if leaf == NONE {
            return None;
        }
        let leaf = &self.leaves[leaf as usize];
        leaf.routes
            .iter()
            .find(|(m, _)| m & mask != 0)
            .map(|&(m, r)| (r, m & mask))
    }

    /// Adds a route to a slot; the caller has checked [`PathTrie::conflict`].
    pub(crate) fn add(&mut self, slot: Slot, mask: u64, route: u32) {
        let mut leaf = self.leaf_id(slot);
        if leaf == NONE {
            leaf = self.leaves.len() as u32;
            self.leaves.push(Leaf::default());
            let node = match slot {
                Slot::Exact(n) => &mut self.nodes[n as usize].exact,
                Slot::CatchAll(n) => &mut self.nodes[n as usize].catch_all,
                Slot::Prefix(n) => &mut self.nodes[n as usize].prefix,
            };
            *node = leaf;
        }
        let leaf = &mut self.leaves[leaf as usize];
        leaf.mask |= mask;
        leaf.routes.push((mask, route));
    }

    fn push_node(&mut self, label: &[u8]) -> u32 {
        self.nodes.push(Node::new(label));
        (self.nodes.len() - 1) as u32
    }

    /// Walks static bytes from `node`, splitting edges as needed; the node where they end.
    fn static_node(&mut self, mut node: u32, mut bytes: &[u8]) -> u32 {
        while let Some(&b) = bytes.first() {
            let n = &self.nodes[node as usize];
            let Some(i) = n.first.iter().position(|&f| f == b) else {
                let child = self.push_node(bytes);
                let n = &mut self.nodes[node as usize];
                n.first.push(b);
                n.children.push(child);
                return child;
            };
            let child = n.children[i];
            let label = &self.nodes[child as usize].label;
            let common = label.iter().zip(bytes).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // Split: a new node takes the common part, the old child keeps the rest.
                let rest: Box<[u8]> = label[common..].into();
                let mid = self.push_node(&bytes[..common]);
                let old = &mut self.nodes[child as usize];
                let rest_first = rest[0];
                old.label = rest;
                let m = &mut self.nodes[mid as usize];
                m.first.push(rest_first);
                m.children.push(child);
                self.nodes[node as usize].children[i] = mid;
                node = mid;
            } else {
                node = child;
            }
            bytes = &bytes[common..];
        }
        node
    }

    /// Runs a lookup; the route that matched path and method, if any. On `None`, `walk.allow`
    /// and `walk.prefix_route` tell the rest.
    #[inline]
    pub(crate) fn find(&self, walk: &mut Walk<'_>) -> Option<u32> {
        self.visit(0, 0, walk)
    }

    fn visit(&self, n: u32, pos: usize, w: &mut Walk<'_>) -> Option<u32> {
        let node = &self.nodes[n as usize];
        let path = w.path;
        let end = pos + node.label.len();
        if path.get(pos..end) != Some(&node.label[..]) {
            return None;
        }
        let pos = end;
        if node.prefix != NONE && path.get(pos).is_none_or(|&b| b == b'/') {
            self.prefix_candidate(node.prefix, w);
        }
        let Some(&b) = path.get(pos) else {
            return if node.exact != NONE {
                self.leaf_route(node.exact, w)
            } else {
                None
            };
        };
        if let Some(i) = node.first.iter().position(|&f| f == b)
            && let Some(r) = self.visit(node.children[i], pos, w)
        {
            return Some(r);
        }
        if node.param != NONE {
            let seg_end = path[pos..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(path.len(), |e| pos + e);
            if seg_end > pos {
                w.spans.push((pos as u32, seg_end as u32));
                if let Some(r) = self.visit(node.param, seg_end, w) {
                    return Some(r);
                }
                w.spans.pop();
            }
        }
        if node.catch_all != NONE {
            w.spans.push((pos as u32, path.len() as u32));
            if let Some(r) = self.leaf_route(node.catch_all, w) {
                return Some(r);
            }
            w.spans.pop();
        }
        None
    }

    #[inline]
    fn leaf_route(&self, leaf: u32, w: &mut Walk<'_>) -> Option<u32> {
        let leaf = &self.leaves[leaf as usize];
        if leaf.mask & w.bit == 0 {
            w.allow |= leaf.mask;
            return None;
        }
        leaf.routes
            .iter()
            .find(|(m, _)| m & w.bit != 0)
            .map(|&(_, r)| r)
    }

    /// Prefix leaves are met in order of increasing length, so a later hit replaces an
    /// earlier one.
    #[inline]
    fn prefix_candidate(&self, leaf: u32, w: &mut Walk<'_>) {
        if let Some(r) = self.leaf_route(leaf, w) {
            w.prefix_route = r;
        }
    }
}
