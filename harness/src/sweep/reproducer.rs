//! Reproducers: the scenario plus the one fault of a failing point, as YAML that `hil run` replays.

use std::path::Path;

use super::points::Point;
use super::run::Failure;
use crate::scenario::schema::Scenario;

/// The scenario plus the single fault of `point`, counted from the start; the scenario's
/// faults that did not fire after the cut (`unfired`) are optional.
pub fn reproducer(scenario: &Scenario, name: &str, point: &Point, unfired: &[usize]) -> Scenario {
    let mut s = scenario.clone();
    s.description = format!("Sweep reproducer: {name} with a power cut {}", point.what);
    // The reproducer is written elsewhere (`--out`): a key file named relative to the
    // scenario's directory is named from the working directory instead.
    if let (Some(dir), Some(key)) = (&scenario.dir, &mut s.ecu.enc_key)
        && key.is_relative()
    {
        let joined = dir.join(&*key);
        *key = std::fs::canonicalize(&joined).unwrap_or(joined);
    }
    for &i in unfired {
        if let Some(f) = s.faults.get_mut(i) {
            f.optional = true;
        }
    }
    s.faults.push(point.fault.clone());
    s
}

/// YAML in the scenario format (enums as one-key maps).
pub fn to_yaml(s: &Scenario) -> Result<String, serde_yaml::Error> {
    let mut out = Vec::new();
    let mut ser = serde_yaml::Serializer::new(&mut out);
    serde_yaml::with::singleton_map_recursive::serialize(s, &mut ser)?;
    Ok(hex_ids(&String::from_utf8_lossy(&out)))
}

/// Service ids, NRCs and subfunctions as the UDS standard writes them (`service: 0x31`, not
/// `service: 49`); YAML reads both as the same number.
fn hex_ids(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let key_at = line.trim_start_matches([' ', '-']).len();
        let (indent, rest) = line.split_at(line.len() - key_at);
        let hex = ["service: ", "nrc: ", "subfunction: "]
            .iter()
            .find_map(|k| {
                let v: u8 = rest.strip_prefix(k)?.parse().ok()?;
                Some(format!("{indent}{k}{v:#04x}"))
            });
        out.push_str(hex.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

pub(super) fn write_reproducers(
    scenario: &Scenario,
    name: &str,
    out: &Path,
    failures: &mut [Failure],
) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    for f in failures.iter_mut() {
        let file = out.join(format!(
            "{name}--{}.yaml",
            f.point
                .what
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                .trim_matches('-')
        ));
        let yaml = to_yaml(&reproducer(scenario, name, &f.point, &f.unfired))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::write(&file, yaml)?;
        f.reproducer = Some(file);
    }
    Ok(())
}

#[cfg(test)]
mod yaml_tests {
    use crate::scenario::validate;

    #[test]
    fn reproducers_write_services_and_nrcs_in_hex_and_read_back_the_same() {
        let text = "description: x\nupdate: {version: 2.0.0}\nfaults:\n  - when: {request: 3}\n    do: {inject_nrc: {service: 0x31, nrc: 0x22, count: 2}}\n  - when: {request: 4}\n    do: {corrupt_request: {service: 0x27, subfunction: 0x02, count: 1}}\nexpect: {outcome: committed}\n";
        let s = validate::parse(text, "s.yaml").unwrap();
        let yaml = super::to_yaml(&s).unwrap();
        for want in [
            "service: 0x31",
            "nrc: 0x22",
            "service: 0x27",
            "subfunction: 0x02",
        ] {
            assert!(yaml.contains(want), "{want} in:\n{yaml}");
        }
        assert!(!yaml.contains("service: 49"), "{yaml}");
        let back = validate::parse(&yaml, "r.yaml").unwrap();
        assert_eq!(back.faults, s.faults);
    }
}
