//! Barrier handling for an operator with several input channels, as Flink's checkpoint barrier
//! handlers. Exactly-once (aligned): once barrier `n` arrives on a channel, that channel is blocked
//! (its later records wait) until barrier `n` has arrived on every live channel; then the operator
//! snapshots and forwards the barrier, and the channels are released. At-least-once: nothing is
//! blocked; the snapshot is taken when the last channel's barrier arrives (records after an early
//! barrier may be in the snapshot and be replayed after a restore). A barrier for a newer
//! checkpoint while one is being aligned abandons the older one (it was aborted upstream or
//! subsumed). A channel that ended counts as having delivered every barrier.
//!
//! Unaligned (exactly-once without blocking, Flink's unaligned checkpoints): the first barrier of a
//! checkpoint makes the operator snapshot at once and forward the barrier; records that arrive on
//! the other channels before their barrier are processed *and* recorded as in-flight data, which
//! becomes part of the snapshot when the last barrier arrives ([`Action::Persist`]). After a restore
//! the recorded records are processed again before any new input, so nothing is lost or doubled,
//! and backpressure on one channel does not hold the checkpoint up.

/// How barriers are lined up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ExactlyOnce,
    AtLeastOnce,
    Unaligned,
}

/// What the operator must do after a barrier or an end of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Snapshot state for checkpoint `id`, then forward its barrier downstream.
    Snapshot(u64),
    /// Checkpoint `id` is abandoned here: release what was blocked for it, snapshot nothing.
    Abandon(u64),
    /// Unaligned: every barrier of `id` arrived; the recorded in-flight records complete its snapshot.
    Persist(u64),
}

#[derive(Debug)]
pub struct Aligner {
    mode: Mode,
    /// Per channel: it has delivered the barrier being aligned.
    arrived: Vec<bool>,
    ended: Vec<bool>,
    current: Option<u64>,
    /// The newest checkpoint snapshotted or abandoned; older barriers are stale.
    last_done: Option<u64>,
}

impl Aligner {
    pub fn new(mode: Mode, channels: usize) -> Self {
        Self {
            mode,
            arrived: vec![false; channels],
            ended: vec![false; channels],
            current: None,
            last_done: None,
        }
    }

    /// Records of channel `ch` must wait (exactly-once alignment in progress and its barrier came).
    pub fn is_blocked(&self, ch: usize) -> bool {
        self.mode == Mode::ExactlyOnce && self.current.is_some() && self.arrived[ch]
    }

    /// Unaligned: records of channel `ch` belong to the in-flight data of the checkpoint in progress.
    pub fn is_recording(&self, ch: usize) -> bool {
        self.mode == Mode::Unaligned
            && self.current.is_some()
            && !self.arrived[ch]
            && !self.ended[ch]
    }

    /// Barrier `id` arrived on channel `ch`.
    pub fn on_barrier(&mut self, ch: usize, id: u64) -> Vec<Action> {
        if self.last_done.is_some_and(|done| id <= done) {
            return Vec::new(); // stale: a checkpoint already finished here
        }
        let mut actions = Vec::new();
        match self.current {
            Some(cur) if id < cur => return actions, // an abandoned checkpoint's straggler
            Some(cur) if id > cur => {
                actions.push(Action::Abandon(cur));
                self.reset();
                self.current = Some(id);
                if self.mode == Mode::Unaligned {
                    actions.push(Action::Snapshot(id));
                }
            }
            Some(_) => {}
            None => {
                self.current = Some(id);
                if self.mode == Mode::Unaligned {
                    actions.push(Action::Snapshot(id));
                }
            }
        }
        self.arrived[ch] = true;
        actions.extend(self.complete_if_aligned());
        actions
    }

    /// Channel `ch` ended: it will deliver no more barriers.
    pub fn on_end_of_input(&mut self, ch: usize) -> Vec<Action> {
        self.ended[ch] = true;
        self.complete_if_aligned()
    }

    fn complete_if_aligned(&mut self) -> Vec<Action> {
        let Some(id) = self.current else {
            return Vec::new();
        };
        let all = self
            .arrived
            .iter()
            .zip(&self.ended)
            .all(|(&arrived, &ended)| arrived || ended);
        if !all {
            return Vec::new();
        }
        self.reset();
        self.last_done = Some(id);
        if self.mode == Mode::Unaligned {
            vec![Action::Persist(id)]
        } else {
            vec![Action::Snapshot(id)]
        }
    }

    fn reset(&mut self) {
        if let Some(cur) = self.current.take() {
            self.last_done = Some(self.last_done.map_or(cur, |d| d.max(cur)));
        }
        self.arrived.iter_mut().for_each(|a| *a = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_blocks_each_channel_until_all_barriers_arrived() {
        let mut a = Aligner::new(Mode::ExactlyOnce, 3);
        assert!(a.on_barrier(1, 5).is_empty());
        assert!(a.is_blocked(1) && !a.is_blocked(0) && !a.is_blocked(2));
        assert!(a.on_barrier(0, 5).is_empty());
        assert!(a.is_blocked(0));
        assert_eq!(a.on_barrier(2, 5), vec![Action::Snapshot(5)]);
        assert!(
            (0..3).all(|ch| !a.is_blocked(ch)),
            "released after the snapshot"
        );
        assert!(a.on_barrier(0, 5).is_empty(), "a repeated barrier is stale");
    }

    #[test]
    fn at_least_once_never_blocks_and_snapshots_on_the_last_barrier() {
        let mut a = Aligner::new(Mode::AtLeastOnce, 2);
        assert!(a.on_barrier(0, 1).is_empty());
        assert!(!a.is_blocked(0));
        assert_eq!(a.on_barrier(1, 1), vec![Action::Snapshot(1)]);
    }

    #[test]
    fn a_newer_barrier_abandons_the_alignment_in_progress() {
        let mut a = Aligner::new(Mode::ExactlyOnce, 2);
        a.on_barrier(0, 3);
        assert_eq!(a.on_barrier(1, 4), vec![Action::Abandon(3)]);
        assert!(a.is_blocked(1) && !a.is_blocked(0));
        assert!(
            a.on_barrier(0, 3).is_empty(),
            "the straggler of 3 is ignored"
        );
        assert_eq!(a.on_barrier(0, 4), vec![Action::Snapshot(4)]);
    }

    #[test]
    fn unaligned_snapshots_on_the_first_barrier_and_records_until_the_last() {
        let mut a = Aligner::new(Mode::Unaligned, 3);
        assert_eq!(a.on_barrier(1, 7), vec![Action::Snapshot(7)]);
        assert!((0..3).all(|ch| !a.is_blocked(ch)), "nothing is blocked");
        assert!(a.is_recording(0) && !a.is_recording(1) && a.is_recording(2));
        assert!(a.on_barrier(0, 7).is_empty());
        assert!(!a.is_recording(0) && a.is_recording(2));
        assert_eq!(a.on_barrier(2, 7), vec![Action::Persist(7)]);
        assert!((0..3).all(|ch| !a.is_recording(ch)));
        // A newer barrier during recording abandons the older checkpoint and starts the new one.
        assert_eq!(a.on_barrier(0, 8), vec![Action::Snapshot(8)]);
        assert_eq!(
            a.on_barrier(1, 9),
            vec![Action::Abandon(8), Action::Snapshot(9)]
        );
        assert_eq!(a.on_end_of_input(0), Vec::new());
        assert_eq!(a.on_end_of_input(2), vec![Action::Persist(9)]);
    }

    #[test]
    fn ended_channels_count_as_aligned() {
        let mut a = Aligner::new(Mode::ExactlyOnce, 2);
        a.on_barrier(0, 1);
        assert_eq!(a.on_end_of_input(1), vec![Action::Snapshot(1)]);
        assert_eq!(a.on_barrier(0, 2), vec![Action::Snapshot(2)]);
    }
}
