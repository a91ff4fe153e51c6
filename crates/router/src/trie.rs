//! The per-host path table while it is built: a compressed radix trie over path bytes, frozen
//! into a [`PathTable`] for lookups.
//!
//! Static edges carry byte labels and are indexed by their first byte; a parameter is a child
//! node with an empty label that consumes one whole segment; a catch-all and the end of a
//! pattern are leaves hanging off a node. Prefix routes are leaves too: they are static, so they
//! sit on the purely static spine of the trie, which the walk always explores first.
//!
//! Conflicts are found here: two routes conflict exactly when they land on the same leaf with
//! overlapping method sets.

use crate::pattern::Piece;
use crate::table::{ColdNode, FrozenLeaf, FrozenNode, NONE, PathTable, Shape, word_at};

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

    /// The lookup form of this trie.
    pub(crate) fn freeze(&self) -> PathTable {
        let mut t = PathTable::default();
        // Breadth-first, so each node's static children get consecutive ids.
        let mut ids = vec![NONE; self.nodes.len()];
        let mut order = vec![0u32];
        ids[0] = 0;
        let mut i = 0;
        while i < order.len() {
            let node = &self.nodes[order[i] as usize];
            for &c in node
                .children
                .iter()
                .chain(std::iter::once(&node.param).filter(|&&p| p != NONE))
            {
                ids[c as usize] = order.len() as u32;
                order.push(c);
            }
            i += 1;
        }
        for &old in &order {
            let node = &self.nodes[old as usize];
            let label = t.bytes.len() as u32;
            t.bytes.extend_from_slice(&node.label);
            t.firsts.push(node.label.first().copied().unwrap_or(0));
            let first_child = node
                .children
                .first()
                .copied()
                .or((node.param != NONE).then_some(node.param))
                .map_or(0, |c| ids[c as usize]);
            debug_assert!(
                node.param == NONE
                    || ids[node.param as usize] == first_child + node.children.len() as u32
            );
            t.nodes.push(FrozenNode {
                head: word_at(&node.label, 0) & low_bytes(node.label.len().min(8)),
                kid_firsts: node
                    .children
                    .iter()
                    .take(8)
                    .enumerate()
                    .fold(0, |w, (k, &c)| {
                        w | (self.nodes[c as usize].label[0] as u64) << (8 * k)
                    }),
                kids: first_child,
                exact: node.exact,
                label_len: node.label.len() as u32,
                kids_len: node.children.len() as u16,
                shape: match (node.children.is_empty(), node.param != NONE) {
                    _ if node.catch_all != NONE || node.prefix != NONE => Shape::Mixed,
                    (_, false) => Shape::Static,
                    (true, true) => Shape::Param,
                    (false, true) => Shape::Mixed,
                },
                head_shift: (8 * (8 - node.label.len().min(8))) as u8,
            });
            t.cold.push(ColdNode {
                label,
                catch_all: node.catch_all,
                prefix: node.prefix,
                has_param: node.param != NONE,
            });
        }
        let root = &self.nodes[0];
        if root.children.len() == 1
            && root.param == NONE
            && root.catch_all == NONE
            && root.prefix == NONE
        {
            t.start = ids[root.children[0] as usize];
        }
        for leaf in &self.leaves {
            t.leaves.push(FrozenLeaf {
                mask: leaf.mask,
                first_route: leaf.routes[0].1,
                more: t.more.len() as u32,
                more_len: leaf.routes.len() as u32 - 1,
            });
            t.more.extend_from_slice(&leaf.routes[1..]);
        }
        t
    }
}

/// Mask of the `n` (at most 8) low bytes of a word.
fn low_bytes(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}
