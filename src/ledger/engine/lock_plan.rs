//! The advisory locks a batch takes for its attached writes ([`LockPlan`]): a bounded number
//! whatever the batch's size, in one global order (buckets, then keys), and their tests.

/// Most advisory keys a batch locks one by one; a batch with more locks their buckets instead,
/// so no batch holds more than [`LOCK_BUCKETS`] advisory locks, whatever its size: PostgreSQL's
/// shared lock table (`max_locks_per_transaction` x connections, 6,400 by default) is shared by
/// every transaction, and two batches of 8,190 keys each used to exhaust it and fail.
const EXACT_LOCKS_MAX: usize = 128;
/// Buckets the keys fold into (`key` mod this), locked in PostgreSQL's two-int key space
/// (class [`LOCK_BUCKET_CLASS`]), which never meets the single-bigint keys.
const LOCK_BUCKETS: i64 = 256;
/// The class of the bucket locks: "fl" in ASCII.
const LOCK_BUCKET_CLASS: i32 = 0x666c;

/// The advisory locks of a batch, multi-granularity: a small batch takes each key's bucket
/// shared and the key itself exclusive; a large one takes its keys' buckets exclusive. Any two
/// batches sharing a key therefore conflict (exact-exact on the key, bucket-bucket exclusive
/// otherwise), small batches on different keys still run side by side, and everyone takes the
/// buckets first and the keys second, each in ascending order, so no two batches wait on each
/// other in a cycle.
#[derive(Debug, Default, PartialEq)]
pub struct LockPlan {
    /// The two-int key space's class of the buckets.
    pub class: i32,
    /// The bucket (0..LOCK_BUCKETS) or the key, in the order to take them.
    pub keys: Vec<i64>,
    /// Whether the entry is a key (else a bucket).
    pub exact: Vec<bool>,
    /// Whether a bucket is taken shared.
    pub shared: Vec<bool>,
}

impl LockPlan {
    pub(super) fn new(mut keys: Vec<i64>) -> LockPlan {
        keys.sort_unstable();
        keys.dedup();
        let mut buckets: Vec<i64> = keys.iter().map(|k| k.rem_euclid(LOCK_BUCKETS)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let small = keys.len() <= EXACT_LOCKS_MAX;
        let mut plan = LockPlan {
            class: LOCK_BUCKET_CLASS,
            ..LockPlan::default()
        };
        for bucket in buckets {
            plan.keys.push(bucket);
            plan.exact.push(false);
            plan.shared.push(small);
        }
        if small {
            for key in keys {
                plan.keys.push(key);
                plan.exact.push(true);
                plan.shared.push(false);
            }
        }
        plan
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_batch_locks_each_key_under_its_shared_bucket() {
        let plan = LockPlan::new(vec![300, -1, 44, 300]);
        // Buckets first (ascending, shared), then the keys (ascending, exclusive).
        assert_eq!(plan.keys, vec![44, 255, -1, 44, 300]);
        assert_eq!(plan.exact, vec![false, false, true, true, true]);
        assert_eq!(plan.shared, vec![true, true, false, false, false]);
        assert_eq!(plan.class, LOCK_BUCKET_CLASS);
        assert!(LockPlan::new(Vec::new()).is_empty());
    }

    #[test]
    fn a_large_batch_takes_at_most_the_buckets_exclusively() {
        let keys: Vec<i64> = (0..8190).map(|k| k * 7919 - 3_000_000).collect();
        let plan = LockPlan::new(keys);
        assert_eq!(plan.keys.len(), usize::try_from(LOCK_BUCKETS).unwrap());
        assert!(plan.exact.iter().all(|e| !e));
        assert!(plan.shared.iter().all(|s| !s));
        assert!(plan.keys.windows(2).all(|w| w[0] < w[1]), "ascending");
        let just_over = LockPlan::new((0..=i64::try_from(EXACT_LOCKS_MAX).unwrap()).collect());
        assert!(just_over.exact.iter().all(|e| !e));
    }
}
