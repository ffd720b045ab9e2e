//! A card's limit counters: what it spent in the calendar windows (UTC) containing its last
//! change, rolled over when a window has passed. Pure: the service reads the counters under
//! the card's lock, asks [`Counters::spend`] what counts now, and stores what
//! [`Counters::add`] and [`Counters::give_back`] make of them.
//!
//! - An approval adds its amount to every window and one to today's count.
//! - A reversal, an expiry or the part of a hold a capture does not take gives the amount back
//!   to the windows that counted it and are still current (a hold approved yesterday and
//!   reversed today gives nothing back to today). The count is never given back: it counts
//!   approvals, and the approval happened.
//! - An over-capture adds its excess like an approval, without a count.
//! - Refunds give nothing back: limits bound what a card spends, not its net.

use chrono::{DateTime, NaiveDate, Utc};

use super::controls::{Window, window_start};
use super::decision::Spend;
use crate::platform::money::{Currency, Money};

/// The stored counters of one card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub day: NaiveDate,
    pub day_amount: i64,
    pub day_count: i32,
    pub week: NaiveDate,
    pub week_amount: i64,
    pub month: NaiveDate,
    pub month_amount: i64,
    pub year: NaiveDate,
    pub year_amount: i64,
    pub lifetime_amount: i64,
}

fn start(window: Window, at: DateTime<Utc>) -> NaiveDate {
    window_start(window, at).date_naive()
}

impl Counters {
    /// A card that has spent nothing, as of `now`.
    pub fn empty(now: DateTime<Utc>) -> Counters {
        Counters {
            day: start(Window::Day, now),
            day_amount: 0,
            day_count: 0,
            week: start(Window::Week, now),
            week_amount: 0,
            month: start(Window::Month, now),
            month_amount: 0,
            year: start(Window::Year, now),
            year_amount: 0,
            lifetime_amount: 0,
        }
    }

    /// The counters as of `now`: each window that has passed starts again from zero.
    pub fn rolled(mut self, now: DateTime<Utc>) -> Counters {
        let day = start(Window::Day, now);
        if self.day != day {
            self.day = day;
            self.day_amount = 0;
            self.day_count = 0;
        }
        let week = start(Window::Week, now);
        if self.week != week {
            self.week = week;
            self.week_amount = 0;
        }
        let month = start(Window::Month, now);
        if self.month != month {
            self.month = month;
            self.month_amount = 0;
        }
        let year = start(Window::Year, now);
        if self.year != year {
            self.year = year;
            self.year_amount = 0;
        }
        self
    }

    /// What counts against the limits at `now`, for the decision ladder.
    pub fn spend(&self, currency: Currency, now: DateTime<Utc>) -> Spend {
        let c = self.rolled(now);
        let money = |minor: i64| Money::from_minor(minor, currency);
        Spend {
            day: money(c.day_amount),
            week: money(c.week_amount),
            month: money(c.month_amount),
            year: money(c.year_amount),
            lifetime: money(c.lifetime_amount),
            count_today: u32::try_from(c.day_count).unwrap_or(u32::MAX),
        }
    }

    /// `amount` (minor units) spent at `now`; `approval` also counts one more today.
    pub fn add(self, amount: i64, approval: bool, now: DateTime<Utc>) -> Counters {
        let mut c = self.rolled(now);
        c.day_amount = c.day_amount.saturating_add(amount);
        c.week_amount = c.week_amount.saturating_add(amount);
        c.month_amount = c.month_amount.saturating_add(amount);
        c.year_amount = c.year_amount.saturating_add(amount);
        c.lifetime_amount = c.lifetime_amount.saturating_add(amount);
        if approval {
            c.day_count = c.day_count.saturating_add(1);
        }
        c
    }

    /// `amount` counted at `counted_at` released at `now`: given back to every window that
    /// counted it and is still current, never below zero.
    pub fn give_back(self, amount: i64, counted_at: DateTime<Utc>, now: DateTime<Utc>) -> Counters {
        let mut c = self.rolled(now);
        let back = |value: &mut i64, window: Window, current: NaiveDate| {
            if start(window, counted_at) == current {
                *value = value.saturating_sub(amount).max(0);
            }
        };
        back(&mut c.day_amount, Window::Day, c.day);
        back(&mut c.week_amount, Window::Week, c.week);
        back(&mut c.month_amount, Window::Month, c.month);
        back(&mut c.year_amount, Window::Year, c.year);
        c.lifetime_amount = c.lifetime_amount.saturating_sub(amount).max(0);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn an_approval_counts_in_every_window_and_once_today() {
        let now = at(2026, 12, 9, 10);
        let c = Counters::empty(now)
            .add(1_000, true, now)
            .add(500, true, now);
        let s = c.spend(usd(), now);
        assert_eq!(s.day.minor(), 1_500);
        assert_eq!(s.week.minor(), 1_500);
        assert_eq!(s.month.minor(), 1_500);
        assert_eq!(s.year.minor(), 1_500);
        assert_eq!(s.lifetime.minor(), 1_500);
        assert_eq!(s.count_today, 2);
    }

    #[test]
    fn windows_that_passed_start_again_and_the_lifetime_never_does() {
        // Wednesday 9 December 2026.
        let then = at(2026, 12, 9, 23);
        let c = Counters::empty(then).add(1_000, true, then);
        // Thursday: a new day, the same week, month and year.
        let s = c.spend(usd(), at(2026, 12, 10, 0));
        assert_eq!((s.day.minor(), s.count_today), (0, 0));
        assert_eq!(s.week.minor(), 1_000);
        // Monday 14th: a new week.
        assert_eq!(c.spend(usd(), at(2026, 12, 14, 1)).week.minor(), 0);
        assert_eq!(c.spend(usd(), at(2026, 12, 14, 1)).month.minor(), 1_000);
        // January: a new month and year (and a new week: Friday 1 January 2027).
        let s = c.spend(usd(), at(2027, 1, 1, 0));
        assert_eq!((s.month.minor(), s.year.minor()), (0, 0));
        assert_eq!(s.lifetime.minor(), 1_000);
    }

    #[test]
    fn giving_back_reaches_only_the_windows_that_counted_it_and_still_run() {
        let monday = at(2026, 12, 7, 12);
        let wednesday = at(2026, 12, 9, 12);
        let c = Counters::empty(monday)
            .add(1_000, true, monday)
            .add(300, true, wednesday);
        // Monday's hold expires on Wednesday: today's counter never counted it.
        let c = c.give_back(1_000, monday, wednesday);
        let s = c.spend(usd(), wednesday);
        assert_eq!(s.day.minor(), 300);
        assert_eq!(s.week.minor(), 300);
        assert_eq!(s.lifetime.minor(), 300);
        // The count of approvals stays.
        assert_eq!(s.count_today, 1);
        // Wednesday's hold reversed the same day: back to zero, never below.
        let c = c
            .give_back(300, wednesday, wednesday)
            .give_back(50, wednesday, wednesday);
        let s = c.spend(usd(), wednesday);
        assert_eq!(
            (s.day.minor(), s.week.minor(), s.lifetime.minor()),
            (0, 0, 0)
        );
    }

    #[test]
    fn an_over_capture_adds_without_counting_an_approval() {
        let now = at(2026, 12, 9, 10);
        let c = Counters::empty(now)
            .add(1_000, true, now)
            .add(150, false, now);
        let s = c.spend(usd(), now);
        assert_eq!((s.day.minor(), s.count_today), (1_150, 1));
    }
}
