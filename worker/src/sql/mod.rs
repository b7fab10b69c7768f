//! Flink SQL on Strom: scripts are parsed by sqlparser (through [`script`], which adds Flink's
//! `CREATE TABLE` clauses) and queries are planned by DataFusion's SQL planner against a catalog of
//! the script's tables and views. The streaming operators that run the plan are Strom's own.

pub mod compile;
pub mod connectors;
mod functions;
mod kernels;
pub mod script;
pub mod temporal;
pub mod tvf;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::TableReference;
use datafusion_common::config::ConfigOptions;
use datafusion_expr::logical_plan::builder::LogicalTableSource;
use datafusion_expr::logical_plan::{TableScan, TableScanBuilder};
use datafusion_expr::planner::ContextProvider;
use datafusion_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use datafusion_optimizer::Analyzer;
use datafusion_sql::planner::SqlToRel;
use datafusion_sql::sqlparser::ast::{Query, SetExpr, Statement};
use datafusion_sql::sqlparser::tokenizer::Location;

pub use script::{ScriptStatement, SqlError, TableDef};
pub use tvf::{WindowKind, WindowTvf};

/// The tables and views a script has declared so far, the windowing TVFs its queries call, and
/// the functions they may use.
pub struct Catalog {
    tables: HashMap<String, TableDef>,
    views: HashMap<String, Arc<LogicalPlan>>,
    /// Windowing TVFs, by number (`__window_N`).
    windows: Vec<WindowTvf>,
    /// Temporal table references (`FOR SYSTEM_TIME AS OF`), by number (`__temporal_N`).
    temporals: Vec<temporal::TemporalTable>,
    functions: Functions,
    options: ConfigOptions,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .field("views", &self.views.keys().collect::<Vec<_>>())
            .field("windows", &self.windows)
            .field("temporals", &self.temporals)
            .finish()
    }
}

/// The scalar, aggregate and window functions queries may call: DataFusion's, by name and alias
/// (the streaming planner takes `ROW_NUMBER()` of the window functions, for Top-N).
#[derive(Clone)]
struct Functions {
    scalar: HashMap<String, Arc<ScalarUDF>>,
    aggregate: HashMap<String, Arc<AggregateUDF>>,
    window: HashMap<String, Arc<WindowUDF>>,
}

impl Functions {
    fn new() -> Self {
        let mut scalar = HashMap::new();
        // Flink's own come last: where a name is in both, Flink's meaning wins.
        for f in datafusion_functions::all_default_functions()
            .into_iter()
            .chain(functions::all())
        {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                scalar.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        let mut aggregate = HashMap::new();
        for f in datafusion_functions_aggregate::all_default_aggregate_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                aggregate.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        let mut window = HashMap::new();
        for f in datafusion_functions_window::all_default_window_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                window.insert(name.to_ascii_lowercase(), f.clone());
            }
        }
        Self {
            scalar,
            aggregate,
            window,
        }
    }
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
    /// The queries of `EXPLAIN` statements (`sink` is `None`).
    pub explains: Vec<Pipeline>,
}

impl Default for Catalog {
    fn default() -> Self {
        let mut options = ConfigOptions::default();
        // `0.908` is a DECIMAL in Flink SQL, not a DOUBLE.
        options.sql_parser.parse_float_as_decimal = true;
        // Identifiers keep their case, as in Flink (`dateTime` is not `datetime`).
        options.sql_parser.enable_ident_normalization = false;
        Self {
            tables: HashMap::new(),
            views: HashMap::new(),
            windows: Vec::new(),
            temporals: Vec::new(),
            functions: Functions::new(),
            options,
        }
    }
}

impl Catalog {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(name)
    }

    /// A view's plan.
    pub fn view(&self, name: &str) -> Option<&Arc<LogicalPlan>> {
        self.views.get(name)
    }

    /// The windowing TVF behind a `__window_N` table.
    pub fn window(&self, table: &str) -> Option<&WindowTvf> {
        self.windows.get(tvf::number_of(table)?)
    }

    /// The table reference behind a `__temporal_N` table.
    pub fn temporal(&self, table: &str) -> Option<&temporal::TemporalTable> {
        self.temporals.get(temporal::number_of(table)?)
    }

    /// The columns of a table or view, as queries see them.
    fn relation_schema(&self, name: &str) -> Result<SchemaRef, String> {
        if let Some(view) = self.views.get(name) {
            return Ok(Arc::new(view.schema().as_arrow().clone()));
        }
        let t = self
            .tables
            .get(name)
            .ok_or_else(|| format!("no table or view named {name}"))?;
        self.table_schema(t).map_err(|e| e.message)
    }

    /// A windowing TVF's columns: its input's, then `window_start`, `window_end`, `window_time`.
    fn window_schema(&self, w: &WindowTvf) -> Result<SchemaRef, SqlError> {
        let input = self
            .relation_schema(&w.input)
            .map_err(|m| SqlError::at(w.at, m))?;
        let time = input.field_with_name(&w.time_column).map_err(|_| {
            SqlError::at(
                w.at,
                format!(
                    "DESCRIPTOR({}): {} has no such column",
                    w.time_column, w.input
                ),
            )
        })?;
        if !matches!(time.data_type(), DataType::Timestamp(_, _)) {
            return Err(SqlError::at(
                w.at,
                format!(
                    "DESCRIPTOR({}): the column is {}, not a time attribute (TIMESTAMP(3))",
                    w.time_column,
                    time.data_type()
                ),
            ));
        }
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in ["window_start", "window_end", "window_time"] {
            if fields.iter().any(|f| f.name() == name) {
                return Err(SqlError::at(
                    w.at,
                    format!("{} has a column named {name} already", w.input),
                ));
            }
        }
        fields.push(Field::new("window_start", ts.clone(), false));
        fields.push(Field::new("window_end", ts.clone(), false));
        fields.push(Field::new("window_time", ts, false));
        Ok(Arc::new(Schema::new(fields)))
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
            let provider = Scope::alone(self, &t.name, scan);
            let sql = format!("SELECT {expr} AS {name} FROM {}", quoted(&t.name));
            let plan = plan_query_text(&provider, &sql, t.at)?;
            let field = plan.schema().field(0);
            fields.push(Field::new(name, field.data_type().clone(), true));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// `SELECT <physical columns>, <computed columns> FROM t` over the table's physical columns:
    /// how the streaming planner computes them.
    pub(crate) fn computed_columns_plan(&self, t: &TableDef) -> Result<LogicalPlan, SqlError> {
        let provider = Scope::alone(self, &t.name, connectors::physical_schema(t));
        let mut items: Vec<String> = t.columns.iter().map(|c| quoted(&c.name)).collect();
        items.extend(
            t.computed
                .iter()
                .map(|(name, e)| format!("{e} AS {}", quoted(name))),
        );
        let sql = format!("SELECT {} FROM {}", items.join(", "), quoted(&t.name));
        let plan = plan_query_text(&provider, &sql, t.at)?;
        Analyzer::new()
            .execute_and_check(plan, &self.options, |_, _| {})
            .map_err(|e| SqlError::at(t.at, e.strip_backtrace()))
    }

    /// Plans one query against the catalog; its windowing TVFs become tables of their own.
    pub fn plan_query(&mut self, query: &Query, at: Location) -> Result<LogicalPlan, SqlError> {
        let mut query = query.clone();
        for w in tvf::extract(&mut query, self.windows.len())? {
            self.window_schema(&w)?;
            self.windows.push(w);
        }
        for t in temporal::extract(&mut query, self.temporals.len())? {
            self.relation_schema(&t.input)
                .map_err(|m| SqlError::at(t.at, m))?;
            self.temporals.push(t);
        }
        let statement = Statement::Query(Box::new(query));
        let plan = SqlToRel::new(&Scope::all(self))
            .sql_statement_to_plan(statement)
            .map_err(|e| SqlError::at(at, e.strip_backtrace()))?;
        // Type coercion (`price * 0.908` is DECIMAL * DECIMAL), as DataFusion's analyzer does it;
        // the plan is not optimized (the streaming planner takes it as written) but for the
        // projections pushed into generator scans.
        let plan = Analyzer::new()
            .execute_and_check(plan, &self.options, |_, _| {})
            .map_err(|e| SqlError::at(at, e.strip_backtrace()))?;
        self.push_projections(plan)
            .map_err(|e| SqlError::at(at, e.strip_backtrace()))
    }

    /// Projection push-down, for connectors that generate columns by name: each scan of such a
    /// table reads only the columns the query reads (by name: any expression of any node, and
    /// the query's own output); the plan's schemas are recomputed above the narrowed scans.
    /// Plans with a node that reads columns other than through its expressions (`DISTINCT`,
    /// `UNION`, ...) are left as they are.
    fn push_projections(&self, plan: LogicalPlan) -> datafusion_common::Result<LogicalPlan> {
        use datafusion_common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
        let mut plain = true;
        let mut used: HashSet<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        plan.apply(|node| {
            plain &= matches!(
                node,
                LogicalPlan::Projection(_)
                    | LogicalPlan::Filter(_)
                    | LogicalPlan::Join(_)
                    | LogicalPlan::SubqueryAlias(_)
                    | LogicalPlan::Aggregate(_)
                    | LogicalPlan::Window(_)
                    | LogicalPlan::TableScan(_)
            );
            for e in node.expressions() {
                used.extend(e.column_refs().into_iter().map(|c| c.name.clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if !plain {
            return Ok(plan);
        }
        plan.transform_up(|node| match node {
            LogicalPlan::TableScan(scan) => match self.narrowed(&scan, &used) {
                Some(columns) => {
                    TableScanBuilder::new(scan.table_name.clone(), scan.source.clone())
                        .with_projection(Some(columns))
                        .with_fetch(scan.fetch)
                        .build()
                        .map(|scan| Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            },
            other => other.recompute_schema().map(Transformed::yes),
        })
        .map(|t| t.data)
    }

    /// The table `name` if a scan of it can take a pushed projection: a table (not a view or a
    /// windowing TVF) without computed columns whose connector generates columns by name.
    pub fn projectable(&self, name: &str) -> Option<&TableDef> {
        if self.views.contains_key(name)
            || self.window(name).is_some()
            || self.temporal(name).is_some()
        {
            return None;
        }
        self.tables
            .get(name)
            .filter(|t| t.computed.is_empty() && connectors::projects_by_name(t))
    }

    /// The columns of `scan` to read, if it is an unprojected scan of a [`projectable`] table
    /// and can read fewer than all.
    ///
    /// [`projectable`]: Self::projectable
    fn narrowed(&self, scan: &TableScan, used: &HashSet<String>) -> Option<Vec<usize>> {
        if scan.projection.is_some() || !scan.filters.is_empty() {
            return None;
        }
        let table = self.projectable(scan.table_name.table())?;
        // The watermark's column is generated anyway (`Compiler::projected_table`).
        let columns: Vec<usize> = (0..table.columns.len())
            .filter(|&i| used.contains(&table.columns[i].name))
            .collect();
        (columns.len() < table.columns.len()).then_some(columns)
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
    let mut explains = Vec::new();
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
                    if !catalog.tables.contains_key(&sink) {
                        return Err(SqlError::at(
                            at,
                            format!("INSERT INTO {sink}: no such table"),
                        ));
                    }
                    let Some(source) = insert.source.as_deref() else {
                        return Err(SqlError::at(at, "INSERT INTO needs a query"));
                    };
                    let plan = catalog.plan_query(source, at)?;
                    let table = &catalog.tables[&sink];
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
                    explains.push(Pipeline {
                        sink: None,
                        plan,
                        at,
                    });
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
        explains,
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

/// What a query is planned against: the catalog, or (for a table's computed columns) one table's
/// columns alone; with the catalog's functions and options either way.
struct Scope<'a> {
    catalog: &'a Catalog,
    /// The only table there is, by name.
    only: Option<(&'a str, Arc<LogicalTableSource>)>,
}

impl<'a> Scope<'a> {
    fn all(catalog: &'a Catalog) -> Self {
        Self {
            catalog,
            only: None,
        }
    }

    /// `table` alone, with these columns.
    fn alone(catalog: &'a Catalog, table: &'a str, columns: SchemaRef) -> Self {
        Self {
            catalog,
            only: Some((table, Arc::new(LogicalTableSource::new(columns)))),
        }
    }
}

impl ContextProvider for Scope<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        let key = name.table();
        if let Some((table, source)) = &self.only {
            return if key == *table {
                Ok(source.clone())
            } else {
                Err(datafusion_common::DataFusionError::Plan(format!(
                    "no table named {name}"
                )))
            };
        }
        let catalog = self.catalog;
        if let Some(w) = catalog.window(key) {
            let schema = catalog
                .window_schema(w)
                .map_err(|e| datafusion_common::DataFusionError::Plan(e.message))?;
            return Ok(Arc::new(LogicalTableSource::new(schema)));
        }
        if let Some(t) = catalog.temporal(key) {
            let schema = catalog
                .relation_schema(&t.input)
                .map_err(datafusion_common::DataFusionError::Plan)?;
            return Ok(Arc::new(LogicalTableSource::new(schema)));
        }
        if let Some(view) = catalog.views.get(key) {
            return Ok(Arc::new(ViewSource(view.clone())));
        }
        let t = catalog.tables.get(key).ok_or_else(|| {
            datafusion_common::DataFusionError::Plan(format!("no table or view named {name}"))
        })?;
        let schema = catalog
            .table_schema(t)
            .map_err(|e| datafusion_common::DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(LogicalTableSource::new(schema)))
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.catalog
            .functions
            .scalar
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.catalog
            .functions
            .aggregate
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.catalog
            .functions
            .window
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.catalog.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.catalog.functions.scalar.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.catalog.functions.aggregate.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.catalog.functions.window.keys().cloned().collect()
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
        assert_eq!(planned.explains.len(), 1);
        let explained = planned.explains[0].plan.display_indent().to_string();
        assert!(explained.contains("Projection"), "{explained}");
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
