//! The pool of RTP port pairs tapir anchors media on.
//!
//! Each leg of a call takes an even RTP port and the odd port above it for RTCP. Ports are
//! handed out least-recently-released first, so a port just freed is not reused at once and
//! late packets of an ended call cannot leak into a new one.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    used: HashSet<u16>,
}

impl PortPool {
    /// All even ports in `first..=last` whose odd neighbour is also in range.
    pub fn new(first: u16, last: u16) -> Self {
        let start = first + (first % 2);
        let free: VecDeque<u16> = (start..last).step_by(2).collect();
        Self {
            free,
            used: HashSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.used.insert(p);
        Some(p)
    }

    /// Two ports, one per leg, or none at all.
    pub fn allocate_pair(&mut self) -> Option<(u16, u16)> {
        if self.free.len() < 2 {
            return None;
        }
        Some((self.allocate()?, self.allocate()?))
    }

    pub fn release(&mut self, port: u16) {
        // Releasing twice must not put a port in the free list twice.
        if self.used.remove(&port) {
            self.free.push_back(port);
        }
    }

    pub fn release_pair(&mut self, a: u16, b: u16) {
        self.release(a);
        self.release(b);
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_recycled_last() {
        let mut p = PortPool::new(30001, 30010);
        assert_eq!(p.free(), 4); // 30002 30004 30006 30008
        let (a, b) = p.allocate_pair().unwrap();
        assert_eq!((a, b), (30002, 30004));
        p.release_pair(a, b);
        p.release(a);
        assert_eq!(p.free(), 4);
        assert_eq!(p.allocate(), Some(30006));
        let _ = p.allocate_pair().unwrap();
        assert!(
            p.allocate_pair().is_none(),
            "one port left cannot make a pair"
        );
        assert_eq!(p.in_use(), 3);
    }
}
