//! Flink's windowing table-valued functions: `TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time),
//! INTERVAL '10' SECOND))`, `HOP(..., slide, size)` and `CUMULATE(..., step, size)`, positional or
//! with named arguments (`DATA => TABLE bid, TIMECOL => DESCRIPTOR(date_time), SIZE => ...`).
//!
//! sqlparser reads `TABLE bid` only as a statement, not as an argument, so the script reader drops
//! that `TABLE` keyword ([`drop_table_keyword_in_arguments`]). Each call is then replaced in the
//! query by a reference to a table of its own (`__window_N`), whose columns are the input's plus
//! `window_start`, `window_end` and `window_time`; DataFusion plans the query over it, and the
//! streaming planner turns a `GROUP BY window_start, window_end` over it into a window operator.

use std::ops::ControlFlow;

use datafusion_sql::sqlparser::ast::{
    DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion_sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use super::script::SqlError;

/// Which windows a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed windows of `size` ms.
    Tumble { size: i64 },
    /// Windows of `size` ms starting every `slide` ms.
    Hop { slide: i64, size: i64 },
    /// Windows of `size` ms, fired every `step` ms with what they hold so far.
    Cumulate { step: i64, size: i64 },
    /// Sessions of a partition: records less than `gap` ms apart are in one window.
    Session { gap: i64 },
}

/// One windowing TVF of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTvf {
    pub kind: WindowKind,
    /// The table or view it reads.
    pub input: String,
    /// The time attribute the windows are over (`DESCRIPTOR(col)`).
    pub time_column: String,
    /// `PARTITION BY` columns (session windows): each partition has sessions of its own.
    pub partition: Vec<String>,
    pub at: Location,
}

impl WindowTvf {
    /// Whether `other` makes the same windows over the same input (wherever it was written).
    pub fn same_windows(&self, other: &WindowTvf) -> bool {
        (&self.kind, &self.input, &self.time_column, &self.partition)
            == (
                &other.kind,
                &other.input,
                &other.time_column,
                &other.partition,
            )
    }
}

/// The name a TVF's table is known by in the plan.
pub fn table_name(n: usize) -> String {
    format!("__window_{n}")
}

/// The TVF number of a table name made by [`table_name`].
pub fn number_of(table: &str) -> Option<usize> {
    table.strip_prefix("__window_")?.parse().ok()
}

/// Drops the `TABLE` keyword of `TABLE name` where it is a function argument (after `(`, `,` or
/// `=>`), which sqlparser cannot read.
pub fn drop_table_keyword_in_arguments(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut drop = vec![false; tokens.len()];
    for w in solid.windows(3) {
        let (before, at, after) = (&tokens[w[0]].token, &tokens[w[1]], &tokens[w[2]].token);
        let is_table = matches!(&at.token, Token::Word(word) if word.value.eq_ignore_ascii_case("TABLE") && word.quote_style.is_none());
        let argument_start = matches!(before, Token::LParen | Token::Comma | Token::RArrow);
        if is_table && argument_start && matches!(after, Token::Word(_)) {
            drop[w[1]] = true;
        }
    }
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .zip(drop)
        .filter_map(|(t, d)| (!d).then_some(t))
        .collect();
    rewrite_partition_by(tokens)
}

/// `SESSION(TABLE bid PARTITION BY bidder, ...)` or `PARTITION BY (a, b)`: sqlparser cannot read
/// the clause inside a function's arguments either, so it becomes a named argument of its own,
/// `bid, PARTITION => DESCRIPTOR(bidder), ...` (after [`drop_table_keyword_in_arguments`] dropped
/// `TABLE`).
fn rewrite_partition_by(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_word = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(word) if word.value.eq_ignore_ascii_case(w) && word.quote_style.is_none());
    let next_solid = |from: usize| {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    };
    let mut out = Vec::with_capacity(tokens.len() + 4);
    let mut i = 0;
    while i < tokens.len() {
        let by = next_solid(i + 1);
        let after = by.and_then(|b| next_solid(b + 1));
        let inside_arguments = out
            .iter()
            .rev()
            .find(|t: &&TokenWithSpan| !matches!(t.token, Token::Whitespace(_)))
            .is_some_and(|t| matches!(t.token, Token::Word(_)));
        match (by, after) {
            (Some(b), Some(a))
                if is_word(&tokens[i], "PARTITION")
                    && is_word(&tokens[b], "BY")
                    && inside_arguments
                    && matches!(tokens[a].token, Token::Word(_) | Token::LParen) =>
            {
                let span = tokens[i].span;
                let made = |token: Token| TokenWithSpan { token, span };
                out.push(made(Token::Comma));
                out.push(made(Token::make_word("PARTITION", None)));
                out.push(made(Token::RArrow));
                out.push(made(Token::make_word("DESCRIPTOR", None)));
                if matches!(tokens[a].token, Token::LParen) {
                    // `(a, b)`: taken as it is, parentheses included.
                    i = a;
                } else {
                    out.push(made(Token::LParen));
                    out.push(tokens[a].clone());
                    out.push(made(Token::RParen));
                    i = a + 1;
                }
            }
            _ => {
                out.push(tokens[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// Replaces every windowing TVF in `query` by its table; returns the TVFs, numbered from `first`.
pub fn extract<V: VisitMut>(query: &mut V, first: usize) -> Result<Vec<WindowTvf>, SqlError> {
    let mut visitor = Extract {
        first,
        found: Vec::new(),
    };
    match query.visit(&mut visitor) {
        ControlFlow::Continue(()) => Ok(visitor.found),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Extract {
    /// The number of the first TVF found.
    first: usize,
    /// The distinct TVFs found, numbered from `first`.
    found: Vec<WindowTvf>,
}

impl VisitorMut for Extract {
    type Break = SqlError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        let TableFactor::TableFunction {
            expr: Expr::Function(f),
            alias,
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(name) = f.name.0.last().and_then(|p| p.as_ident()) else {
            return ControlFlow::Continue(());
        };
        let at = name.span.start;
        let function = name.value.to_ascii_uppercase();
        if !matches!(function.as_str(), "TUMBLE" | "HOP" | "CUMULATE" | "SESSION") {
            return ControlFlow::Continue(());
        }
        let tvf = match parse_call(&function, &f.args, at) {
            Ok(tvf) => tvf,
            Err(e) => return ControlFlow::Break(e),
        };
        // The same call twice (q5 counts bids per HOP window on both sides of a join) is one
        // table, so that the plans over it are equal and planned once (see `Compiler::plan`).
        let n = self.first
            + match self.found.iter().position(|w| w.same_windows(&tvf)) {
                Some(i) => i,
                None => {
                    self.found.push(tvf);
                    self.found.len() - 1
                }
            };
        *factor = TableFactor::Table {
            name: ObjectName::from(vec![Ident::new(table_name(n))]),
            alias: alias.take(),
            args: None,
            with_hints: Vec::new(),
            version: None,
            with_ordinality: false,
            partitions: Vec::new(),
            json_path: None,
            sample: None,
            index_hints: Vec::new(),
        };
        ControlFlow::Continue(())
    }
}

fn parse_call(
    function: &str,
    args: &FunctionArguments,
    at: Location,
) -> Result<WindowTvf, SqlError> {
    let err = |m: String| SqlError::at(at, format!("{function}: {m}"));
    let FunctionArguments::List(list) = args else {
        return Err(err("needs arguments".into()));
    };
    // Positional names, in Flink's order.
    let positional: &[&str] = match function {
        "TUMBLE" => &["DATA", "TIMECOL", "SIZE", "OFFSET"],
        "HOP" => &["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
        "SESSION" => &["DATA", "TIMECOL", "GAP"],
        _ => &["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"],
    };
    let mut named: Vec<(String, &Expr)> = Vec::new();
    let mut unnamed = 0;
    for arg in &list.args {
        let (name, arg) = match arg {
            FunctionArg::Unnamed(a) => {
                unnamed += 1;
                (
                    positional
                        .get(unnamed - 1)
                        .ok_or_else(|| {
                            err(format!("takes at most {} arguments", positional.len()))
                        })?
                        .to_string(),
                    a,
                )
            }
            FunctionArg::Named { name, arg, .. } => (name.value.to_ascii_uppercase(), arg),
            FunctionArg::ExprNamed { name, arg, .. } => {
                (name.to_string().to_ascii_uppercase(), arg)
            }
        };
        let FunctionArgExpr::Expr(e) = arg else {
            return Err(err(format!("argument {name} must be an expression")));
        };
        let partition = function == "SESSION" && name == "PARTITION";
        if !positional.contains(&name.as_str()) && !partition {
            return Err(err(format!("has no argument {name}")));
        }
        named.push((name, e));
    }
    let get = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
    let input = match get("DATA") {
        Some(Expr::Identifier(i)) => i.value.clone(),
        Some(Expr::CompoundIdentifier(parts)) => parts
            .iter()
            .map(|p| p.value.clone())
            .collect::<Vec<_>>()
            .join("."),
        Some(other) => return Err(err(format!("DATA must be TABLE name, not {other}"))),
        None => return Err(err("needs DATA (TABLE name)".into())),
    };
    let time_column = match get("TIMECOL") {
        Some(e) => match descriptor_columns(e).as_deref() {
            Some([column]) => column.clone(),
            _ => {
                return Err(err(format!("TIMECOL must be DESCRIPTOR(column), not {e}")));
            }
        },
        None => return Err(err("needs TIMECOL (DESCRIPTOR(column))".into())),
    };
    let partition = match get("PARTITION") {
        Some(e) => descriptor_columns(e)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| err(format!("PARTITION BY takes columns, not {e}")))?,
        None => Vec::new(),
    };
    let interval = |name: &str| -> Result<i64, SqlError> {
        let e = get(name).ok_or_else(|| err(format!("needs {name}")))?;
        let ms = interval_millis(e).map_err(|m| err(format!("{name}: {m}")))?;
        if ms <= 0 {
            return Err(err(format!("{name} must be positive")));
        }
        Ok(ms)
    };
    if let Some(offset) = get("OFFSET")
        && interval_millis(offset).map_err(|m| err(format!("OFFSET: {m}")))? != 0
    {
        return Err(err("window offsets are not supported yet".into()));
    }
    let kind = match function {
        "TUMBLE" => WindowKind::Tumble {
            size: interval("SIZE")?,
        },
        "SESSION" => WindowKind::Session {
            gap: interval("GAP")?,
        },
        "HOP" => {
            let (slide, size) = (interval("SLIDE")?, interval("SIZE")?);
            if size % slide != 0 {
                return Err(err(format!(
                    "SIZE ({size} ms) must be a multiple of SLIDE ({slide} ms)"
                )));
            }
            WindowKind::Hop { slide, size }
        }
        _ => {
            let (step, size) = (interval("STEP")?, interval("SIZE")?);
            if size % step != 0 {
                return Err(err(format!(
                    "SIZE ({size} ms) must be a multiple of STEP ({step} ms)"
                )));
            }
            WindowKind::Cumulate { step, size }
        }
    };
    Ok(WindowTvf {
        kind,
        input,
        time_column,
        partition,
        at,
    })
}

/// The columns of `DESCRIPTOR(a, b)`, or `None` if `e` is not one.
fn descriptor_columns(e: &Expr) -> Option<Vec<String>> {
    let Expr::Function(d) = e else {
        return None;
    };
    if !d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") {
        return None;
    }
    let FunctionArguments::List(l) = &d.args else {
        return None;
    };
    l.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i))) => {
                Some(i.value.clone())
            }
            _ => None,
        })
        .collect()
}

/// `INTERVAL '10' SECOND` (also `MINUTE`, `HOUR`, `DAY`, `MILLISECOND`; a fraction is allowed) in
/// milliseconds.
pub fn interval_millis(e: &Expr) -> Result<i64, String> {
    let Expr::Interval(i) = e else {
        return Err(format!("expected an INTERVAL, found {e}"));
    };
    if i.last_field.is_some() {
        return Err(format!("{e}: ranges of units are not supported"));
    }
    let text = match i.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.trim().to_owned(),
            other => return Err(format!("{e}: {other} is not a number")),
        },
        other => return Err(format!("{e}: {other} is not a number")),
    };
    let unit_ms: f64 = match &i.leading_field {
        Some(DateTimeField::Millisecond | DateTimeField::Milliseconds) => 1.0,
        Some(DateTimeField::Second | DateTimeField::Seconds) => 1e3,
        Some(DateTimeField::Minute | DateTimeField::Minutes) => 60e3,
        Some(DateTimeField::Hour | DateTimeField::Hours) => 3_600e3,
        Some(DateTimeField::Day | DateTimeField::Days) => 86_400e3,
        other => {
            return Err(format!(
                "{e}: unit {} is not supported",
                other.as_ref().map_or("(none)".into(), |u| u.to_string())
            ));
        }
    };
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{e}: '{text}' is not a number"))?;
    let ms = value * unit_ms;
    if ms.fract() != 0.0 || !ms.is_finite() {
        return Err(format!("{e} is not a whole number of milliseconds"));
    }
    Ok(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::script::{ScriptStatement, parse};
    use datafusion_sql::sqlparser::ast::Statement;

    fn query(sql: &str) -> Box<datafusion_sql::sqlparser::ast::Query> {
        match parse(sql).unwrap().remove(0) {
            ScriptStatement::Other { statement, .. } => match *statement {
                Statement::Query(q) => q,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn window_tvfs_become_tables_positional_or_named() {
        let mut q = query(
            "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) w \
             JOIN TABLE(HOP(DATA => TABLE auction, TIMECOL => DESCRIPTOR(ts), \
                            SLIDE => INTERVAL '2' SECOND, SIZE => INTERVAL '1' MINUTE)) a ON true, \
             TABLE(CUMULATE(TABLE person, DESCRIPTOR(date_time), INTERVAL '0.5' SECOND, INTERVAL '2' SECOND))",
        );
        let found = extract(&mut *q, 3).unwrap();
        let kinds: Vec<(WindowKind, &str, &str)> = found
            .iter()
            .map(|t| (t.kind, t.input.as_str(), t.time_column.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (WindowKind::Tumble { size: 10_000 }, "bid", "date_time"),
                (
                    WindowKind::Hop {
                        slide: 2_000,
                        size: 60_000
                    },
                    "auction",
                    "ts"
                ),
                (
                    WindowKind::Cumulate {
                        step: 500,
                        size: 2_000
                    },
                    "person",
                    "date_time"
                ),
            ]
        );
        let text = q.to_string();
        assert!(
            text.contains("FROM __window_3 w JOIN __window_4 a ON true, __window_5"),
            "{text}"
        );
    }

    #[test]
    fn session_windows_are_partitioned_by_one_column_or_a_list() {
        for (sql, partition) in [
            (
                "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
                vec!["bidder"],
            ),
            (
                "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY (bidder, auction), DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
                vec!["bidder", "auction"],
            ),
            (
                "SELECT * FROM TABLE(SESSION(DATA => TABLE bid PARTITION BY bidder, TIMECOL => DESCRIPTOR(date_time), GAP => INTERVAL '10' SECOND))",
                vec!["bidder"],
            ),
            (
                "SELECT * FROM TABLE(SESSION(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
                vec![],
            ),
        ] {
            let mut q = query(sql);
            let found = extract(&mut *q, 0).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].kind, WindowKind::Session { gap: 10_000 }, "{sql}");
            assert_eq!(found[0].input, "bid");
            assert_eq!(found[0].time_column, "date_time");
            assert_eq!(found[0].partition, partition, "{sql}");
        }
    }

    #[test]
    fn bad_window_calls_say_what_is_wrong_where() {
        for (sql, says) in [
            (
                "SELECT * FROM TABLE(HOP(TABLE bid, DESCRIPTOR(t), INTERVAL '3' SECOND, INTERVAL '10' SECOND))",
                "multiple of SLIDE",
            ),
            (
                "SELECT * FROM TABLE(TUMBLE(TABLE bid, t, INTERVAL '3' SECOND))",
                "DESCRIPTOR",
            ),
            (
                "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(t), INTERVAL '3' YEAR))",
                "unit",
            ),
            (
                "SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(t)))",
                "needs SIZE",
            ),
            (
                "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY k, DESCRIPTOR(t)))",
                "needs GAP",
            ),
            (
                "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY k + 1, DESCRIPTOR(t), INTERVAL '1' SECOND))",
                "PARTITION BY",
            ),
        ] {
            let mut q = query(sql);
            let e = extract(&mut *q, 0).unwrap_err();
            assert!(e.message.contains(says), "{sql}: {e}");
            assert_eq!((e.line, e.column), (1, 21), "{sql}: {e}");
        }
    }
}
