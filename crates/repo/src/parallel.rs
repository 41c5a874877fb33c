//! Work shared by a few threads, stopped at the first error.
//!
//! A backup reads files, `verify` reads packs and named objects, a restore
//! reads pack ranges and writes files: blocking I/O, item by item, on a
//! handful of threads. [`Pool`] runs them all the same way: scoped threads
//! take the next item from a shared cursor; the first error makes every
//! worker stop taking items, and it is what the caller gets back, never a
//! partial result. Nothing is shared behind a lock: each worker keeps what
//! it produced and hands it back when it ends, so no result can be lost to
//! a poisoned mutex. A worker that panics stops the others too, and the
//! panic is raised again in the caller once they have ended.
//!
//! Not rayon: its pool is sized and scheduled for CPU work, while these
//! workers spend their time blocked in I/O (a restore wants at least four
//! of them on two cores); a restore worker keeps state across its items (a
//! file sink with staged writes) that must be flushed when it ends, error
//! or not; and its `try_for_each` stops early only on a best-effort basis,
//! with no such wrap-up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The number of cores this process may use (2 when it cannot be told).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The data behind `m`, even when a thread panicked holding it: what was
/// recorded there (a result, an error, a damaged page) stays recorded and is
/// not dropped with the lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many workers share a list of items, and where each starts.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    workers: usize,
    /// The first item of each stretch of the list (the first is 0); a
    /// worker starts on its own stretch and, once it is done, helps with the
    /// others'. One stretch: every worker takes from the same cursor.
    starts: Vec<usize>,
}

/// Which worker's error came first: errors are numbered as they happen.
type Failure<E> = (usize, E);

impl Pool {
    /// `workers` workers (at least one) taking items in order from one cursor.
    pub(crate) fn new(workers: usize) -> Pool {
        Pool {
            workers: workers.max(1),
            starts: vec![0],
        }
    }

    /// At most `workers` workers (and no more than items), each starting on
    /// its own contiguous stretch of items of about equal total weight
    /// (`weights`, one per item), then helping with the others' stretches.
    pub(crate) fn stretched(workers: usize, weights: &[u64]) -> Pool {
        let workers = workers.min(weights.len()).max(1);
        let total: u64 = weights.iter().sum();
        let mut starts = vec![0usize];
        let mut acc = 0u64;
        for (i, w) in weights.iter().enumerate() {
            acc += w;
            if starts.len() < workers && acc * workers as u64 >= total * starts.len() as u64 {
                starts.push(i + 1);
            }
        }
        Pool {
            workers: starts.len(),
            starts,
        }
    }

    /// The number of workers.
    #[cfg(test)]
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Calls `f` on every item; returns what it returned, in the items'
    /// order, or the first error (after which no worker takes a new item).
    pub(crate) fn try_map<T, R, E>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<R, E> + Sync,
    ) -> Result<Vec<R>, E>
    where
        T: Sync,
        R: Send,
        E: Send,
    {
        let (done, result) = self.run(
            items,
            Vec::new,
            |done: &mut Vec<(usize, R)>, i, item| {
                done.push((i, f(item)?));
                Ok(())
            },
            |done| (done, Ok(())),
        );
        result?;
        let mut all: Vec<(usize, R)> = done.into_iter().flatten().collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, r)| r).collect())
    }

    /// The general form: each worker starts with the state `start` makes,
    /// calls `each` with it on the items it takes (with their positions),
    /// and ends, whatever happened, by handing the state to `end`, which
    /// returns what the worker leaves and whether its wrap-up succeeded.
    /// Returns every worker's `end` output, and the first error of any
    /// `each` or `end`; after an error no worker takes a new item.
    pub(crate) fn run<T, W, O, E>(
        &self,
        items: &[T],
        start: impl Fn() -> W + Sync,
        each: impl Fn(&mut W, usize, &T) -> Result<(), E> + Sync,
        end: impl Fn(W) -> (O, Result<(), E>) + Sync,
    ) -> (Vec<O>, Result<(), E>)
    where
        T: Sync,
        O: Send,
        E: Send,
    {
        let stretches = self.starts.len();
        let ends: Vec<usize> = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([items.len()])
            .map(|e| e.min(items.len()))
            .collect();
        let cursors: Vec<AtomicUsize> = self.starts.iter().map(|&s| AtomicUsize::new(s)).collect();
        let stop = AtomicBool::new(false);
        let failures = AtomicUsize::new(0);
        let (cursors, ends, stop, failures) = (&cursors, &ends, &stop, &failures);
        let (start, each, end) = (&start, &each, &end);
        let fail = move |e: E| -> Failure<E> {
            stop.store(true, Ordering::Relaxed);
            (failures.fetch_add(1, Ordering::Relaxed), e)
        };
        let joined = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.workers)
                .map(|k| {
                    s.spawn(move || {
                        let _stop = StopOnPanic(stop);
                        let mut state = start();
                        let mut failed: Option<Failure<E>> = None;
                        'work: for seg in (0..stretches).map(|j| (k + j) % stretches) {
                            loop {
                                if stop.load(Ordering::Relaxed) {
                                    break 'work;
                                }
                                let i = cursors[seg].fetch_add(1, Ordering::Relaxed);
                                if i >= ends[seg] {
                                    break;
                                }
                                if let Err(e) = each(&mut state, i, &items[i]) {
                                    failed = Some(fail(e));
                                    break 'work;
                                }
                            }
                        }
                        let (out, ended) = end(state);
                        if let Err(e) = ended {
                            failed.get_or_insert_with(|| fail(e));
                        }
                        (out, failed)
                    })
                })
                .collect();
            // Every worker is joined before a panic is raised again: the
            // others have stopped by then.
            handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
        });
        let mut outs = Vec::with_capacity(joined.len());
        let mut first: Option<Failure<E>> = None;
        let mut panicked = None;
        for j in joined {
            match j {
                Ok((out, failed)) => {
                    outs.push(out);
                    if let Some(f) = failed {
                        if first.as_ref().is_none_or(|(n, _)| f.0 < *n) {
                            first = Some(f);
                        }
                    }
                }
                Err(payload) => {
                    panicked.get_or_insert(payload);
                }
            }
        }
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
        (
            outs,
            match first {
                Some((_, e)) => Err(e),
                None => Ok(()),
            },
        )
    }
}

/// Stops every worker when the one holding it panics.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_the_items_order() {
        let items: Vec<u32> = (0..1000).collect();
        for workers in [1, 2, 7] {
            let got = Pool::new(workers)
                .try_map(&items, |&i| Ok::<_, ()>(i * 2))
                .unwrap();
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_first_error_comes_back_and_no_worker_takes_another_item() {
        let items: Vec<u32> = (0..10_000).collect();
        let calls = AtomicUsize::new(0);
        let f = |&i: &u32| {
            calls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
            if i == 3 {
                Err(format!("item {i} failed"))
            } else {
                Ok(i)
            }
        };
        // One worker: exactly the items up to the failing one.
        assert_eq!(Pool::new(1).try_map(&items, f), Err("item 3 failed".into()));
        assert_eq!(calls.swap(0, Ordering::Relaxed), 4);
        // Four: the others stop too, long before the end.
        assert_eq!(Pool::new(4).try_map(&items, f), Err("item 3 failed".into()));
        assert!(calls.load(Ordering::Relaxed) < items.len() / 2, "{calls:?}");
    }

    #[test]
    fn a_worker_that_panics_stops_the_others_and_the_caller_sees_the_panic() {
        let items: Vec<u32> = (0..10_000).collect();
        let calls = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(|| {
            Pool::new(3).try_map(&items, |&i| {
                calls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
                if i == 5 {
                    panic!("worker panics on item {i}");
                }
                Ok::<_, ()>(i)
            })
        });
        // Not a partial list of results: the panic itself.
        let payload = caught.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("worker panics on item 5")
        );
        // They stop once the panic unwinds (after the panic hook, which may
        // take a while printing a backtrace), long before the end.
        assert!(calls.load(Ordering::Relaxed) < items.len() / 2, "{calls:?}");
    }

    #[test]
    fn every_worker_ends_its_work_even_after_an_error_and_its_end_can_fail_too() {
        let items: Vec<u32> = (0..100).collect();
        let pool = Pool::new(3);
        let (outs, result) = pool.run(
            &items,
            Vec::new,
            |seen: &mut Vec<u32>, _, &i| {
                seen.push(i);
                if i == 10 {
                    Err("item 10")
                } else {
                    Ok(())
                }
            },
            |seen| (seen, Ok(())),
        );
        assert_eq!(result, Err("item 10"));
        assert_eq!(outs.len(), 3);
        assert!(outs.iter().flatten().any(|&i| i == 10));

        // An `end` that fails is an error like any other.
        let (outs, result) = pool.run(
            &items,
            || 0u32,
            |n, _, _| {
                *n += 1;
                Ok(())
            },
            |n| (n, if n > 0 { Err("flush failed") } else { Ok(()) }),
        );
        assert_eq!(result, Err("flush failed"));
        assert_eq!(outs.iter().sum::<u32>(), 100);
    }

    #[test]
    fn stretches_give_each_worker_its_own_part_and_all_items_are_taken_once() {
        let weights = [1u64; 8];
        let pool = Pool::stretched(4, &weights);
        assert_eq!(pool.workers(), 4);
        assert_eq!(pool.starts, vec![0, 2, 4, 6]);
        // Heavy items first: the first stretches are short.
        assert_eq!(Pool::stretched(2, &[10, 1, 1, 1, 1]).starts, vec![0, 1]);
        let items: Vec<usize> = (0..weights.len()).collect();
        let got = pool.try_map(&items, |&i| Ok::<_, ()>(i)).unwrap();
        assert_eq!(got, items);
        // Fewer items than workers: a worker per item.
        assert_eq!(Pool::stretched(8, &[5, 5]).workers(), 2);
        assert!(Pool::stretched(8, &[])
            .try_map(&[] as &[u8], |_| Ok::<_, ()>(()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_poisoned_lock_still_gives_what_was_recorded() {
        let found = Mutex::new(vec!["damage found before the panic"]);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = found.lock().unwrap();
                panic!("a thread panics holding the lock");
            })
            .join()
        });
        assert!(found.is_poisoned());
        lock(&found).push("damage found after it");
        assert_eq!(
            *lock(&found),
            vec!["damage found before the panic", "damage found after it"]
        );
    }
}
