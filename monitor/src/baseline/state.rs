//! How settled a baseline is, from its run history: `learning` until it has seen enough runs,
//! `stable` once runs keep bringing nothing new, `unstable` while new behaviour keeps appearing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineState {
    Learning,
    Stable,
    Unstable,
}

impl BaselineState {
    pub const ALL: [BaselineState; 3] = [
        BaselineState::Learning,
        BaselineState::Stable,
        BaselineState::Unstable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BaselineState::Learning => "learning",
            BaselineState::Stable => "stable",
            BaselineState::Unstable => "unstable",
        }
    }
}

impl std::fmt::Display for BaselineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// N, M and K of the baseline's states (the configuration's `baseline:` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Runs a baseline learns from before anything is called new (N).
    #[serde(default = "default_learning_runs")]
    pub learning_runs: u32,
    /// Runs in a row without anything new that make a baseline stable (M).
    #[serde(default = "default_stable_after")]
    pub stable_after: u32,
    /// A baseline is unstable while something new appeared in its last K runs.
    #[serde(default = "default_unstable_window")]
    pub unstable_window: u32,
}

fn default_learning_runs() -> u32 {
    5
}
fn default_stable_after() -> u32 {
    5
}
fn default_unstable_window() -> u32 {
    3
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            learning_runs: default_learning_runs(),
            stable_after: default_stable_after(),
            unstable_window: default_unstable_window(),
        }
    }
}

impl Thresholds {
    /// Checked values: each at least 1, and the window no longer than the stable run (else a
    /// baseline could be stable and unstable at once).
    pub fn check(&self) -> Result<(), String> {
        if self.learning_runs == 0 || self.stable_after == 0 || self.unstable_window == 0 {
            return Err(
                "learning_runs, stable_after and unstable_window must be at least 1".into(),
            );
        }
        if self.unstable_window > self.stable_after {
            return Err(format!(
                "unstable_window ({}) must not be longer than stable_after ({})",
                self.unstable_window, self.stable_after
            ));
        }
        Ok(())
    }

    /// The state after a history of runs, oldest first, each saying whether it brought
    /// something new. Between the two marks (new behaviour older than K runs, fewer than M
    /// quiet runs) a baseline keeps the state it had: one that became unstable stays so until
    /// it has been quiet for M runs, one still learning goes on learning.
    pub fn state(&self, history: impl IntoIterator<Item = bool>) -> BaselineState {
        let mut state = BaselineState::Learning;
        let mut runs = 0u32;
        let mut quiet = 0u32;
        for brought_new in history {
            runs = runs.saturating_add(1);
            quiet = if brought_new {
                0
            } else {
                quiet.saturating_add(1)
            };
            state = if runs < self.learning_runs {
                BaselineState::Learning
            } else if quiet >= self.stable_after {
                BaselineState::Stable
            } else if quiet < self.unstable_window {
                BaselineState::Unstable
            } else {
                state
            };
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_then_stable_then_unstable_then_stable_again() {
        let t = Thresholds {
            learning_runs: 3,
            stable_after: 3,
            unstable_window: 2,
        };
        t.check().unwrap();
        // Everything is new in the first run.
        assert_eq!(t.state([true]), BaselineState::Learning);
        assert_eq!(t.state([true, false]), BaselineState::Learning);
        // Third run: past learning, new behaviour in the last two runs.
        assert_eq!(t.state([true, true, false]), BaselineState::Unstable);
        // New behaviour two runs back, not yet three quiet runs: still learning.
        assert_eq!(t.state([true, false, false]), BaselineState::Learning);
        assert_eq!(t.state([true, false, false, false]), BaselineState::Stable);
        let mut h = vec![true, false, false, false, true];
        assert_eq!(t.state(h.clone()), BaselineState::Unstable);
        h.extend([false, false]);
        // New behaviour two runs back: outside the window, not yet three quiet runs.
        assert_eq!(t.state(h.clone()), BaselineState::Unstable);
        h.push(false);
        assert_eq!(t.state(h), BaselineState::Stable);
        // A job that keeps changing never settles.
        assert_eq!(t.state([true; 20]), BaselineState::Unstable);
    }

    #[test]
    fn a_window_longer_than_the_stable_run_is_refused() {
        let t = Thresholds {
            learning_runs: 1,
            stable_after: 2,
            unstable_window: 3,
        };
        assert!(t.check().unwrap_err().contains("unstable_window"));
        assert!(Thresholds::default().check().is_ok());
    }
}
