//! `junit.xml`: one test case per scenario (classname = area), failures carrying the diagnostic,
//! so CI systems show the certification next to the unit tests — and one case for the run's
//! verdict, failed whenever the run is not certified, so a gate that reads only this file cannot
//! pass a run that exits 1 (an area left uncovered, an exploration's violations). Text the target
//! wrote goes through [`crate::untrusted::xml`].

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use super::{result_of, Report, RunVerdict, SuiteResult};
use crate::untrusted::xml;

/// Renders the report as JUnit XML.
pub fn render(report: &Report) -> Result<String, quick_junit::SerializeError> {
    let mut junit = quick_junit::Report::new("harbor-certify");
    let mut suite = TestSuite::new("certification");
    for sc in &report.scenarios {
        let result = result_of(sc, report.fail_on);
        let status = match result {
            // A failure below `--fail-on` does not fail the run: a `<failure>` would turn a CI
            // job red that the exit status passed. It is a passing case whose output and
            // property carry the finding.
            SuiteResult::Passed | SuiteResult::Warning => TestCaseStatus::success(),
            SuiteResult::Skipped => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(xml(&sc
                    .failures
                    .first()
                    .map(|f| f.message.clone())
                    .unwrap_or_default()));
                status
            }
            result => {
                let result = result.as_str();
                let kind = if sc.verdict == crate::scenario::Verdict::Error {
                    NonSuccessKind::Error
                } else {
                    NonSuccessKind::Failure
                };
                let mut status = TestCaseStatus::non_success(kind);
                let first = sc
                    .failures
                    .first()
                    .map(|f| f.message.clone())
                    .or_else(|| sc.flaky.clone())
                    .unwrap_or_default();
                status.set_message(xml(&format!("{result} ({}): {first}", sc.verdict.as_str())));
                status.set_type(sc.verdict.as_str());
                let mut description = String::new();
                for f in &sc.failures {
                    description.push_str(&format!("{}: {}\n", f.place(), f.message));
                    if let Some(d) = &f.diagnostics {
                        description.push_str(&serde_json::to_string_pretty(d).unwrap_or_default());
                        description.push('\n');
                    }
                }
                if let Some(why) = &sc.flaky {
                    description.push_str(&format!("flaky: {why}\n"));
                }
                status.set_description(xml(&description));
                status
            }
        };
        let mut case = TestCase::new(format!("{} — {}", sc.id, sc.title), status);
        case.set_classname(format!("harbor.{}", sc.area));
        if result == SuiteResult::Warning {
            case.add_property(("harbor.result", "WARNING"));
            let mut out = format!(
                "WARNING: failed, but its severity ({}) is below --fail-on ({})\n",
                sc.severity.as_str(),
                report.fail_on.as_str()
            );
            for f in &sc.failures {
                out.push_str(&format!("{}: {}\n", f.place(), f.message));
            }
            case.set_system_out(xml(&out));
        }
        case.set_time(std::time::Duration::from_secs_f64(sc.duration_ms / 1000.0));
        suite.add_test_case(case);
    }
    suite.add_test_case(verdict_case(report));
    junit.add_test_suite(suite);
    junit.to_string()
}

/// The run's verdict as a test case: failed whenever the run is not certified; passed when it
/// certifies, or passes a selection or a flawed build (whose statement, in the case's output,
/// says it is not a certificate).
fn verdict_case(report: &Report) -> TestCase {
    let status = match report.verdict {
        RunVerdict::Pass => TestCaseStatus::success(),
        RunVerdict::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let why = if report.not_certified_because.is_empty() {
                "scenarios failed, were flaky or could not run (see their cases)".to_owned()
            } else {
                report.not_certified_because.join("; ")
            };
            status.set_message(xml(&format!("NOT CERTIFIED: {why}")));
            status.set_type("NOT_CERTIFIED");
            status
        }
    };
    let mut case = TestCase::new("certification verdict", status);
    case.set_classname("harbor.verdict");
    case.set_system_out(report.verdict_statement().replace("**", ""));
    case
}
