//! A bound on how often one kind of log line is written: a job that sends the control socket a
//! request a second (each refused, each a finding deduplicated per job) must not fill the
//! journal with warnings. Past the budget of a window the lines are counted, and the count is
//! written once the next window lets a line through. Engine time (`now_ns`), so replay is
//! deterministic.

/// Lines allowed per window, and the window's length.
pub const LINES_PER_WINDOW: u32 = 20;
pub const WINDOW_NS: u64 = 60 * 1_000_000_000;

#[derive(Debug, Default)]
pub struct LogBudget {
    window_start: u64,
    used: u32,
    suppressed: u64,
}

/// What to do with one line: write it (after saying how many before it were not), or count it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Write { suppressed_before: u64 },
    Count,
}

impl LogBudget {
    pub fn take(&mut self, now_ns: u64) -> Verdict {
        if now_ns.saturating_sub(self.window_start) >= WINDOW_NS {
            self.window_start = now_ns;
            self.used = 0;
        }
        if self.used >= LINES_PER_WINDOW {
            self.suppressed += 1;
            return Verdict::Count;
        }
        self.used += 1;
        Verdict::Write {
            suppressed_before: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_counted_and_the_count_said_with_the_next_line() {
        let mut budget = LogBudget::default();
        let t0 = WINDOW_NS; // the first window starts here
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(
                budget.take(t0),
                Verdict::Write {
                    suppressed_before: 0
                }
            );
        }
        for _ in 0..5 {
            assert_eq!(budget.take(t0 + 1), Verdict::Count);
        }
        assert_eq!(
            budget.take(t0 + WINDOW_NS),
            Verdict::Write {
                suppressed_before: 5
            }
        );
        assert_eq!(
            budget.take(t0 + WINDOW_NS + 1),
            Verdict::Write {
                suppressed_before: 0
            }
        );
    }
}
