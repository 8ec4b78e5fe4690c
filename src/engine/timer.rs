//! The connection's one timer, moved lazily: every wait of a connection (the next request,
//! the rest of a head, the backend's answer, a stalled upload) runs against the same
//! `Sleep`, and moving a registered timer costs more than the rest of a wait. So a wait
//! whose deadline is later than the one armed leaves the timer where it is; when it fires
//! early, [`expired`] sees the deadline is not reached yet and moves it then, once per
//! timeout period instead of once per wait. Which deadline applies is the caller's call.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// Arms `timer` to fire no later than `due` (moved only when it is armed later than that).
pub fn arm(timer: Pin<&mut Sleep>, due: Instant) {
    if timer.deadline() > due {
        timer.reset(due);
    }
}

/// Completes once `due` has passed, re-arming `timer` for it when it fires before. Arm it
/// for `due` first ([`arm`]), or it may not fire before `due`.
pub async fn expired(mut timer: Pin<&mut Sleep>, due: Instant) {
    loop {
        timer.as_mut().await;
        if Instant::now() >= due {
            return;
        }
        timer.as_mut().reset(due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_later_deadline_is_kept_and_still_never_cut_short() {
        let start = Instant::now();
        let timer = tokio::time::sleep_until(start + 10 * MS);
        tokio::pin!(timer);
        let due = start + 40 * MS;
        arm(timer.as_mut(), due);
        assert_eq!(timer.deadline(), start + 10 * MS, "not moved later");
        expired(timer.as_mut(), due).await;
        assert!(Instant::now() >= due);
    }

    #[tokio::test]
    async fn an_earlier_deadline_moves_the_timer() {
        let start = Instant::now();
        let timer = tokio::time::sleep_until(start + Duration::from_secs(3600));
        tokio::pin!(timer);
        let due = start + 20 * MS;
        arm(timer.as_mut(), due);
        assert_eq!(timer.deadline(), due);
        expired(timer.as_mut(), due).await;
        assert!(Instant::now() >= due);
    }

    #[tokio::test]
    async fn a_timer_that_already_fired_waits_for_the_new_deadline() {
        let timer = tokio::time::sleep_until(Instant::now() + MS);
        tokio::pin!(timer);
        timer.as_mut().await;
        let due = Instant::now() + 30 * MS;
        arm(timer.as_mut(), due);
        expired(timer.as_mut(), due).await;
        assert!(Instant::now() >= due);
    }
}
