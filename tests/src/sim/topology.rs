//! Who is connected to whom. On one LAN every node finds every other
//! (mDNS) and dials it, so the graph is a full mesh until the node's
//! connection limit: past it, a node refuses more, and each ends up with
//! about `cap` peers drawn at random. The bounded-neighbour variant uses the
//! same draw with a small `cap`.

use crate::Rng;

/// The peers of each host, both ways: `adj[i]` lists `i`'s peers.
pub fn connect(hosts: usize, cap: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); hosts];
    if hosts <= cap + 1 {
        for (i, peers) in adj.iter_mut().enumerate() {
            peers.extend((0..hosts as u32).filter(|&j| j as usize != i));
        }
        return adj;
    }
    // Each host dials random others while both have room; a handful of
    // rounds fills nearly every host up to `cap`.
    let mut linked: Vec<std::collections::HashSet<u32>> = vec![Default::default(); hosts];
    for _ in 0..8 {
        for i in 0..hosts {
            let mut tries = 0;
            while adj[i].len() < cap && tries < 4 * cap {
                tries += 1;
                let j = rng.below(hosts as u64) as usize;
                if j == i || adj[j].len() >= cap || linked[i].contains(&(j as u32)) {
                    continue;
                }
                linked[i].insert(j as u32);
                linked[j].insert(i as u32);
                adj[i].push(j as u32);
                adj[j].push(i as u32);
            }
        }
    }
    adj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_cap_everyone_knows_everyone() {
        let adj = connect(5, 256, &mut Rng::new(1));
        for (i, peers) in adj.iter().enumerate() {
            assert_eq!(peers.len(), 4);
            assert!(!peers.contains(&(i as u32)));
        }
    }

    #[test]
    fn past_the_cap_nobody_has_more_and_links_go_both_ways() {
        let cap = 16;
        let adj = connect(500, cap, &mut Rng::new(2));
        let mut full = 0;
        for (i, peers) in adj.iter().enumerate() {
            assert!(peers.len() <= cap);
            full += usize::from(peers.len() == cap);
            let mut sorted = peers.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), peers.len(), "no double links");
            for &j in peers {
                assert!(adj[j as usize].contains(&(i as u32)));
            }
        }
        assert!(full >= 490, "{full} of 500 full");
    }
}
