//! Wall-clock milliseconds since the Unix epoch: the one timestamp format status.json, the
//! status page's events and the fleet's etcd records share. It owns no timers and nothing
//! monotonic: durations on the request path use `Instant`.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch of `t` (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_is_zero_not_a_panic() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_ms(before), 0);
        let after = SystemTime::UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(unix_ms(after), 1500);
    }
}
