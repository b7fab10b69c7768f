//! State time-to-live, as Flink's `StateTtlConfig`: a value expires `ttl_ms` after it was last
//! written (or also read, with [`TtlUpdate::OnReadAndWrite`]), in processing time. Expired values
//! are never returned, and are removed when they are touched and when a snapshot is taken (see
//! [`TtlValueState::purge_expired`]), so state of keys that stopped coming does not grow forever.
//!
//! TTL state is a layer over any [`KeyedStateBackend`]: the value is stored with its expiry time in
//! an ordinary value state, so both backends, snapshots and rescaling treat it like any other.

use serde::{Deserialize, Serialize};

use super::{KeyedStateBackend, Namespace, StateValue, ValueState};
use crate::error::Result;
use crate::time::Timestamp;

/// When the expiry time is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlUpdate {
    /// On creation and every write (Flink's default).
    OnCreateAndWrite,
    /// Also on every read.
    OnReadAndWrite,
}

/// How long values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlConfig {
    pub ttl_ms: i64,
    pub update: TtlUpdate,
}

impl TtlConfig {
    /// Values expire `ttl_ms` after their last write.
    pub fn new(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            update: TtlUpdate::OnCreateAndWrite,
        }
    }
}

/// A value with the time it expires at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expiring<T> {
    pub value: T,
    pub expires_at: Timestamp,
}

/// Handle of a value state with a time-to-live.
#[derive(Debug)]
pub struct TtlValueState<T> {
    inner: ValueState<Expiring<T>>,
    config: TtlConfig,
}

impl<T: StateValue> TtlValueState<T> {
    /// Registers (or finds again, by name) a value state with TTL in `backend`.
    pub fn register<B: KeyedStateBackend>(backend: &mut B, name: &str, config: TtlConfig) -> Self {
        Self {
            inner: backend.value_state(name),
            config,
        }
    }

    /// The value for `key` in `ns` at processing time `now`, if it has not expired. An expired value
    /// is removed.
    pub fn get<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        key: &[u8],
        ns: &Namespace,
        now: Timestamp,
    ) -> Result<Option<T>> {
        let renew = self.config.update == TtlUpdate::OnReadAndWrite;
        let ttl = self.config.ttl_ms;
        backend.update(&self.inner, key, ns, |slot| match slot {
            Some(e) if e.expires_at <= now => {
                *slot = None;
                None
            }
            Some(e) => {
                if renew {
                    e.expires_at = now.saturating_add(ttl);
                }
                Some(e.value.clone())
            }
            None => None,
        })
    }

    /// Sets the value for `key` in `ns`, expiring `ttl` after `now`.
    pub fn put<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        key: &[u8],
        ns: &Namespace,
        value: T,
        now: Timestamp,
    ) -> Result<()> {
        let expires_at = now.saturating_add(self.config.ttl_ms);
        backend.put(&self.inner, key, ns, Expiring { value, expires_at })
    }

    /// Clears the value for `key` in `ns`.
    pub fn clear<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<()> {
        backend.take(&self.inner, key, ns).map(|_| ())
    }

    /// Removes every expired value of namespace `ns` (an operator calls this before a snapshot,
    /// Flink's full-snapshot cleanup); returns how many were removed.
    pub fn purge_expired<B: KeyedStateBackend>(
        &self,
        backend: &mut B,
        ns: &Namespace,
        now: Timestamp,
    ) -> Result<usize> {
        let mut expired = Vec::new();
        backend.for_each_in_namespace(&self.inner, ns, |key, e| {
            if e.expires_at <= now {
                expired.push(key.to_vec());
            }
            Ok(())
        })?;
        for key in &expired {
            backend.take(&self.inner, key, ns)?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::state::{StateWriter, redistribute};
    use crate::state::MemoryStateBackend;

    #[test]
    fn values_expire_after_their_last_write_and_are_never_returned_after() {
        let mut b = MemoryStateBackend::default();
        let s = TtlValueState::<i64>::register(&mut b, "seen", TtlConfig::new(100));
        let g = Namespace::Global;
        s.put(&mut b, b"a", &g, 1, 1_000).unwrap();
        assert_eq!(s.get(&mut b, b"a", &g, 1_099).unwrap(), Some(1));
        assert_eq!(s.get(&mut b, b"a", &g, 1_100).unwrap(), None);
        assert_eq!(b.entries(), 0, "an expired value is removed when touched");
        // A write renews; a read does not (OnCreateAndWrite).
        s.put(&mut b, b"a", &g, 2, 2_000).unwrap();
        assert_eq!(s.get(&mut b, b"a", &g, 2_050).unwrap(), Some(2));
        s.put(&mut b, b"a", &g, 3, 2_060).unwrap();
        assert_eq!(s.get(&mut b, b"a", &g, 2_150).unwrap(), Some(3));
        assert_eq!(s.get(&mut b, b"a", &g, 2_160).unwrap(), None);
    }

    #[test]
    fn reads_renew_with_on_read_and_write() {
        let mut b = MemoryStateBackend::default();
        let config = TtlConfig {
            ttl_ms: 100,
            update: TtlUpdate::OnReadAndWrite,
        };
        let s = TtlValueState::<String>::register(&mut b, "s", config);
        let g = Namespace::Global;
        s.put(&mut b, b"k", &g, "v".into(), 0).unwrap();
        for now in [90, 180, 270] {
            assert_eq!(s.get(&mut b, b"k", &g, now).unwrap().as_deref(), Some("v"));
        }
        assert_eq!(s.get(&mut b, b"k", &g, 371).unwrap(), None);
    }

    #[test]
    fn purging_before_a_snapshot_keeps_expired_values_out_of_it() {
        let mut b = MemoryStateBackend::default();
        let s = TtlValueState::<i64>::register(&mut b, "seen", TtlConfig::new(100));
        let g = Namespace::Global;
        for (i, key) in [b"a", b"b", b"c"].iter().enumerate() {
            s.put(&mut b, *key, &g, i as i64, i as i64 * 100).unwrap();
        }
        assert_eq!(s.purge_expired(&mut b, &g, 150).unwrap(), 1);
        let mut w = StateWriter::default();
        b.snapshot(1, &mut w).unwrap();
        let (restored, _) = redistribute(&[w.finish()], 0, 1, 0..128);
        let mut fresh = MemoryStateBackend::default();
        let again = TtlValueState::<i64>::register(&mut fresh, "seen", TtlConfig::new(100));
        fresh.restore(&restored).unwrap();
        assert_eq!(fresh.entries(), 2);
        assert_eq!(again.get(&mut fresh, b"a", &g, 150).unwrap(), None);
        assert_eq!(again.get(&mut fresh, b"b", &g, 150).unwrap(), Some(1));
        assert_eq!(again.get(&mut fresh, b"c", &g, 150).unwrap(), Some(2));
    }
}
