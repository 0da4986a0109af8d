//! Classification of real runs of a small update (and of their end states changed one fact at
//! a time).

use super::*;
use crate::ota::job::{State, TransferStep, Transition};
use crate::scenario::{runner, validate};

fn scenario(behaviour: &str, outcome: &str) -> Scenario {
    let text = format!(
        "description: classified\nseed: 2\necu: {{slot_sectors: 10}}\ninstalled: {{version: 1.0.0, size: 15000}}\nupdate: {{version: 2.0.0, size: 16000, behaviour: {behaviour}}}\nexpect: {{outcome: {outcome}}}\n"
    );
    validate::parse(&text, "classified.yaml").unwrap()
}

fn run(s: &Scenario) -> RunResult {
    runner::run(s, None).unwrap()
}

#[test]
fn a_committed_update_is_an_outcome() {
    let s = scenario("{healthy: {confirm_after_ms: 500}}", "committed");
    let v = classify(&s, &run(&s));
    assert_eq!(
        v,
        Verdict {
            outcome: Some(Outcome::Committed),
            transfers: 1,
            rollbacks: 0,
            problems: vec![],
        }
    );
}

#[test]
fn a_safe_rollback_is_allowed_where_committed_is_expected() {
    // Without `or_rolled_back`: a sweep always allows the old image back, confirmed.
    let s = scenario("never_confirm", "committed");
    let r = run(&s);
    assert!(!r.failures.is_empty(), "hil run holds it to `committed`");
    let v = classify(&s, &r);
    assert_eq!(v.outcome, Some(Outcome::RolledBack));
    assert_eq!((v.transfers, v.rollbacks), (1, 1));
    assert_eq!(v.problems, vec![]);
}

#[test]
fn one_fact_changed_at_a_time_is_the_right_failure() {
    let s = scenario("never_confirm", "rolled_back");
    let r = run(&s);
    assert!(classify(&s, &r).passed(), "{:?}", classify(&s, &r));
    let kind = |r: &RunResult| {
        let v = classify(&s, r);
        (
            v.first_kind(),
            v.problems.first().map(|p| p.message.clone()),
        )
    };

    let mut no_reason = r.clone();
    no_reason.end.reason = Some(String::new());
    assert_eq!(
        kind(&no_reason),
        (
            Some(FailureKind::InvariantBroken),
            Some("the job rolled back without a reason".into())
        )
    );

    let mut gave_up = r.clone();
    gave_up.end.outcome = OutcomeSpec::Failed;
    gave_up.end.reason = Some("gave up after 3 attempts".into());
    assert_eq!(
        kind(&gave_up),
        (
            Some(FailureKind::NotAllowed),
            Some(
                "outcome: the scenario allows rolled back, got gave up (gave up after 3 attempts)"
                    .into()
            )
        )
    );

    let mut silent = r.clone();
    silent.end.version = None;
    assert_eq!(
        kind(&silent),
        (
            Some(FailureKind::Bricked),
            Some("the ECU runs nothing at the end".into())
        )
    );

    let mut committed_wrongly = r.clone();
    committed_wrongly.end.outcome = OutcomeSpec::Committed;
    assert_eq!(
        kind(&committed_wrongly).0,
        Some(FailureKind::InvariantBroken),
        "committed while v1 runs"
    );

    // The manager programs the update again after the ECU reverted it.
    let mut again = r.clone();
    let job = again.job.as_mut().unwrap();
    let late = job.history.last().unwrap().at_us + 1_000_000;
    job.history.push(Transition {
        at_us: late,
        state: State::Transferring {
            step: TransferStep::Session,
        },
    });
    let v = classify(&s, &again);
    assert_eq!(v.first_kind(), Some(FailureKind::InstalledTwice), "{v:?}");
    assert_eq!(v.transfers, 2);
    assert!(
        v.problems[0]
            .message
            .starts_with("the manager transferred the update again at "),
        "{v:?}"
    );
}
