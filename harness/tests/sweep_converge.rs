//! Convergence (`Options::converge`): a fork that stops at a state already known to lead to
//! a verified end takes that end, and nothing tells it from the fork that ran to its end —
//! the same verdict, the same end state, the same job history (times included) and the same
//! faults fired, point by point, in two strategies; forks really do converge; and a broken
//! bootloader's failures are all still found with convergence on.

use hil::scenario::validate;
use hil::sweep::{self, Class, Options, Partition, PointRecord, Summary};

fn scenario(mode: &str, defect: &str) -> hil::scenario::schema::Scenario {
    let text = format!(
        "description: small update to sweep\nseed: 3\necu: {{boot_mode: {mode}, slot_sectors: 10{defect}}}\ninstalled: {{version: 1.0.0, size: 15000}}\nupdate: {{version: 2.0.0, size: 16000}}\nexpect: {{outcome: committed, version: 2.0.0, or_rolled_back: true}}\n"
    );
    validate::parse(&text, "sweep.yaml").unwrap()
}

/// The sweep with every point's record (a one-shard partition keeps them).
fn run(s: &hil::scenario::schema::Scenario, converge: bool) -> Summary {
    let o = Options {
        classes: Class::ALL.to_vec(),
        partition: Some(Partition { k: 1, n: 1 }),
        converge,
        ..Options::default()
    };
    sweep::sweep(s, "converge", &o, &|_, _, _| {}).unwrap()
}

/// Both ways, point by point: verdict, cut fired, end state and job history.
fn same_points(off: &[PointRecord], on: &[PointRecord]) {
    assert_eq!(off.len(), on.len());
    for (a, b) in off.iter().zip(on) {
        assert_eq!((a.id, &a.what), (b.id, &b.what));
        assert!(!a.converged, "{}: converged with convergence off", a.what);
        let tag = if b.converged { "converged" } else { "ran" };
        assert_eq!(a.verdict, b.verdict, "{} ({tag}): verdict", a.what);
        assert_eq!(a.fired, b.fired, "{} ({tag}): cut fired", a.what);
        assert_eq!(
            a.faults_not_required, b.faults_not_required,
            "{} ({tag})",
            a.what
        );
        let (ea, eb) = (a.end.as_ref().unwrap(), b.end.as_ref().unwrap());
        assert_eq!(ea.end, eb.end, "{} ({tag}): end state", a.what);
        assert_eq!(ea.fired, eb.fired, "{} ({tag}): faults fired", a.what);
        assert_eq!(ea.history, eb.history, "{} ({tag}): job history", a.what);
    }
}

#[test]
fn converged_forks_end_exactly_where_they_would_have_run_to_in_two_strategies() {
    let mut sampled = 0;
    for mode in ["swap-scratch", "swap-move"] {
        let s = scenario(mode, "");
        let off = run(&s, false);
        let on = run(&s, true);
        print!("{mode}, run to the end:\n{}", sweep::cli::table(&off));
        print!("{mode}, converging:\n{}", sweep::cli::table(&on));
        assert_eq!(off.failed, 0, "{mode}: {:#?}", off.failures);
        assert_eq!(off.points, off.fired, "{mode}: every cut fired");
        same_points(&off.records, &on.records);
        assert_eq!(off.all, on.all, "{mode}: the tallies");
        assert_eq!(off.by_kind, on.by_kind, "{mode}: the tallies by kind");
        assert_eq!(off.converged, 0);
        assert!(
            on.converged > 0,
            "{mode}: no fork converged in {} points",
            on.points
        );
        sampled += off.points;
    }
    assert!(sampled >= 500, "{sampled} points compared");
}

#[test]
fn a_broken_bootloader_is_still_found_with_convergence_on() {
    let s = scenario("swap", ", bootloader_defect: no_step_records");
    let off = run(&s, false);
    let on = run(&s, true);
    print!("{}", sweep::cli::table(&on));
    assert!(off.failed > 0, "the defect is found");
    assert_eq!(off.failed, on.failed);
    assert_eq!(off.failure_kinds, on.failure_kinds);
    same_points(&off.records, &on.records);
    let failing: Vec<_> = on.records.iter().filter(|r| !r.verdict.passed()).collect();
    assert!(
        failing.iter().all(|r| !r.converged),
        "a failing point runs to its own end"
    );
}
