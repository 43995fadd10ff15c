//! Findings that arrive after a job's report was written: a process the job left behind (a
//! daemon that escaped the runner's clean-up, a `setsid` child) acts once the job has ended, as
//! an attacker who has read that reports are written at the job's end would have it. The report
//! must not keep saying "complete, no findings": it is written again with them, and says why.

use super::{profile_additions, severity_counts, Report, MAX_FINDINGS};
use crate::finding::Finding;

/// What the report's `incomplete_because` line about late findings says, to find it again.
const LATE_MARK: &str = "raised after the job ended";

impl Report {
    /// Adds findings raised after the job's end (bounded like the job's own), marks the
    /// report incomplete with the reason, and brings its summary and suggested additions up to
    /// date. `at` is when the last of them was raised.
    pub fn add_late_findings(&mut self, late: &[Finding], at: &str, generated_at: String) {
        for f in late {
            if self.findings.len() >= MAX_FINDINGS {
                self.omitted.findings += 1;
            } else {
                self.findings.push(f.clone());
            }
        }
        self.late_findings += late.len() as u64;
        self.summary.findings = self.findings.len();
        self.summary.findings_by_severity = severity_counts(&self.findings);
        self.profile_additions = profile_additions(&self.findings);
        self.incomplete_because
            .retain(|why| !why.contains(LATE_MARK));
        self.incomplete_because.push(format!(
            "{} finding(s) were {LATE_MARK}, by its processes that outlived it (the last at {at}): this report was written again with them",
            self.late_findings
        ));
        self.complete = false;
        self.generated_at = generated_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_findings_are_added_counted_and_said_once() {
        let mut report = super::super::tests::stealer_report(|_| {});
        let before = report.findings.len();
        assert!(before > 0);
        let late = report.findings[0].clone();
        report.add_late_findings(std::slice::from_ref(&late), "t1", "g1".into());
        report.add_late_findings(&[late.clone(), late], "t2", "g2".into());
        assert_eq!(report.findings.len(), before + 3);
        assert_eq!(report.summary.findings, before + 3);
        assert_eq!(report.late_findings, 3);
        assert!(!report.complete);
        let said: Vec<&String> = report
            .incomplete_because
            .iter()
            .filter(|w| w.contains(LATE_MARK))
            .collect();
        assert_eq!(said.len(), 1, "{:?}", report.incomplete_because);
        assert!(said[0].starts_with("3 finding(s)") && said[0].contains("t2"));
        assert_eq!(report.generated_at, "g2");
    }
}
