//! The baseline: a linear scan over the routes, kept in priority order so the first route that
//! matches host, method and path wins. Exact patterns only (the bench tables have no prefix
//! routes). Allocation-free, written the way a simple gateway would.

use smallvec::SmallVec;

enum Seg {
    Static(Box<[u8]>),
    Param,
    CatchAll,
}

struct Entry {
    host: Box<[u8]>,
    method: Box<[u8]>,
    segs: Vec<Seg>,
    id: usize,
}

/// Captures of one match: byte ranges into the path.
pub type Spans = SmallVec<[(usize, usize); 8]>;

pub struct Linear {
    entries: Vec<Entry>,
}

impl Linear {
    /// `(host, method, pattern)` triples; ids are their indices.
    pub fn new(routes: &[(String, String, String)]) -> Linear {
        let mut entries: Vec<Entry> = routes
            .iter()
            .enumerate()
            .map(|(id, (host, method, pattern))| Entry {
                host: host.as_bytes().into(),
                method: method.as_bytes().into(),
                segs: pattern[1..]
                    .split('/')
                    .map(|s| match s.as_bytes().first() {
                        Some(b':') => Seg::Param,
                        Some(b'*') => Seg::CatchAll,
                        _ => Seg::Static(s.as_bytes().into()),
                    })
                    .collect(),
                id,
            })
            .collect();
        let rank = |e: &Entry| -> Vec<u8> {
            e.segs
                .iter()
                .map(|s| match s {
                    Seg::Static(_) => 0,
                    Seg::Param => 1,
                    Seg::CatchAll => 2,
                })
                .collect()
        };
        entries.sort_by_key(|e| rank(e));
        Linear { entries }
    }

    pub fn lookup(&self, host: &[u8], method: &[u8], path: &[u8]) -> Option<(usize, Spans)> {
        let host = match host.iter().position(|&b| b == b':') {
            Some(i) => &host[..i],
            None => host,
        };
        'routes: for e in &self.entries {
            if *e.method != *method || !e.host.eq_ignore_ascii_case(host) {
                continue;
            }
            let mut spans = SmallVec::new();
            let mut pos = 1;
            for (i, seg) in e.segs.iter().enumerate() {
                if pos > path.len() {
                    continue 'routes;
                }
                let end = path[pos..]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(path.len(), |p| pos + p);
                match seg {
                    Seg::Static(s) if path[pos..end] == **s => {}
                    Seg::Param if end > pos => spans.push((pos, end)),
                    Seg::CatchAll if pos < path.len() && i + 1 == e.segs.len() => {
                        spans.push((pos, path.len()));
                        return Some((e.id, spans));
                    }
                    _ => continue 'routes,
                }
                pos = end + 1;
            }
            if pos == path.len() + 1 {
                return Some((e.id, spans));
            }
        }
        None
    }
}
