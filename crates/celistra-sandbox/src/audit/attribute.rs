//! Whose a block is and whether it gets through: the agent owning a Landlock domain (learnt from
//! any attributed record of the domain, so blocks still find their agent after the process has
//! exited), and a token bucket per agent so a denial loop cannot flood the daemon. Every map is
//! bounded.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map that forgets its least recently used entry when full.
#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    uses: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        LruMap {
            entries: HashMap::new(),
            uses: 0,
            capacity,
        }
    }

    pub(crate) fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.uses += 1;
        let (value, last_use) = self.entries.get_mut(key)?;
        *last_use = self.uses;
        Some(value)
    }

    /// The entry for `key`, inserted with `make` if absent (evicting the least recently used entry
    /// when full). A full scan on eviction is cheap at the capacities used here.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.uses += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let least_recent = self
                .entries
                .iter()
                .min_by_key(|(_, (_, last_use))| *last_use)
                .map(|(k, _)| k.clone());
            if let Some(least_recent) = least_recent {
                self.entries.remove(&least_recent);
            }
        }
        let uses = self.uses;
        let (value, last_use) = self.entries.entry(key).or_insert_with(|| (make(), uses));
        *last_use = uses;
        value
    }

    pub(crate) fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.entries.remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Landlock domains remembered with their agent. Domains are freed (and forgotten) when their
/// last process exits; the bound covers missed deallocation records.
const MAX_DOMAINS: usize = 4096;

/// Finds the agent a block belongs to.
pub(crate) struct Attributor<R> {
    resolve: R,
    domain_agents: LruMap<String, String>,
}

impl<R: Fn(u32, Option<u32>) -> Option<String>> Attributor<R> {
    pub(crate) fn new(resolve: R) -> Self {
        Attributor {
            resolve,
            domain_agents: LruMap::new(MAX_DOMAINS),
        }
    }

    /// A domain's first record names the process that created it, which for a sandboxed agent
    /// lives as long as the agent.
    pub(crate) fn domain_created(&mut self, domain: &str, creator: u32) {
        if self.domain_agents.get_mut(domain).is_none()
            && let Some(agent) = (self.resolve)(creator, None)
        {
            self.domain_agents
                .get_or_insert_with(domain.to_owned(), || agent);
        }
    }

    pub(crate) fn domain_freed(&mut self, domain: &str) {
        self.domain_agents.remove(domain);
    }

    /// The agent owning a block of `pid` (in audit `session`) in `domain`. A known domain answers
    /// first: it belongs to one agent for life, which also holds after the process exited or its
    /// pid was reused. Otherwise pid and session are resolved, and the answer is remembered for the
    /// domain.
    pub(crate) fn agent_of(
        &mut self,
        pid: u32,
        session: Option<u32>,
        domain: Option<&str>,
    ) -> Option<String> {
        if let Some(agent) = domain.and_then(|d| self.domain_agents.get_mut(d)) {
            return Some(agent.clone());
        }
        let agent = (pid != 0 || session.is_some())
            .then(|| (self.resolve)(pid, session))
            .flatten()?;
        if let Some(domain) = domain {
            self.domain_agents
                .get_or_insert_with(domain.to_owned(), || agent.clone());
        }
        Some(agent)
    }
}

/// An agent may report `BURST` blocks at once, then one per `REFILL_EVERY` (10 per second).
const BURST: u32 = 20;
const REFILL_EVERY: Duration = Duration::from_millis(100);
/// Agents with a bucket; the least recently blocked one is forgotten beyond this.
const MAX_AGENTS: usize = 1024;

/// A token bucket per agent.
pub(crate) struct RateLimiter {
    buckets: LruMap<String, Bucket>,
}

/// Tokens are kept as time credit (one token is `REFILL_EVERY`), so refilling is exact.
struct Bucket {
    credit: Duration,
    refilled_at: Instant,
    suppressed: u64,
}

impl RateLimiter {
    pub(crate) fn new() -> Self {
        RateLimiter {
            buckets: LruMap::new(MAX_AGENTS),
        }
    }

    /// Whether a block of `agent` at `now` gets through: `Some(n)` with the number of its blocks
    /// suppressed since the last one that got through, or `None` when this one is suppressed.
    pub(crate) fn admit(&mut self, agent: &str, now: Instant) -> Option<u64> {
        let bucket = self
            .buckets
            .get_or_insert_with(agent.to_owned(), || Bucket {
                credit: REFILL_EVERY * BURST,
                refilled_at: now,
                suppressed: 0,
            });
        let taken = bucket.take(now);
        if taken.is_none() {
            bucket.suppressed += 1;
        }
        taken
    }

    /// For a block held back earlier (and counted as suppressed): `Some(n)` once `agent` may report
    /// again, `n` counting the held block itself; `None` while it may not.
    pub(crate) fn release(&mut self, agent: &str, now: Instant) -> Option<u64> {
        self.buckets.get_mut(agent)?.take(now)
    }
}

/// When a refill is due for an agent that may not report now.
pub(crate) const RETRY_AFTER: Duration = REFILL_EVERY;

impl Bucket {
    /// Refills by the time passed, then takes a token if there is one: `Some` with the blocks
    /// suppressed since the last one that got through.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.credit = (self.credit + elapsed).min(REFILL_EVERY * BURST);
        self.refilled_at = self.refilled_at.max(now);
        if self.credit >= REFILL_EVERY {
            self.credit -= REFILL_EVERY;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_burst_then_ten_per_second_with_the_suppressed_count() {
        let mut limiter = RateLimiter::new();
        let start = Instant::now();
        let admitted = (0..25)
            .filter(|_| limiter.admit("ag-loop", start).is_some())
            .count();
        assert_eq!(admitted, 20);
        assert_eq!(
            limiter.admit("ag-loop", start + Duration::from_millis(50)),
            None
        );
        assert_eq!(
            limiter.admit("ag-loop", start + Duration::from_millis(100)),
            Some(6),
            "one token after 100 ms, reporting the 6 suppressed"
        );
        assert_eq!(
            limiter.admit("ag-loop", start + Duration::from_millis(150)),
            None
        );
        assert_eq!(
            limiter.admit("ag-calm", start),
            Some(0),
            "buckets are per agent"
        );
        let later = start + Duration::from_secs(60);
        let admitted = (0..30)
            .filter(|_| limiter.admit("ag-loop", later).is_some())
            .count();
        assert_eq!(
            admitted, 20,
            "an idle bucket refills to the burst, not beyond"
        );
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing() {
        let mut limiter = RateLimiter::new();
        let start = Instant::now() + Duration::from_secs(10);
        for _ in 0..20 {
            limiter.admit("ag-x", start);
        }
        assert_eq!(limiter.admit("ag-x", start - Duration::from_secs(5)), None);
        assert_eq!(
            limiter.admit("ag-x", start + Duration::from_millis(100)),
            Some(1)
        );
    }

    #[test]
    fn the_lru_map_forgets_the_least_recently_used() {
        let mut map = LruMap::new(2);
        map.get_or_insert_with("a", || 1);
        map.get_or_insert_with("b", || 2);
        assert!(map.get_mut("a").is_some());
        map.get_or_insert_with("c", || 3);
        assert_eq!(map.len(), 2);
        assert!(map.get_mut("b").is_none());
        assert_eq!(map.get_or_insert_with("a", || 9), &mut 1);
        map.remove("a");
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_domain_keeps_its_agent_after_the_process_is_gone() {
        let alive = RefCell::new(vec![10_u32]);
        let mut attributor =
            Attributor::new(|pid, _| alive.borrow().contains(&pid).then(|| format!("ag-{pid}")));
        attributor.domain_created("d1", 10);
        alive.borrow_mut().clear();
        assert_eq!(
            attributor.agent_of(11, None, Some("d1")).as_deref(),
            Some("ag-10")
        );
        assert_eq!(attributor.agent_of(11, None, Some("d2")), None);
        assert_eq!(attributor.agent_of(0, None, None), None);

        alive.borrow_mut().push(12);
        assert_eq!(
            attributor.agent_of(12, None, Some("d2")).as_deref(),
            Some("ag-12")
        );
        alive.borrow_mut().clear();
        assert_eq!(
            attributor.agent_of(12, None, Some("d2")).as_deref(),
            Some("ag-12"),
            "learnt from an attributed block"
        );
        attributor.domain_freed("d2");
        assert_eq!(attributor.agent_of(12, None, Some("d2")), None);
    }
}
