//! Where a new client sits when it arrives: the one policy of the API's connection table and of
//! DNS over TCP's. A free slot is taken. When every slot is taken, the connection that has gone
//! longest without finishing anything (idle longest between requests, or slowest to send its
//! request or take its answer) gives way, so clients that trickle a byte a second, or that open
//! connections and say nothing, can delay a new client by one turn of the loop but never lock it
//! out. Connections doing something that cannot be cut without losing it (a stream subscriber, a
//! deploy waiting for its WAL record) are kept; only when every slot holds one is the client
//! refused.
//!
//! It is a pure function of what the slots hold, so both tables share it and a unit test pins it.

/// What one slot holds, as seating sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupant {
    /// No connection: a new client can take it now.
    Free,
    /// A connection closed this turn, whose slot is free once the loop has reaped it.
    Closing,
    /// A connection that must not be cut.
    Kept,
    /// A connection that may give way. `since_ms` is when it last finished something (it was
    /// accepted, or its last answer was queued): the start of its idleness or of its slowness.
    /// `number` counts connections in the order they were accepted, and breaks a tie within a
    /// millisecond: the earlier gives way, so a burst of newcomers never evicts the newest.
    Held { since_ms: u64, number: u64 },
}

/// What to do with a client waiting to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    /// Accept it into this free slot.
    Take(usize),
    /// Close this slot's connection, and seat the client there once the slot is reaped.
    Evict(usize),
    /// A slot is closing already: accept the client once it is reaped; nothing else gives way.
    Wait,
    /// Every slot holds a connection that is kept: refuse the client.
    Refuse,
}

/// The seat of a new client, given every slot in order. Among held connections the one held
/// longest gives way; on a tie, the one accepted first.
pub fn seat(slots: impl IntoIterator<Item = Occupant>) -> Seat {
    let mut closing = false;
    let mut oldest: Option<(usize, (u64, u64))> = None;
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Occupant::Free => return Seat::Take(i),
            Occupant::Closing => closing = true,
            Occupant::Kept => {}
            Occupant::Held { since_ms, number } => {
                if oldest.is_none_or(|(_, held)| (since_ms, number) < held) {
                    oldest = Some((i, (since_ms, number)));
                }
            }
        }
    }
    match (closing, oldest) {
        (true, _) => Seat::Wait,
        (false, Some((i, _))) => Seat::Evict(i),
        (false, None) => Seat::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Occupant::*;

    fn held(since_ms: u64, number: u64) -> Occupant {
        Held { since_ms, number }
    }

    /// A free slot is taken before anything gives way, even when another slot is older.
    #[test]
    fn a_free_slot_is_taken_first() {
        assert_eq!(seat([held(1, 1), Kept, Free, Free]), Seat::Take(2));
    }

    /// With every slot taken, the connection held longest gives way, whatever order the slots
    /// are in; within one millisecond the one accepted first, wherever its slot; kept
    /// connections never do.
    #[test]
    fn the_connection_held_longest_gives_way() {
        let slots = [held(50, 1), Kept, held(20, 9), held(20, 3), held(90, 2)];
        assert_eq!(seat(slots), Seat::Evict(3));
        assert_eq!(seat([Kept, Kept, held(u64::MAX, 0)]), Seat::Evict(2));
    }

    /// A slot closing this turn is waited for rather than closing a second one for the same
    /// client; only kept connections is a refusal, and so is a table of no slots.
    #[test]
    fn closing_slots_are_waited_for_and_kept_ones_refuse() {
        assert_eq!(seat([held(0, 0), Closing]), Seat::Wait);
        assert_eq!(seat([Kept, Closing, Kept]), Seat::Wait);
        assert_eq!(seat([Kept, Kept]), Seat::Refuse);
        assert_eq!(seat([]), Seat::Refuse);
    }
}
