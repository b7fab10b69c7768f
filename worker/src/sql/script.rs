//! A Flink SQL script, parsed: statements as sqlparser's tokens and AST, with Flink's `CREATE TABLE`
//! (computed columns, `WATERMARK FOR`, `WITH (...)` options, `PRIMARY KEY ... NOT ENFORCED`) read
//! here on top of sqlparser's own parser, which knows no such clauses. Every error names the line
//! and column it is at.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion_sql::sqlparser::ast::{self, Expr, ObjectName, Statement};
use datafusion_sql::sqlparser::dialect::GenericDialect;
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::parser::{Parser, ParserError};
use datafusion_sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// A SQL error at a place in the script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL error at line {line}, column {column}: {message}")]
pub struct SqlError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SqlError {
    pub fn at(at: Location, message: impl Into<String>) -> Self {
        Self {
            line: at.line,
            column: at.column,
            message: message.into(),
        }
    }

    /// sqlparser's errors carry their place in the message (`... at Line: L, Column: C`).
    fn from_parser(e: ParserError, fallback: Location) -> Self {
        let text = match e {
            ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".into(),
        };
        if text.ends_with("found: EOF") {
            return Self::at(fallback, text);
        }
        if let Some((message, place)) = text.rsplit_once(" at Line: ")
            && let Some((line, column)) = place.split_once(", Column: ")
            && let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse())
        {
            return Self {
                line,
                column,
                message: message.to_owned(),
            };
        }
        Self::at(fallback, text)
    }
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub enum ScriptStatement {
    CreateTable(Box<TableDef>),
    /// `CREATE [TEMPORARY] VIEW name AS query`.
    CreateView {
        name: String,
        query: Box<ast::Query>,
        at: Location,
    },
    /// `SET 'key' = 'value'`.
    Set {
        key: String,
        value: String,
    },
    /// Anything sqlparser parses on its own: `INSERT INTO ... SELECT`, `SELECT`, `EXPLAIN`.
    Other {
        statement: Box<Statement>,
        at: Location,
    },
}

/// A column the connector produces.
#[derive(Debug, Clone, PartialEq)]
pub struct PhysicalColumn {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
}

/// `CREATE TABLE`, as Flink has it.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<PhysicalColumn>,
    /// `name AS expr`, in order; evaluated over the physical columns (and earlier computed ones).
    pub computed: Vec<(String, Expr)>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(String, Expr)>,
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY (a, b)`.
    pub partition_by: Vec<String>,
    /// `WITH ('k' = 'v', ...)`, keys as written.
    pub options: BTreeMap<String, String>,
    pub at: Location,
}

/// Parses a script: statements separated by `;`.
pub fn parse(script: &str) -> Result<Vec<ScriptStatement>, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, script)
        .tokenize_with_location()
        .map_err(|e| SqlError::from_parser(e.into(), Location { line: 1, column: 1 }))?;
    let mut out = Vec::new();
    for statement in split(tokens) {
        let at = statement
            .iter()
            .find(|t| !is_blank(&t.token))
            .map(|t| t.span.start)
            .unwrap_or(Location { line: 1, column: 1 });
        if statement.iter().all(|t| is_blank(&t.token)) {
            continue;
        }
        out.push(parse_statement(&dialect, statement, at)?);
    }
    Ok(out)
}

fn is_blank(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_) | Token::EOF)
}

/// Splits the tokens at top-level semicolons.
fn split(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut statements = vec![Vec::new()];
    for t in tokens {
        if t.token == Token::SemiColon {
            statements.push(Vec::new());
        } else if let Some(last) = statements.last_mut() {
            last.push(t);
        }
    }
    statements
}

fn word_is(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

fn parse_statement(
    dialect: &GenericDialect,
    tokens: Vec<TokenWithSpan>,
    at: Location,
) -> Result<ScriptStatement, SqlError> {
    let words: Vec<&TokenWithSpan> = tokens.iter().filter(|t| !is_blank(&t.token)).collect();
    let starts =
        |ws: &[&str]| words.len() >= ws.len() && ws.iter().zip(&words).all(|(w, t)| word_is(t, w));
    // Where the statement ends: the place of an error at its end ("found: EOF").
    let last = words.last().map_or(at, |t| t.span.end);
    let create_table_statement =
        starts(&["CREATE", "TABLE"]) || starts(&["CREATE", "TEMPORARY", "TABLE"]);
    let create_view = starts(&["CREATE", "VIEW"]) || starts(&["CREATE", "TEMPORARY", "VIEW"]);
    let set = starts(&["SET"]);
    drop(words);
    let tokens = if create_table_statement {
        tokens
    } else {
        // `TABLE(TUMBLE(TABLE bid, ...))`: see `tvf`.
        super::temporal::rewrite_system_time(super::tvf::drop_table_keyword_in_arguments(tokens))?
    };
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens);
    let err = |e: ParserError| SqlError::from_parser(e, last);
    if create_table_statement {
        return create_table(&mut parser, at).map(|t| ScriptStatement::CreateTable(Box::new(t)));
    }
    if create_view {
        parser.expect_keyword(Keyword::CREATE).map_err(err)?;
        let _ = parser.parse_keyword(Keyword::TEMPORARY);
        parser.expect_keyword(Keyword::VIEW).map_err(err)?;
        let name = object_name(&parser.parse_object_name(false).map_err(err)?);
        parser.expect_keyword(Keyword::AS).map_err(err)?;
        let query = parser.parse_query().map_err(err)?;
        end(&mut parser)?;
        return Ok(ScriptStatement::CreateView { name, query, at });
    }
    if set {
        parser.expect_keyword(Keyword::SET).map_err(err)?;
        let key = quoted_string(&mut parser).map_err(err)?;
        parser.expect_token(&Token::Eq).map_err(err)?;
        let value = quoted_string(&mut parser).map_err(err)?;
        end(&mut parser)?;
        return Ok(ScriptStatement::Set { key, value });
    }
    let statement = Box::new(parser.parse_statement().map_err(err)?);
    end(&mut parser)?;
    Ok(ScriptStatement::Other { statement, at })
}

fn end(parser: &mut Parser<'_>) -> Result<(), SqlError> {
    let next = parser.peek_token();
    if next.token == Token::EOF {
        Ok(())
    } else {
        Err(SqlError::at(
            next.span.start,
            format!("unexpected '{}' after the end of the statement", next.token),
        ))
    }
}

/// A `'quoted'` string, as Flink wants option keys and values.
fn quoted_string(parser: &mut Parser<'_>) -> Result<String, ParserError> {
    let next = parser.next_token();
    match next.token {
        Token::SingleQuotedString(s) => Ok(s),
        _ => parser.expected("a 'quoted' string", next),
    }
}

/// `(a, b, ...)`: the names.
fn column_list(parser: &mut Parser<'_>) -> Result<Vec<String>, ParserError> {
    parser.expect_token(&Token::LParen)?;
    let names = parser.parse_comma_separated(|p| p.parse_identifier())?;
    parser.expect_token(&Token::RParen)?;
    Ok(names.into_iter().map(|i| i.value).collect())
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect::<Vec<_>>()
        .join(".")
}

fn create_table(parser: &mut Parser<'_>, at: Location) -> Result<TableDef, SqlError> {
    let err = |e: ParserError| SqlError::from_parser(e, at);
    parser.expect_keyword(Keyword::CREATE).map_err(err)?;
    let _ = parser.parse_keyword(Keyword::TEMPORARY);
    parser.expect_keyword(Keyword::TABLE).map_err(err)?;
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&parser.parse_object_name(false).map_err(err)?);
    parser.expect_token(&Token::LParen).map_err(err)?;
    let mut table = TableDef {
        name,
        columns: Vec::new(),
        computed: Vec::new(),
        watermark: None,
        primary_key: Vec::new(),
        partition_by: Vec::new(),
        options: BTreeMap::new(),
        at,
    };
    loop {
        let next = parser.peek_token();
        if word_is(&next, "WATERMARK") {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR).map_err(err)?;
            let column = parser.parse_identifier().map_err(err)?.value;
            parser.expect_keyword(Keyword::AS).map_err(err)?;
            let expr = parser.parse_expr().map_err(err)?;
            if table.watermark.is_some() {
                return Err(SqlError::at(next.span.start, "a table has one WATERMARK"));
            }
            table.watermark = Some((column, expr));
        } else if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            table.primary_key = column_list(parser).map_err(err)?;
            parser
                .expect_keywords(&[Keyword::NOT, Keyword::ENFORCED])
                .map_err(err)?;
        } else {
            let column = parser.parse_identifier().map_err(err)?;
            if parser.parse_keyword(Keyword::AS) {
                let expr = parser.parse_expr().map_err(err)?;
                table.computed.push((column.value, expr));
            } else {
                let type_at = parser.peek_token().span.start;
                let sql_type = parser.parse_data_type().map_err(err)?;
                let data_type = arrow_type(&sql_type).map_err(|m| SqlError::at(type_at, m))?;
                let nullable = !parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                table.columns.push(PhysicalColumn {
                    name: column.value,
                    data_type,
                    nullable,
                });
            }
        }
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen).map_err(err)?;
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        table.partition_by = column_list(parser).map_err(err)?;
        if let Some(c) = table
            .partition_by
            .iter()
            .find(|c| !table.columns.iter().any(|p| &p.name == *c))
        {
            return Err(SqlError::at(
                at,
                format!(
                    "PARTITIONED BY {c}: table {} has no such column",
                    table.name
                ),
            ));
        }
    }
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen).map_err(err)?;
        let pairs = parser
            .parse_comma_separated(|p| {
                let key = quoted_string(p)?;
                p.expect_token(&Token::Eq)?;
                let value = quoted_string(p)?;
                Ok((key, value))
            })
            .map_err(err)?;
        parser.expect_token(&Token::RParen).map_err(err)?;
        table.options = pairs.into_iter().collect();
    }
    end(parser)?;
    if let Some((column, _)) = &table.watermark {
        let known = table.columns.iter().any(|c| &c.name == column)
            || table.computed.iter().any(|(c, _)| c == column);
        if !known {
            return Err(SqlError::at(
                at,
                format!(
                    "WATERMARK FOR {column}: table {} has no such column",
                    table.name
                ),
            ));
        }
    }
    Ok(table)
}

/// Flink's SQL types as Arrow types.
pub fn arrow_type(t: &ast::DataType) -> Result<DataType, String> {
    use ast::DataType as T;
    Ok(match t {
        T::TinyInt(_) => DataType::Int8,
        T::SmallInt(_) => DataType::Int16,
        T::Int(_) | T::Integer(_) => DataType::Int32,
        T::BigInt(_) => DataType::Int64,
        T::Float(_) | T::Real => DataType::Float32,
        T::Double(_) | T::DoublePrecision => DataType::Float64,
        T::Boolean | T::Bool => DataType::Boolean,
        T::String(_) | T::Varchar(_) | T::Char(_) | T::CharVarying(_) | T::Text => DataType::Utf8,
        T::Bytes(_) | T::Varbinary(_) | T::Binary(_) => DataType::Binary,
        T::Date => DataType::Date32,
        T::Decimal(info) | T::Numeric(info) => {
            let (p, s) = match info {
                ast::ExactNumberInfo::None => (10, 0),
                ast::ExactNumberInfo::Precision(p) => (*p, 0),
                ast::ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
            };
            let p = u8::try_from(p)
                .ok()
                .filter(|p| (1..=38).contains(p))
                .ok_or_else(|| format!("DECIMAL precision {p} is not in 1..=38"))?;
            let s = i8::try_from(s).map_err(|_| format!("DECIMAL scale {s} is too large"))?;
            DataType::Decimal128(p, s)
        }
        T::Timestamp(precision, tz) => {
            let unit = match precision.unwrap_or(6) {
                0 => TimeUnit::Second,
                1..=3 => TimeUnit::Millisecond,
                4..=6 => TimeUnit::Microsecond,
                _ => TimeUnit::Nanosecond,
            };
            let zone = match tz {
                ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz => Some("UTC".into()),
                _ => None,
            };
            DataType::Timestamp(unit, zone)
        }
        T::Custom(name, args) if object_name(name).eq_ignore_ascii_case("TIMESTAMP_LTZ") => {
            let precision: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(6);
            let unit = if precision <= 3 {
                TimeUnit::Millisecond
            } else {
                TimeUnit::Microsecond
            };
            DataType::Timestamp(unit, Some("UTC".into()))
        }
        T::Struct(fields, _) => {
            let fields = fields
                .iter()
                .map(|f| {
                    let name = f
                        .field_name
                        .as_ref()
                        .map(|n| n.value.clone())
                        .ok_or("a ROW field needs a name")?;
                    Ok(Field::new(name, arrow_type(&f.field_type)?, true))
                })
                .collect::<Result<Vec<Field>, String>>()?;
            DataType::Struct(Fields::from(fields))
        }
        other => return Err(format!("type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIDS: &str = "
-- bids, as files
CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT NOT NULL,
    channel VARCHAR,
    url VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    price_eur AS price * 0.908,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND,
    PRIMARY KEY (auction) NOT ENFORCED
) WITH (
    'connector' = 'filesystem',
    'path' = '/tmp/bids',
    'format' = 'csv'
);
SET 'parallelism.default' = '2';
CREATE VIEW cheap AS SELECT auction, price FROM bid WHERE price < 100;
INSERT INTO sink SELECT auction, price FROM cheap;
";

    #[test]
    fn a_flink_script_parses_into_its_statements() {
        let script = parse(BIDS).unwrap();
        assert_eq!(script.len(), 4);
        let insert_line = 1 + BIDS.lines().position(|l| l.starts_with("INSERT")).unwrap() as u64;
        let ScriptStatement::CreateTable(t) = &script[0] else {
            panic!("{script:?}")
        };
        assert_eq!(t.name, "bid");
        assert_eq!(t.at.line, 3);
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "auction",
                "bidder",
                "price",
                "channel",
                "url",
                "date_time",
                "extra"
            ]
        );
        assert_eq!(t.columns[0].data_type, DataType::Int64);
        assert!(!t.columns[2].nullable);
        assert_eq!(t.columns[3].data_type, DataType::Utf8);
        assert_eq!(
            t.columns[5].data_type,
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(t.computed.len(), 1);
        assert_eq!(t.computed[0].0, "price_eur");
        assert_eq!(t.computed[0].1.to_string(), "price * 0.908");
        let (column, expr) = t.watermark.as_ref().unwrap();
        assert_eq!(column, "date_time");
        assert_eq!(expr.to_string(), "date_time - INTERVAL '4' SECOND");
        assert_eq!(t.primary_key, ["auction"]);
        assert_eq!(t.options["connector"], "filesystem");
        assert_eq!(t.options["format"], "csv");
        assert!(matches!(
            &script[1],
            ScriptStatement::Set { key, value } if key == "parallelism.default" && value == "2"
        ));
        assert!(matches!(&script[2], ScriptStatement::CreateView { name, .. } if name == "cheap"));
        assert!(matches!(
            &script[3],
            ScriptStatement::Other { statement, at }
                if matches!(**statement, Statement::Insert(_)) && at.line == insert_line
        ));
    }

    #[test]
    fn errors_point_at_their_line_and_column() {
        let cases = [
            // A type Flink has and Arrow does not map here.
            (
                "CREATE TABLE t (\n  a INT,\n  b GEOGRAPHY\n) WITH ('connector' = 'datagen')",
                (3, 5),
                "GEOGRAPHY",
            ),
            // A watermark on a column the table does not have.
            (
                "\n\nCREATE TABLE t (a INT, WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen')",
                (3, 1),
                "no such column",
            ),
            // sqlparser's own error, with its place.
            ("SELECT a FROM t WHERE", (1, 22), "Expected"),
            // A WITH option that is not a string.
            (
                "CREATE TABLE t (a INT) WITH (\n  'connector' = datagen\n)",
                (2, 17),
                "Expected",
            ),
            // Trailing garbage.
            ("SET 'a' = 'b' 'c'", (1, 15), "unexpected"),
        ];
        for (sql, (line, column), says) in cases {
            let e = parse(sql).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{sql}: {e}");
            assert!(e.message.contains(says), "{sql}: {e}");
        }
    }
}
