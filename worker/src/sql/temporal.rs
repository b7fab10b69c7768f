//! Temporal table references: `JOIN rates FOR SYSTEM_TIME AS OF o.order_time AS r`, the right side
//! of Flink SQL's temporal join.
//!
//! sqlparser reads `FOR SYSTEM_TIME AS OF` only in dialects that are not Flink's, so the script
//! reader turns the clause into a named argument of the table, `rates(__system_time_as_of =>
//! o.order_time) AS r` ([`rewrite_system_time`]), which sqlparser reads as a table function
//! call. [`extract`] then replaces each such reference in the query by a table of its own
//! (`__temporal_N`) with the columns of the table it reads; DataFusion plans the join over it as
//! a plain join, and the streaming planner, finding a `__temporal_N` scan on a join's right side,
//! makes it a temporal join over the time column the clause names.

use std::ops::ControlFlow;

use datafusion_sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, TableAlias, TableFactor, VisitMut,
    VisitorMut,
};
use datafusion_sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Word};

use super::script::SqlError;

/// The argument name the clause becomes.
const MARKER: &str = "__system_time_as_of";

/// One `table FOR SYSTEM_TIME AS OF column` of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalTable {
    /// The table or view read (its versions).
    pub input: String,
    /// The column of the other side whose time picks the version, as written (`o.order_time`:
    /// `["o", "order_time"]`).
    pub time: Vec<String>,
    pub at: Location,
}

/// The name a temporal table reference is known by in the plan.
pub fn table_name(n: usize) -> String {
    format!("__temporal_{n}")
}

/// The number of a table name made by [`table_name`].
pub fn number_of(table: &str) -> Option<usize> {
    table.strip_prefix("__temporal_")?.parse().ok()
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Rewrites each `FOR SYSTEM_TIME AS OF a.b` into `(__system_time_as_of => a.b)`, which follows
/// the table name as a table function's arguments would. The time must be a column (perhaps
/// qualified), as Flink requires.
pub fn rewrite_system_time(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, SqlError> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let clause_at = |s: usize| {
        ["FOR", "SYSTEM_TIME", "AS", "OF"]
            .iter()
            .enumerate()
            .all(|(k, w)| {
                solid
                    .get(s + k)
                    .is_some_and(|&i| is_word(&tokens[i].token, w))
            })
    };
    let mut out = Vec::with_capacity(tokens.len() + 4);
    // Tokens before this index are in `out` (as they were, or rewritten).
    let mut copied = 0;
    let mut s = 0;
    while s < solid.len() {
        if !clause_at(s) {
            s += 1;
            continue;
        }
        let at = tokens[solid[s]].span;
        // The column: a word, then `.word` pairs.
        let is_name = |k: usize| {
            solid
                .get(k)
                .is_some_and(|&i| matches!(tokens[i].token, Token::Word(_)))
        };
        if !is_name(s + 4) {
            return Err(SqlError::at(
                at.start,
                "FOR SYSTEM_TIME AS OF takes a time attribute column of the joined table \
                 (left.column)",
            ));
        }
        let mut last = s + 4;
        while solid
            .get(last + 1)
            .is_some_and(|&i| tokens[i].token == Token::Period)
            && is_name(last + 2)
        {
            last += 2;
        }
        out.extend(tokens[copied..solid[s]].iter().cloned());
        let made = |token: Token| TokenWithSpan { token, span: at };
        out.push(made(Token::LParen));
        out.push(made(Token::Word(Word {
            value: MARKER.to_owned(),
            quote_style: None,
            keyword: datafusion_sql::sqlparser::keywords::Keyword::NoKeyword,
        })));
        out.push(made(Token::RArrow));
        out.extend(tokens[solid[s + 4]..=solid[last]].iter().cloned());
        out.push(made(Token::RParen));
        copied = solid[last] + 1;
        s = last + 1;
    }
    out.extend(tokens[copied..].iter().cloned());
    Ok(out)
}

/// Replaces the temporal table references of `query` by tables of their own, numbered from
/// `first`; returns them in that order.
pub fn extract(
    query: &mut datafusion_sql::sqlparser::ast::Query,
    first: usize,
) -> Result<Vec<TemporalTable>, SqlError> {
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
    first: usize,
    found: Vec<TemporalTable>,
}

impl VisitorMut for Extract {
    type Break = SqlError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        let TableFactor::Table {
            name, args, alias, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(list) = args.as_ref() else {
            return ControlFlow::Continue(());
        };
        let time = match list.args.as_slice() {
            [
                FunctionArg::Named {
                    name: marker, arg, ..
                },
            ] if arg_is_marker(marker) => arg,
            _ => return ControlFlow::Continue(()),
        };
        let time = match time {
            FunctionArgExpr::Expr(Expr::Identifier(i)) => vec![i.value.clone()],
            FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts)) => {
                parts.iter().map(|p| p.value.clone()).collect()
            }
            _ => return ControlFlow::Continue(()),
        };
        let at = name
            .0
            .first()
            .and_then(|p| p.as_ident())
            .map_or(Location { line: 0, column: 0 }, |i| i.span.start);
        let input = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
            .collect::<Vec<_>>()
            .join(".");
        // Queries name the table as they wrote it.
        if alias.is_none()
            && let Some(last) = name.0.last().and_then(|p| p.as_ident())
        {
            *alias = Some(TableAlias {
                explicit: false,
                name: last.clone(),
                columns: Vec::new(),
                at: None,
            });
        }
        *name = ObjectName::from(vec![Ident::new(table_name(self.first + self.found.len()))]);
        *args = None;
        self.found.push(TemporalTable { input, time, at });
        ControlFlow::Continue(())
    }
}

fn arg_is_marker(name: &Ident) -> bool {
    name.quote_style.is_none() && name.value.eq_ignore_ascii_case(MARKER)
}
