//! Flink SQL on Strom: scripts are parsed by sqlparser (through [`script`], which adds Flink's
//! `CREATE TABLE` clauses) and queries are planned by DataFusion's SQL planner against a catalog of
//! the script's tables and views. The streaming operators that run the plan are Strom's own.

pub mod script;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::TableReference;
use datafusion_common::config::ConfigOptions;
use datafusion_expr::logical_plan::builder::LogicalTableSource;
use datafusion_expr::planner::ContextProvider;
use datafusion_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion_sql::planner::SqlToRel;
use datafusion_sql::sqlparser::ast::{Query, SetExpr, Statement};
use datafusion_sql::sqlparser::tokenizer::Location;

pub use script::{ScriptStatement, SqlError, TableDef};

/// The tables and views a script has declared so far.
#[derive(Debug)]
pub struct Catalog {
    tables: HashMap<String, TableDef>,
    views: HashMap<String, Arc<LogicalPlan>>,
    options: ConfigOptions,
}

/// What a script asks to run: each `INSERT INTO` (or a bare `SELECT`) with its plan.
#[derive(Debug)]
pub struct Pipeline {
    /// The sink table, `None` for a bare `SELECT` (printed).
    pub sink: Option<String>,
    pub plan: LogicalPlan,
    pub at: Location,
}

/// A planned script: the catalog it built, its settings, and what it runs.
#[derive(Debug)]
pub struct PlannedScript {
    pub catalog: Catalog,
    pub settings: Vec<(String, String)>,
    pub pipelines: Vec<Pipeline>,
    /// `EXPLAIN` statements, as text.
    pub explained: Vec<String>,
}

impl Default for Catalog {
    fn default() -> Self {
        let mut options = ConfigOptions::default();
        // `0.908` is a DECIMAL in Flink SQL, not a DOUBLE.
        options.sql_parser.parse_float_as_decimal = true;
        Self {
            tables: HashMap::new(),
            views: HashMap::new(),
            options,
        }
    }
}

impl Catalog {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(name)
    }

    /// The schema a table shows to queries: its physical columns, then its computed ones.
    fn table_schema(&self, t: &TableDef) -> Result<SchemaRef, SqlError> {
        let mut fields: Vec<Field> = t
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect();
        for (name, expr) in &t.computed {
            // The type of a computed column is whatever the planner derives for it over the
            // columns before it.
            let scan = Arc::new(Schema::new(fields.clone()));
            let source = Arc::new(LogicalTableSource::new(scan));
            let provider = Single {
                name: &t.name,
                source,
                options: &self.options,
            };
            let sql = format!("SELECT {expr} AS {name} FROM {}", quoted(&t.name));
            let plan = plan_query_text(&provider, &sql, t.at)?;
            let field = plan.schema().field(0);
            fields.push(Field::new(name, field.data_type().clone(), true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Plans one query against the catalog.
    pub fn plan_query(&self, query: &Query, at: Location) -> Result<LogicalPlan, SqlError> {
        let statement = Statement::Query(Box::new(query.clone()));
        SqlToRel::new(self)
            .sql_statement_to_plan(statement)
            .map_err(|e| SqlError::at(at, e.strip_backtrace()))
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn plan_query_text(
    provider: &impl ContextProvider,
    sql: &str,
    at: Location,
) -> Result<LogicalPlan, SqlError> {
    let statements = script::parse(sql)?;
    let Some(ScriptStatement::Other { statement, .. }) = statements.into_iter().next() else {
        return Err(SqlError::at(at, format!("not a query: {sql}")));
    };
    SqlToRel::new(provider)
        .sql_statement_to_plan(*statement)
        .map_err(|e| SqlError::at(at, e.strip_backtrace()))
}

/// Plans a whole script.
pub fn plan_script(text: &str) -> Result<PlannedScript, SqlError> {
    let mut catalog = Catalog::default();
    let mut settings = Vec::new();
    let mut pipelines = Vec::new();
    let mut explained = Vec::new();
    for statement in script::parse(text)? {
        match statement {
            ScriptStatement::CreateTable(t) => {
                if catalog.tables.contains_key(&t.name) || catalog.views.contains_key(&t.name) {
                    return Err(SqlError::at(t.at, format!("{} exists already", t.name)));
                }
                // Computed columns and the watermark are checked now, not when a query reads them.
                catalog.table_schema(&t)?;
                catalog.tables.insert(t.name.clone(), *t);
            }
            ScriptStatement::CreateView { name, query, at } => {
                if catalog.tables.contains_key(&name) || catalog.views.contains_key(&name) {
                    return Err(SqlError::at(at, format!("{name} exists already")));
                }
                let plan = catalog.plan_query(&query, at)?;
                catalog.views.insert(name, Arc::new(plan));
            }
            ScriptStatement::Set { key, value } => settings.push((key, value)),
            ScriptStatement::Other { statement, at } => match *statement {
                Statement::Insert(insert) => {
                    let sink = insert.table.to_string();
                    let Some(table) = catalog.tables.get(&sink) else {
                        return Err(SqlError::at(
                            at,
                            format!("INSERT INTO {sink}: no such table"),
                        ));
                    };
                    let Some(source) = insert.source.as_deref() else {
                        return Err(SqlError::at(at, "INSERT INTO needs a query"));
                    };
                    let plan = catalog.plan_query(source, at)?;
                    let target = catalog.table_schema(table)?;
                    let physical = table.columns.len();
                    if plan.schema().fields().len() != physical {
                        return Err(SqlError::at(
                            at,
                            format!(
                                "INSERT INTO {sink}: the query has {} columns, the table {physical}",
                                plan.schema().fields().len()
                            ),
                        ));
                    }
                    for (got, want) in plan.schema().fields().iter().zip(target.fields()) {
                        if !arrow::compute::can_cast_types(got.data_type(), want.data_type()) {
                            return Err(SqlError::at(
                                at,
                                format!(
                                    "INSERT INTO {sink}: column {} is {}, the query gives {} ({})",
                                    want.name(),
                                    want.data_type(),
                                    got.data_type(),
                                    got.name()
                                ),
                            ));
                        }
                    }
                    pipelines.push(Pipeline {
                        sink: Some(sink),
                        plan,
                        at,
                    });
                }
                Statement::Query(query) => {
                    let plan = catalog.plan_query(&query, at)?;
                    pipelines.push(Pipeline {
                        sink: None,
                        plan,
                        at,
                    });
                }
                Statement::Explain { statement, .. } => {
                    let Statement::Query(query) = *statement else {
                        return Err(SqlError::at(at, "EXPLAIN takes a query"));
                    };
                    let plan = catalog.plan_query(&query, at)?;
                    explained.push(plan.display_indent_schema().to_string());
                }
                other => {
                    return Err(SqlError::at(
                        at,
                        format!("statement not supported: {}", first_words(&other)),
                    ));
                }
            },
        }
    }
    Ok(PlannedScript {
        catalog,
        settings,
        pipelines,
        explained,
    })
}

fn first_words(s: &Statement) -> String {
    s.to_string()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A query is a plain `SELECT` (not a set operation); what the streaming planner takes first.
pub fn is_select(q: &Query) -> bool {
    matches!(*q.body, SetExpr::Select(_))
}

impl ContextProvider for Catalog {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        let key = name.table();
        if let Some(view) = self.views.get(key) {
            return Ok(Arc::new(ViewSource(view.clone())));
        }
        let t = self.tables.get(key).ok_or_else(|| {
            datafusion_common::DataFusionError::Plan(format!("no table or view named {name}"))
        })?;
        let schema = self
            .table_schema(t)
            .map_err(|e| datafusion_common::DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(LogicalTableSource::new(schema)))
    }

    fn get_function_meta(&self, _name: &str) -> Option<Arc<ScalarUDF>> {
        None
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, _name: &str) -> Option<Arc<AggregateUDF>> {
        None
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A view: its plan, inlined where it is read.
struct ViewSource(Arc<LogicalPlan>);

impl TableSource for ViewSource {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.0.schema().as_arrow().clone())
    }

    fn get_logical_plan(&self) -> Option<std::borrow::Cow<'_, LogicalPlan>> {
        Some(std::borrow::Cow::Borrowed(&self.0))
    }
}

/// One table alone: for typing a table's computed columns.
struct Single<'a> {
    name: &'a str,
    source: Arc<LogicalTableSource>,
    options: &'a ConfigOptions,
}

impl ContextProvider for Single<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        if name.table() == self.name {
            Ok(self.source.clone())
        } else {
            Err(datafusion_common::DataFusionError::Plan(format!(
                "no table named {name}"
            )))
        }
    }

    fn get_function_meta(&self, _name: &str) -> Option<Arc<ScalarUDF>> {
        None
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, _name: &str) -> Option<Arc<AggregateUDF>> {
        None
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.options
    }

    fn udf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "
CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP(3),
    price_eur AS price * 0.908,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '/tmp/b', 'format' = 'csv');
CREATE TABLE out (auction BIGINT, price DECIMAL(23, 3)) WITH ('connector' = 'blackhole');
CREATE VIEW cheap AS
  SELECT auction, price_eur, CASE WHEN price > 10 THEN 'high' ELSE 'low' END AS band
  FROM bid WHERE auction % 123 = 0;
INSERT INTO out SELECT auction, price_eur FROM cheap;
EXPLAIN SELECT auction FROM cheap;
";

    #[test]
    fn a_script_plans_through_datafusion() {
        let planned = plan_script(SCRIPT).unwrap();
        let bid = planned.catalog.table("bid").unwrap();
        let schema = planned.catalog.table_schema(bid).unwrap();
        // A literal with a fraction is a DECIMAL, as in Flink.
        assert!(
            matches!(
                schema.field_with_name("price_eur").unwrap().data_type(),
                DataType::Decimal128(_, 3)
            ),
            "{schema:?}"
        );
        assert_eq!(planned.pipelines.len(), 1);
        let p = &planned.pipelines[0];
        assert_eq!(p.sink.as_deref(), Some("out"));
        let text = p.plan.display_indent().to_string();
        assert!(
            text.contains("Filter: bid.auction % Int64(123) = Int64(0)"),
            "{text}"
        );
        assert!(text.contains("TableScan: bid"), "{text}");
        assert_eq!(planned.explained.len(), 1);
        assert!(
            planned.explained[0].contains("Projection"),
            "{}",
            planned.explained[0]
        );
    }

    #[test]
    fn planning_errors_name_the_statement_and_what_is_wrong() {
        let cases = [
            (
                "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\n\nSELECT b FROM t",
                3,
                "b",
            ),
            ("SELECT a FROM nowhere", 1, "nowhere"),
            (
                "CREATE TABLE t (a INT, b AS a + nope) WITH ('connector' = 'datagen')",
                1,
                "nope",
            ),
            (
                "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\nINSERT INTO t SELECT a, a + 1 FROM t",
                2,
                "2 columns",
            ),
            (
                "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\nCREATE TABLE t (b INT)",
                2,
                "exists",
            ),
        ];
        for (sql, line, says) in cases {
            let e = plan_script(sql).unwrap_err();
            assert_eq!(e.line, line, "{sql}: {e}");
            assert!(e.message.contains(says), "{sql}: {e}");
        }
    }
}
