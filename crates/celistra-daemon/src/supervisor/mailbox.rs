//! What wakes an agent's task besides its process: the orders it takes one at a time, and when
//! a usage-limit wait ends. Each is a little state and a [`Notify`]; tokio's channels cost about
//! 1.1 KiB of every agent for the same (a cache-padded channel and its first block of 32 slots,
//! a watch channel with its eight notifiers).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Orders for one agent's task, its one taker, in the order they were given.
#[derive(Debug)]
pub(crate) struct Orders<T> {
    queue: Mutex<Queue<T>>,
    given: Notify,
}

impl<T> Default for Orders<T> {
    fn default() -> Self {
        Orders {
            queue: Mutex::new(Queue::default()),
            given: Notify::new(),
        }
    }
}

#[derive(Debug)]
struct Queue<T> {
    waiting: VecDeque<T>,
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            waiting: VecDeque::new(),
            closed: false,
        }
    }
}

impl<T> Orders<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an order; gives it back if the task has ended.
    pub(crate) fn give(&self, order: T) -> Result<(), T> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(order);
            }
            queue.waiting.push_back(order);
        }
        // One permit is kept if the task is not waiting yet: it takes the order when it looks.
        self.given.notify_one();
        Ok(())
    }

    /// The next order, once there is one.
    pub(crate) async fn next(&self) -> T {
        loop {
            if let Some(order) = self.lock().waiting.pop_front() {
                return order;
            }
            self.given.notified().await;
        }
    }

    /// The task ended: orders waiting are dropped (whoever waits on one's reply hears that the
    /// agent is gone) and later ones refused.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut queue = self.lock();
            queue.closed = true;
            std::mem::take(&mut queue.waiting)
        };
        drop(dropped);
    }
}

/// When a running agent waiting on a usage limit is resumed (ms since the epoch), if it is.
#[derive(Debug, Default)]
pub(crate) struct ResumeAt {
    /// 0: not waiting.
    at_ms: AtomicU64,
    changed: Notify,
}

impl ResumeAt {
    pub(crate) fn set(&self, at_ms: Option<u64>) {
        self.at_ms.store(at_ms.unwrap_or(0), Ordering::SeqCst);
        self.changed.notify_one();
    }

    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.at_ms.load(Ordering::SeqCst)).filter(|&at| at != 0)
    }

    /// Resolves once [`ResumeAt::set`] was called since the last time it resolved.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn orders_come_in_order_wake_the_taker_and_are_refused_once_closed() {
        let orders = std::sync::Arc::new(Orders::<u32>::default());
        orders.give(1).unwrap();
        orders.give(2).unwrap();
        assert_eq!(orders.next().await, 1);
        assert_eq!(orders.next().await, 2);
        // A taker already waiting is woken by the next order.
        let taker = tokio::spawn({
            let orders = std::sync::Arc::clone(&orders);
            async move { orders.next().await }
        });
        tokio::task::yield_now().await;
        orders.give(3).unwrap();
        let taken = tokio::time::timeout(Duration::from_secs(10), taker)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(taken, 3);
        orders.give(4).unwrap();
        orders.close();
        assert_eq!(orders.give(5), Err(5));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), orders.next())
                .await
                .is_err(),
            "an order waiting when the queue closed was kept"
        );
    }

    #[tokio::test]
    async fn a_resume_time_set_before_anyone_waits_still_wakes_the_next_wait() {
        let resume = ResumeAt::default();
        assert_eq!(resume.get(), None);
        resume.set(Some(42));
        tokio::time::timeout(Duration::from_secs(10), resume.changed())
            .await
            .expect("the change was kept for the wait");
        assert_eq!(resume.get(), Some(42));
        resume.set(None);
        assert_eq!(resume.get(), None);
    }
}
