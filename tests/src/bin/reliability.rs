//! Writes RELIABILITY.md from what the proof tests recorded (see
//! `k3s_asg_testbed::reliability`), the test run's output and, when present,
//! the fuzz logs. Run by `scripts/reliability`; not by hand.
//!
//!   k3s-asg-reliability RECORDS.jsonl TEST-OUTPUT.log [FUZZ-LOG ...] > RELIABILITY.md

use std::collections::BTreeMap;
use std::fmt::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 2, "usage: k3s-asg-reliability RECORDS.jsonl TEST-OUTPUT.log [FUZZ-LOG ...]");
    let records = std::fs::read_to_string(&args[0]).unwrap_or_default();
    let tests = std::fs::read_to_string(&args[1])?;

    // Areas in first-seen order, rows in recorded order.
    let mut areas: Vec<String> = Vec::new();
    let mut rows: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in records.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let area = v["area"].as_str().unwrap_or("?").to_string();
        if !areas.contains(&area) {
            areas.push(area.clone());
        }
        rows.entry(area).or_default().push(v);
    }
    let passed: Vec<&str> = tests.lines().filter(|l| l.starts_with("test ") && l.ends_with(" ... ok")).collect();
    let failed: Vec<&str> = tests
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with(" ... FAILED"))
        .map(|l| l.trim_start_matches("test ").trim_end_matches(" ... FAILED"))
        .collect();

    let mut out = String::new();
    writeln!(out, "# Reliability\n")?;
    writeln!(
        out,
        "Produced by `scripts/reliability` (do not edit by hand): it runs the proof tests against moto through the test \
         bed's recording proxy with `K3S_ASG_RELIABILITY_LOG` set, and each check below is written only after its \
         assertions passed. {} test(s) passed, {} failed in this run.\n",
        passed.len(),
        failed.len()
    )?;
    if !failed.is_empty() {
        writeln!(out, "## Did not hold\n")?;
        for f in &failed {
            writeln!(out, "- `{f}` failed (see the test output)")?;
        }
        writeln!(out)?;
    }
    // A fixed order of areas, whatever order the tests ran in.
    const ORDER: [&str; 12] = [
        "AWS faults",
        "Crashes",
        "Races",
        "Recovery",
        "Adversity",
        "Bootstrap",
        "Autoscaler",
        "Bad input: agent tags and cluster spec",
        "Bad input: IMDS and SSM",
        "Bad input: coordinator specs",
        "Secrets",
        "Least privilege",
    ];
    areas.sort_by_key(|a| ORDER.iter().position(|o| o == a).unwrap_or(ORDER.len()));
    for area in &areas {
        let rows = &rows[area];
        let runs: u64 = rows.iter().map(|r| r["runs"].as_u64().unwrap_or(0)).sum();
        writeln!(out, "## {area}\n\n{} check(s), {runs} run(s), all held.\n", rows.len())?;
        writeln!(out, "| tried | runs | what held |\n|---|---|---|")?;
        for r in rows {
            let cell = |k: &str| r[k].as_str().unwrap_or_default().replace('|', "\\|");
            writeln!(out, "| {} | {} | {} |", cell("tried"), r["runs"], cell("held"))?;
        }
        writeln!(out)?;
    }
    let fuzz: Vec<&String> = args[2..].iter().collect();
    if !fuzz.is_empty() {
        writeln!(out, "## Fuzzing\n\n`scripts/fuzz` (cargo-fuzz, libFuzzer):\n\n| target | executions | new inputs | result |\n|---|---|---|---|")?;
        for path in fuzz {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let stat = |k: &str| {
                text.lines().find(|l| l.starts_with(k)).and_then(|l| l.rsplit(':').next()).map(|v| v.trim().to_string()).unwrap_or_else(|| "?".into())
            };
            let name = std::path::Path::new(path).file_stem().and_then(|s| s.to_str()).unwrap_or("?").trim_start_matches("fuzz-").to_string();
            let result = if text.contains("panicked") || text.contains("SUMMARY: libFuzzer") { "FAILED: see the log" } else { "no crash" };
            writeln!(out, "| {name} | {} | {} | {result} |", stat("stat::number_of_executed_units"), stat("stat::new_units_added"))?;
        }
        writeln!(out)?;
    }
    // The IAM denial table (tests/tools/iam_eval/denial_table.py), when scripts/reliability made one.
    if let Some(table) = std::env::var_os("K3S_ASG_DENIAL_TABLE").and_then(|p| std::fs::read_to_string(p).ok()) {
        writeln!(
            out,
            "## Least privilege: what each role is denied\n\nEvaluated offline against the policies rendered from `packaging/iam/*.tftpl` \
             (`tests/tools/iam_eval/denial_table.py`, @cloud-copilot/iam-simulate); the `allowed` rows are controls, so a policy that \
             denies everything cannot pass.\n\n{}\n",
            table.trim_end()
        )?;
    }
    writeln!(
        out,
        "## Not covered here\n\n- Real AWS: every figure is against moto 5.2.5 and the test bed's doubles (IMDS, Auto Scaling \
         lifecycle actions, k3s stubs).\n- moto removes deregistered targets at once, so the connection-draining wait is \
         exercised only up to its bound."
    )?;
    print!("{out}");
    Ok(())
}
