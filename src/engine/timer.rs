//! The connection's one timer, moved lazily: every wait of a connection (the next request,
//! the rest of a head, the backend's answer, a stalled upload) runs against the same
//! `Sleep`, and moving a registered timer costs more than the rest of a wait. So a wait
//! whose deadline is later than the one armed leaves the timer where it is; when it fires
//! early, [`expired`] sees the deadline is not reached yet and moves it then, once per
//! timeout period instead of once per wait. Which deadline applies is the caller's call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// Arms `timer` to fire no later than `due` (moved only when it is armed later than that).
pub fn arm(timer: Pin<&mut Sleep>, due: Instant) {
    if timer.deadline() > due {
        timer.reset(due);
    }
}

/// Completes once `due` has passed, re-arming `timer` for it when it fires before. Arm it
/// for `due` first ([`arm`]), or it may not fire before `due`.
pub fn expired(timer: Pin<&mut Sleep>, due: Instant) -> Expired<'_> {
    Expired { timer, due }
}

/// The future of [`expired`]: written out rather than an `async fn`, which would hold its
/// arguments twice in every wait that uses it (and so in every connection's future).
pub struct Expired<'t> {
    timer: Pin<&'t mut Sleep>,
    due: Instant,
}

impl Future for Expired<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            std::task::ready!(this.timer.as_mut().poll(cx));
            if Instant::now() >= this.due {
                return Poll::Ready(());
            }
            this.timer.as_mut().reset(this.due);
        }
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
