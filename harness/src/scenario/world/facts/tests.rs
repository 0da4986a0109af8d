//! The "installed twice" rule over typed image events and job histories.

use ecu_sim::boot::Slot;
use ecu_sim::event::RevertReason;

use super::*;
use crate::ota::job::State;
use crate::ota::job::{ApplyStep, TransferStep, Transition};

fn test_boot(at_us: u64) -> ImageEvent {
    ImageEvent::TestBoot {
        at_us,
        slot: Slot::Primary,
        image: Some("update"),
    }
}

fn revert(at_us: u64) -> ImageEvent {
    ImageEvent::Revert {
        at_us,
        slot: Slot::Primary,
        image: Some("update"),
        reason: RevertReason::NotConfirmed { attempts: 1 },
    }
}

fn evidence(images: Vec<ImageEvent>) -> Evidence {
    Evidence {
        images,
        ..Evidence::default()
    }
}

fn job(history: &[(u64, State)]) -> Job {
    let manifest = crate::scenario::prepare::manifest(b"update", "2.0.0");
    let mut j = Job::new("job-0001".into(), manifest, 0);
    j.history = history
        .iter()
        .map(|(at_us, state)| Transition {
            at_us: *at_us,
            state: state.clone(),
        })
        .collect();
    j
}

fn transferring(step: TransferStep) -> State {
    State::Transferring { step }
}

fn applying() -> State {
    State::Applying {
        step: ApplyStep::AwaitBoot,
    }
}

#[test]
fn one_revert_reported_twice_is_one_rollback() {
    // A revert interrupted by a cut and reported again when it resumes, no test boot between.
    let Installs {
        transfers,
        rollbacks,
        problems,
    } = evidence(vec![test_boot(10), revert(20), revert(30)]).installs(Some(&job(&[
        (1, transferring(TransferStep::Session)),
        (2, transferring(TransferStep::Erase)),
        (5, applying()),
    ])));
    assert_eq!((transfers, rollbacks), (1, 1));
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn a_second_probation_after_a_revert_is_installed_twice() {
    let Installs {
        rollbacks,
        problems,
        ..
    } = evidence(vec![test_boot(10), revert(20), test_boot(40), revert(50)]).installs(None);
    assert_eq!(rollbacks, 2);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(
        problems[0],
        "the update image booted on probation again at 0.000 s after the ECU reverted it at 0.000 s (0 transfer(s), 2 rollback(s))"
    );
    assert_eq!(
        problems[1],
        "the ECU reverted the update image 2 times (0 transfer(s), 2 rollback(s))"
    );
}

#[test]
fn a_transfer_after_the_revert_is_installed_twice() {
    let Installs {
        transfers,
        problems,
        ..
    } = evidence(vec![test_boot(1_000_000), revert(2_000_000)]).installs(Some(&job(&[
        (100, transferring(TransferStep::Session)),
        (200, transferring(TransferStep::Block { n: 3, of: 3 })),
        (500_000, applying()),
        (3_500_000, transferring(TransferStep::Session)),
        (3_600_000, transferring(TransferStep::Erase)),
    ])));
    assert_eq!(transfers, 2);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0],
        "the manager transferred the update again at 3.500 s after the ECU reverted it at 2.000 s (2 transfer(s), 1 rollback(s))"
    );
}

#[test]
fn transfers_before_the_revert_and_retries_are_fine() {
    // Two programming sequences (a retry after a failed one), then one probation and revert.
    let Installs {
        transfers,
        rollbacks,
        problems,
    } = evidence(vec![test_boot(10_000), revert(20_000)]).installs(Some(&job(&[
        (1, transferring(TransferStep::Session)),
        (2, State::Verifying),
        (3, transferring(TransferStep::Session)),
        (5_000, applying()),
    ])));
    assert_eq!((transfers, rollbacks), (2, 1));
    assert_eq!(problems, Vec::<String>::new());
}
