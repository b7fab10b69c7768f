//! Differential tests of Strom's SQL against Apache Flink 2.3: the same script text (the queries
//! in `bench/sql/nexmark/`), the same input files, and the outputs compared as multisets. Any
//! difference fails.
//!
//! Strom's generator writes the input once (`generate.sql`); both engines read it through the
//! `filesystem` connector and write CSV files. Values are compared after normalizing what CSV
//! allows to differ: quoting, and the trailing zeros of decimals and fractions of seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The queries, by file name in `bench/sql/nexmark/`.
const QUERIES: &[&str] = &[
    "q0",
    "q1",
    "q10",
    "q2",
    "hot-auctions",
    "top-price",
    "category-prices",
    "q3",
    "q7",
    "q8",
    "q5",
    "q11",
    "q20",
    "q21",
    "q22",
    "cumulative-channels",
    "early-bids",
    "bid-trends",
    "window-bids",
    "seller-bids",
    "rebids",
    "seller-bid-windows",
    "window-top-bids",
    "window-top-auctions",
    "window-first-bids",
    "early-bid-windows",
    "bidder-windows",
    "bidder-sessions",
    "bidder-trends",
];
const EVENTS: u64 = 60_000;
/// Events per event-time second: a minute of event time.
const RATE: u64 = 1_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read_query(name: &str) -> String {
    let path = repo().join("bench/sql/nexmark").join(format!("{name}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn substitute(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(!out.contains("${"), "unsubstituted variable in:\n{out}");
    out
}

/// The script both engines run: the tables, then every query writing CSV under `out`.
fn script(input: &Path, out: &Path) -> String {
    let mut text = substitute(
        &read_query("tables"),
        &[("INPUT", input.display().to_string())],
    );
    for q in QUERIES {
        let sink = format!(
            "'connector' = 'filesystem', 'path' = '{}', 'format' = 'csv'",
            out.join(q).display()
        );
        text.push_str("\n\n");
        text.push_str(&substitute(&read_query(q), &[("SINK", sink)]));
    }
    text
}

fn run_flink(script_file: &Path) {
    let output = Command::new("bash")
        .arg(repo().join("bench/flink/run.sh"))
        .arg("sql")
        .arg(script_file)
        .args(["--parallelism", "2"])
        .env("STROM_FLINK_HEAP", "2g")
        .output()
        .expect("running bench/flink/run.sh (needs Java 17; bench/flink/setup.sh fetches Flink)");
    assert!(
        output.status.success(),
        "Flink failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The fields of one CSV line (quotes removed, `""` inside quotes unescaped).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A value with what CSV writers may write differently made uniform: numbers in plain notation
/// without trailing zeros (Flink writes the DECIMAL `2270.000` as `2.27E+3`), and a timestamp's
/// fraction without trailing zeros (`20.100` is `20.1`).
fn normalize(value: &str) -> String {
    if let Some(plain) = plain_number(value) {
        return plain;
    }
    let is_time = value.len() >= 19
        && value.as_bytes()[4] == b'-'
        && value.as_bytes()[10] == b' '
        && value.as_bytes()[13] == b':'
        && value.contains('.');
    if is_time {
        value.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        value.to_owned()
    }
}

/// `-12.50`, `1.25E+3`: the number in plain notation, no trailing zeros in its fraction, no
/// leading zeros; `None` if `value` is not a number with a point or an exponent.
fn plain_number(value: &str) -> Option<String> {
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (mantissa, exponent) = match unsigned.split_once(['E', 'e']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    if !mantissa.contains('.') && exponent == 0 {
        return None;
    }
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let point = whole.len() as i64 + exponent;
    let padded = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    let mut plain = padded.as_str();
    if plain.contains('.') {
        plain = plain.trim_end_matches('0').trim_end_matches('.');
    }
    let plain = plain.trim_start_matches('0');
    let plain = if plain.is_empty() || plain.starts_with('.') {
        format!("0{plain}")
    } else {
        plain.to_owned()
    };
    Some(if negative && plain != "0" {
        format!("-{plain}")
    } else {
        plain
    })
}

#[test]
fn numbers_compare_in_plain_notation() {
    for (written, plain) in [
        ("2.27E+3", "2270"),
        ("2270.000", "2270"),
        ("9.18442E+6", "9184420"),
        ("-0.500", "-0.5"),
        ("1.5E-2", "0.015"),
        ("0.000", "0"),
    ] {
        assert_eq!(plain_number(written).as_deref(), Some(plain), "{written}");
    }
    assert_eq!(plain_number("42"), None);
    assert_eq!(plain_number("2023-11-14 22:13:20.6"), None);
}

/// The rows of every visible part file under `dir`, normalized, as a multiset. Files in
/// partition directories (`dt=.../hm=...`) have each row start with their directories' names;
/// a partition directory with files and without a `_SUCCESS` file is a row of its own
/// (`uncommitted: <dir>`).
fn rows(dir: &Path) -> BTreeMap<Vec<String>, usize> {
    let mut out = BTreeMap::new();
    add_rows(dir, &mut Vec::new(), &mut out);
    out
}

fn add_rows(dir: &Path, partition: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, usize>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (mut committed, mut files) = (partition.is_empty(), false);
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "_SUCCESS" {
            committed = true;
        }
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            partition.push(name);
            add_rows(&path, partition, out);
            partition.pop();
            continue;
        }
        files = true;
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let row: Vec<String> = partition
                .iter()
                .cloned()
                .chain(fields(line).iter().map(|f| normalize(f)))
                .collect();
            *out.entry(row).or_insert(0) += 1;
        }
    }
    if files && !committed {
        *out.entry(vec![format!("uncommitted: {}", partition.join("/"))])
            .or_insert(0) += 1;
    }
}

/// The first rows each side has and the other has not (at most 5 each).
fn difference(
    strom: &BTreeMap<Vec<String>, usize>,
    flink: &BTreeMap<Vec<String>, usize>,
) -> String {
    let only = |a: &BTreeMap<Vec<String>, usize>, b: &BTreeMap<Vec<String>, usize>| {
        a.iter()
            .filter(|(r, n)| b.get(*r) != Some(n))
            .take(5)
            .map(|(r, n)| {
                format!(
                    "  {} x{n} (other side x{})",
                    r.join(","),
                    b.get(r).unwrap_or(&0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "only or more often in Strom:\n{}\nonly or more often in Flink:\n{}",
        only(strom, flink),
        only(flink, strom)
    )
}

#[test]
fn nexmark_sql_queries_give_what_flink_gives_on_the_same_input() {
    let dir = std::env::temp_dir().join(format!("strom-flink-sql-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input");
    super::sql::run(&substitute(
        &read_query("generate"),
        &[
            ("INPUT", input.display().to_string()),
            ("EVENTS", EVENTS.to_string()),
            ("RATE", RATE.to_string()),
        ],
    ));
    let (strom_out, flink_out) = (dir.join("strom"), dir.join("flink"));
    super::sql::run(&script(&input, &strom_out));
    let flink_script = dir.join("flink.sql");
    std::fs::write(&flink_script, script(&input, &flink_out)).unwrap();
    run_flink(&flink_script);

    let mut failures = Vec::new();
    for q in QUERIES {
        let (s, f) = (rows(&strom_out.join(q)), rows(&flink_out.join(q)));
        let total: usize = f.values().sum();
        eprintln!(
            "{q}: Flink {total} rows, Strom {} rows",
            s.values().sum::<usize>()
        );
        if total == 0 {
            failures.push(format!("{q}: Flink wrote nothing"));
        } else if s != f {
            failures.push(format!("{q}:\n{}", difference(&s, &f)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Queries whose result updates (a GROUP BY without windows), by file name in
/// `bench/sql/nexmark/`: both engines print their changelog, and the final states are compared.
const UPDATING_QUERIES: &[&str] = &[
    "q4",
    "q9",
    "q15",
    "q16",
    "q17",
    "q18",
    "q19",
    "auction-sellers",
    "channel-top-bidders",
    "top-auctions",
];

/// The positions of the sink's `PRIMARY KEY` columns in a query's `CREATE TABLE` (one column per
/// line up to the key), if it has one.
fn primary_key(query: &str) -> Option<Vec<usize>> {
    let body = query.split_once("CREATE TABLE")?.1.split_once('(')?.1;
    let (columns, key) = body.split_once("PRIMARY KEY")?;
    let names: Vec<String> = columns
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_matches('`').to_owned())
        .collect();
    let key = key.split_once('(')?.1.split_once(')')?.0;
    key.split(',')
        .map(|k| names.iter().position(|n| n == k.trim().trim_matches('`')))
        .collect()
}

/// The final state of a printed changelog (`+I[a, 1]`, `2> -U[a, 1]`), normalized, as a
/// multiset. Without a key, the rows inserted or updated to and not retracted since; with the
/// sink's primary key, as an upsert sink keeps it: the last row written per key, unless deleted
/// (Flink leaves out `-U` for a keyed sink).
fn final_state(stdout: &str, key: Option<&[usize]>) -> BTreeMap<Vec<String>, usize> {
    let mut state: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut upserted: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        // A parallel print sink's prefix: `2> `.
        let line = match line.split_once("> ") {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => line,
        };
        let Some((kind, values)) = line
            .get(..2)
            .zip(line.get(2..))
            .filter(|(k, v)| matches!(*k, "+I" | "-U" | "+U" | "-D") && v.starts_with('['))
        else {
            continue;
        };
        let values = values.trim_start_matches('[').trim_end_matches(']');
        let row: Vec<String> = values.split(", ").map(normalize).collect();
        if let Some(key) = key {
            let k: Vec<String> = key.iter().map(|&i| row[i].clone()).collect();
            match kind {
                "+I" | "+U" => {
                    upserted.insert(k, row);
                }
                "-D" => {
                    upserted.remove(&k);
                }
                _ => {}
            }
            continue;
        }
        if kind.starts_with('+') {
            *state.entry(row).or_insert(0) += 1;
        } else {
            let count = state
                .get_mut(&row)
                .unwrap_or_else(|| panic!("{line} retracts a row that is not there"));
            *count -= 1;
            if *count == 0 {
                state.remove(&row);
            }
        }
    }
    for row in upserted.into_values() {
        *state.entry(row).or_insert(0) += 1;
    }
    state
}

/// `state` without column `column`: q19's rank among bids of equal price depends on the order
/// in which they arrive, in Flink as in Strom.
fn without_column(
    state: BTreeMap<Vec<String>, usize>,
    column: usize,
) -> BTreeMap<Vec<String>, usize> {
    let mut out = BTreeMap::new();
    for (mut row, n) in state {
        row.remove(column);
        *out.entry(row).or_insert(0) += n;
    }
    out
}

#[test]
fn updating_nexmark_queries_end_in_the_state_flink_ends_in() {
    let dir = std::env::temp_dir().join(format!("strom-flink-sql-updates-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input");
    super::sql::run(&substitute(
        &read_query("generate"),
        &[
            ("INPUT", input.display().to_string()),
            ("EVENTS", EVENTS.to_string()),
            ("RATE", RATE.to_string()),
        ],
    ));
    let mut failures = Vec::new();
    for q in UPDATING_QUERIES {
        let mut text = substitute(
            &read_query("tables"),
            &[("INPUT", input.display().to_string())],
        );
        text.push_str("\n\n");
        text.push_str(&substitute(
            &read_query(q),
            &[("SINK", "'connector' = 'print'".to_owned())],
        ));
        let file = dir.join(format!("{q}.sql"));
        std::fs::write(&file, &text).unwrap();
        let strom = Command::new(strom_tests::processes::strom_binary())
            .arg("sql")
            .arg(&file)
            .args(["--quiet", "--parallelism", "2"])
            .output()
            .unwrap();
        assert!(
            strom.status.success(),
            "strom sql {q} failed:\n{}",
            String::from_utf8_lossy(&strom.stderr)
        );
        let flink = Command::new("bash")
            .arg(repo().join("bench/flink/run.sh"))
            .arg("sql")
            .arg(&file)
            .args(["--parallelism", "2"])
            .env("STROM_FLINK_HEAP", "2g")
            .output()
            .unwrap();
        assert!(
            flink.status.success(),
            "Flink failed on {q}:\n{}",
            String::from_utf8_lossy(&flink.stderr)
        );
        let key = primary_key(&read_query(q));
        let mut s = final_state(&String::from_utf8_lossy(&strom.stdout), key.as_deref());
        let mut f = final_state(&String::from_utf8_lossy(&flink.stdout), key.as_deref());
        if *q == "q19" {
            // The rank, last.
            s = without_column(s, 7);
            f = without_column(f, 7);
        }
        eprintln!(
            "{q}: Flink ends with {} rows, Strom with {}",
            f.values().sum::<usize>(),
            s.values().sum::<usize>()
        );
        if f.is_empty() {
            failures.push(format!("{q}: Flink printed no final state"));
        } else if s != f {
            failures.push(format!("{q}:\n{}", difference(&s, &f)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
