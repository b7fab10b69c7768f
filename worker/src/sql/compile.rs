//! The streaming planner: a script's DataFusion `LogicalPlan`s onto the DataStream API, so that a
//! SQL job is the same logical graph a Rust job would build (and `EXPLAIN` prints that graph).
//!
//! Every stream made here has exactly the columns of the plan node it stands for, in order and of
//! the same types; expressions are DataFusion's physical expressions, bound to column positions,
//! and evaluated batch by batch. What the planner takes today:
//!
//! - table scans (a table's connector, computed columns, `WATERMARK FOR`), views, aliases;
//! - projections and filters (any expression DataFusion can evaluate);
//! - `GROUP BY window_start, window_end[, keys]` over `TUMBLE`, `HOP`, `CUMULATE` and `SESSION`
//!   (with `PARTITION BY`), with `COUNT`, `SUM`, `MIN`, `MAX` and `AVG`: a keyed event-time window
//!   operator; and the same `GROUP BY` of an earlier window aggregation's windows (cascading);
//! - inner equi-joins: a regular join (keyed state per side, `table.exec.state.ttl`);
//! - `GROUP BY` without windows: a group aggregation whose result is a changelog (`COUNT`,
//!   `COUNT(DISTINCT)`, `SUM`, `AVG`, `MIN`, `MAX`, `FILTER (WHERE ..)`), over insert-only or
//!   updating input;
//! - `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` filtered to `rn <= N`: a Top-N (a
//!   deduplication for N = 1), whose result is a changelog;
//! - `UNION ALL`.
//!
//! Anything else is an error that names the plan node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_common::{DFSchema, ScalarValue};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::expr::AggregateFunction;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion_physical_expr::expressions::Column as PhysicalColumn;
use datafusion_physical_expr::utils::collect_columns;
use datafusion_physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion_sql::sqlparser::tokenizer::Location;

use super::connectors::SourceFilter;
use super::script::{SqlError, TableDef};
use super::temporal::TemporalTable;
use super::tvf::{WindowKind, WindowTvf};
use super::{Catalog, PlannedScript, connectors, kernels};
use crate::error::Error;
use crate::operators::aggregate::Agg;
use crate::operators::group_aggregate::{GroupAgg, GroupAggKind, OP_COLUMN};
use crate::operators::over_aggregate::OverFrame;
use crate::operators::top_n::{SortColumn, TopN};
use crate::operators::window::WindowAssigner;
use crate::plan::TimeAttr;
use crate::stream::{DataStream, StreamEnv};
use crate::time::WatermarkStrategy;
use strom_api::EngineConfig;

/// Adds every pipeline of the script to `env`: its sources, operators and sink.
pub fn compile(script: &PlannedScript, env: &StreamEnv) -> Result<(), SqlError> {
    for p in &script.pipelines {
        let c = Compiler {
            catalog: &script.catalog,
            planned: RefCell::default(),
            rank_used: RefCell::default(),
            state_ttl: state_ttl(script)?,
            filters_into_sources: reads_no_event_time(&p.plan, &script.catalog),
            env,
            props: ExecutionProps::new(),
            at: p.at,
        };
        let (stream, changelog) = c.result(&p.plan)?;
        match &p.sink {
            Some(name) => {
                let table = script
                    .catalog
                    .table(name)
                    .ok_or_else(|| SqlError::at(p.at, format!("no table named {name}")))?;
                let mut target = connectors::physical_schema(table);
                if changelog {
                    let mut fields = target.fields().to_vec();
                    fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
                    target = Arc::new(Schema::new(fields));
                }
                let cast = target.clone();
                let rows = stream.map_batches(&format!("to {name}"), target, move |batch| {
                    connectors::cast_to(&batch, &cast)
                });
                connectors::sink(&rows, table, changelog)?;
            }
            None => {
                stream.sink(crate::connectors::sinks::PrintSink);
            }
        }
    }
    Ok(())
}

/// `EXPLAIN`: each explained query's plan as DataFusion planned it, and the Strom job graph it
/// compiles to (with a print sink), as `strom explain` prints a job's.
pub fn explain(script: &PlannedScript, config: &EngineConfig) -> Result<Vec<String>, SqlError> {
    script
        .explains
        .iter()
        .map(|p| {
            let env = StreamEnv::new("explain", config.clone());
            let c = Compiler {
                catalog: &script.catalog,
                planned: RefCell::default(),
                rank_used: RefCell::default(),
                state_ttl: state_ttl(script)?,
                filters_into_sources: reads_no_event_time(&p.plan, &script.catalog),
                env: &env,
                props: ExecutionProps::new(),
                at: p.at,
            };
            c.result(&p.plan)?
                .0
                .sink(crate::connectors::sinks::PrintSink);
            let failed = |e: Error| SqlError::at(p.at, e.to_string());
            let graph = env.build().map_err(failed)?;
            let tasks = crate::plan::physical::plan(&graph).map_err(failed)?;
            Ok(format!(
                "== SQL plan ==\n{}\n== Strom job graph ==\n{}",
                p.plan.display_indent(),
                crate::plan::physical::explain(&graph, &tasks)
            ))
        })
        .collect()
}

/// What a plan node became.
#[derive(Clone)]
enum Planned {
    Stream(DataStream),
    /// A windowing TVF not yet aggregated: its input, and the windows.
    Windows(DataStream, WindowTvf),
    /// The result of a window aggregation, whose windows are still known: a `GROUP BY` of its
    /// `window_start` and `window_end` is a window aggregation again (Flink's cascading window
    /// aggregation).
    Windowed(DataStream, WindowCols),
    /// An updating result (a changelog): the plan node's columns, then [`OP_COLUMN`].
    Changelog(DataStream),
}

/// The window columns of a window aggregation's result, and the slide of its windows.
#[derive(Debug, Clone, Copy)]
struct WindowCols {
    start: usize,
    end: usize,
    slide: i64,
}

/// What a window aggregation aggregates: a windowing TVF, or an earlier window aggregation's
/// windows.
enum WindowSource<'w> {
    Tvf(&'w WindowTvf),
    Cascade(WindowCols),
}

struct Compiler<'a> {
    catalog: &'a Catalog,
    /// Aggregations planned so far, for sub-plan reuse.
    planned: RefCell<HashMap<LogicalPlan, Planned>>,
    /// The columns of a node (by its address) that the projections above it read, handed down a
    /// chain of projections to the filter below them: whether a Top-N's rank is read at all
    /// decides how its changelog is keyed.
    rank_used: RefCell<Option<(*const LogicalPlan, Vec<usize>)>>,
    /// `SET 'table.exec.state.ttl'`: how long a regular join keeps records.
    state_ttl: Option<Duration>,
    /// Whether filters may go into sources: the pipeline keeps no state and reads no event time
    /// ([`reads_no_event_time`]).
    filters_into_sources: bool,
    env: &'a StreamEnv,
    props: ExecutionProps,
    at: Location,
}

/// Whether `plan` is projections and filters over scans of tables (not views, windowing TVFs or
/// versioned tables): nothing in it keeps state or reads event time, so no result depends on the
/// watermark.
fn reads_no_event_time(plan: &LogicalPlan, catalog: &Catalog) -> bool {
    match plan {
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => plan
            .inputs()
            .iter()
            .all(|p| reads_no_event_time(p, catalog)),
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            catalog.table(name).is_some()
                && catalog.view(name).is_none()
                && catalog.window(name).is_none()
                && catalog.temporal(name).is_none()
        }
        _ => false,
    }
}

/// Unique column names for a schema of a plan node (qualifiers dropped; a repeated name gets
/// `#n`), every column nullable.
fn stream_schema(schema: &DFSchema) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let mut name = f.name().clone();
        let mut n = 1;
        while fields.iter().any(|g| g.name() == &name) {
            n += 1;
            name = format!("{}#{n}", f.name());
        }
        fields.push(Field::new(name, f.data_type().clone(), true));
    }
    Arc::new(Schema::new(fields))
}

/// Evaluates `exprs` over a batch into the columns of `schema`.
fn evaluate(
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> crate::error::Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns = exprs
        .iter()
        .zip(schema.fields())
        .map(|(e, f)| {
            let array = e
                .evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| Error::user(e.strip_backtrace()))?;
            if array.data_type() == f.data_type() {
                Ok(array)
            } else {
                Ok(kernels::cast(&array, f.data_type())?)
            }
        })
        .collect::<crate::error::Result<Vec<ArrayRef>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

impl Compiler<'_> {
    fn err(&self, message: impl Into<String>) -> SqlError {
        SqlError::at(self.at, message)
    }

    fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
        create_physical_expr(e, schema, &self.props, &PhysicalPlanningContext::default())
            .and_then(|p| kernels::fuse(p, schema.as_arrow()))
            .map_err(|x| self.err(format!("{e}: {}", x.strip_backtrace())))
    }

    /// A plan node that must be a plain stream.
    fn stream(&self, plan: &LogicalPlan) -> Result<DataStream, SqlError> {
        self.planned_stream(self.plan(plan)?)
    }

    /// A query's result, and whether it is a changelog.
    fn result(&self, plan: &LogicalPlan) -> Result<(DataStream, bool), SqlError> {
        match self.plan(plan)? {
            Planned::Changelog(s) => Ok((s, true)),
            planned => self.planned_stream(planned).map(|s| (s, false)),
        }
    }

    fn planned_stream(&self, planned: Planned) -> Result<DataStream, SqlError> {
        match planned {
            Planned::Stream(s) | Planned::Windowed(s, _) => Ok(s),
            Planned::Changelog(_) => Err(self.err(
                "an updating result (of a GROUP BY without windows) goes only through projections, \
                 filters and group aggregations to a sink that takes updates (print, blackhole) \
                 for now",
            )),
            Planned::Windows(s, w) => self.window_rows(&s, &w),
        }
    }

    /// A windowing TVF's rows: each input row once per window that holds it, with the window's
    /// `window_start`, `window_end` and `window_time` (`window_end - 1 ms`, its time attribute).
    /// Sessions are known only when they close: a SESSION TVF is taken by a window aggregation
    /// only.
    fn window_rows(&self, input: &DataStream, w: &WindowTvf) -> Result<DataStream, SqlError> {
        if let WindowKind::Session { .. } = w.kind {
            return Err(SqlError::at(
                w.at,
                "a SESSION TVF's rows are known only when the sessions close: it is taken only \
                 by GROUP BY window_start, window_end (window aggregation)",
            ));
        }
        let time = input.schema().index_of(&w.time_column).map_err(|_| {
            SqlError::at(
                w.at,
                format!("the TVF's input has no column {}", w.time_column),
            )
        })?;
        let assigner = tvf_assigner(&w.kind);
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
        let mut fields: Vec<Field> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in ["window_start", "window_end", "window_time"] {
            fields.push(Field::new(name, ts.clone(), false));
        }
        let schema = Arc::new(Schema::new(fields));
        let target = schema.clone();
        let mut rows = input.map_batches("window rows", schema, move |batch| {
            let times = crate::time::event_time_values(batch.column(time).as_ref())?;
            let (mut take, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
            let mut windows = Vec::new();
            for (row, &t) in times.iter().enumerate() {
                assigner.assign(t, &mut windows);
                for w in &windows {
                    take.push(u32::try_from(row).unwrap_or(u32::MAX));
                    starts.push(w.start);
                    ends.push(w.end);
                }
            }
            let indices = arrow::array::UInt32Array::from(take);
            let mut columns = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let window_times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
            for values in [starts, ends, window_times] {
                columns.push(
                    Arc::new(arrow::array::TimestampMillisecondArray::from(values)) as ArrayRef,
                );
            }
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        });
        // The rows' time is their window's last millisecond, as Flink's window_time.
        let window_end = rows.schema().fields().len() - 2;
        rows.time = Some(TimeAttr {
            column: rows.schema().field(window_end).name().clone(),
            offset: -1,
        });
        Ok(rows)
    }

    /// Plans `plan`. An aggregation that occurs twice in the query (equal plans, as the two sides of
    /// q5's join) is planned once and its result feeds both consumers, as Flink's sub-plan reuse
    /// (`table.optimizer.reuse-sub-plan-enabled`, on by default) has it: the state and the work
    /// are not doubled.
    fn plan(&self, plan: &LogicalPlan) -> Result<Planned, SqlError> {
        if !matches!(plan, LogicalPlan::Aggregate(_)) {
            return self.plan_node(plan);
        }
        if let Some(planned) = self.planned.borrow().get(plan) {
            return Ok(planned.clone());
        }
        let planned = self.plan_node(plan)?;
        self.planned
            .borrow_mut()
            .insert(plan.clone(), planned.clone());
        Ok(planned)
    }

    fn plan_node(&self, plan: &LogicalPlan) -> Result<Planned, SqlError> {
        match plan {
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input),
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                if let (Some(columns), Some(table)) =
                    (&scan.projection, self.catalog.projectable(name))
                {
                    return Ok(Planned::Stream(self.projected_table(table, columns, None)?));
                }
                if let Some(t) = self.catalog.temporal(name) {
                    return Err(SqlError::at(
                        t.at,
                        format!(
                            "{} FOR SYSTEM_TIME AS OF: a versioned table is read only as the right \
                             side of a join",
                            t.input
                        ),
                    ));
                }
                let planned = if let Some(w) = self.catalog.window(name) {
                    let input = self.relation(&w.input)?;
                    Planned::Windows(input, w.clone())
                } else {
                    Planned::Stream(self.relation(name)?)
                };
                match (&scan.projection, planned) {
                    (Some(columns), Planned::Stream(s) | Planned::Windowed(s, _)) => {
                        let names: Vec<String> = columns
                            .iter()
                            .map(|&i| s.schema().field(i).name().clone())
                            .collect();
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        Ok(Planned::Stream(s.select(&names)))
                    }
                    (Some(_), Planned::Windows(_, w)) => Err(SqlError::at(
                        w.at,
                        "a projected windowing TVF scan is not supported",
                    )),
                    (Some(_), Planned::Changelog(_)) => {
                        Err(self.err("a projected scan of an updating result"))
                    }
                    (None, planned) => Ok(planned),
                }
            }
            LogicalPlan::Projection(p) => {
                // Which columns of the node below (through aliases, which keep the columns where
                // they are) are read: by the expressions of this projection that are read
                // themselves (the node above said, if it is a projection too).
                let read: Option<Vec<usize>> = match self.rank_used.borrow().as_ref() {
                    Some((at, used)) if std::ptr::eq(*at, plan) => Some(used.clone()),
                    _ => None,
                };
                let mut below = p.input.as_ref();
                while let LogicalPlan::SubqueryAlias(a) = below {
                    below = a.input.as_ref();
                }
                if matches!(below, LogicalPlan::Filter(_) | LogicalPlan::Projection(_)) {
                    let used = p
                        .expr
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| read.as_ref().is_none_or(|r| r.contains(i)))
                        .flat_map(|(_, e)| e.column_refs())
                        .filter_map(|c| p.input.schema().index_of_column(c).ok())
                        .collect();
                    *self.rank_used.borrow_mut() = Some((below as *const _, used));
                }
                let planned = self.plan(&p.input)?;
                let windows = match &planned {
                    Planned::Windowed(_, w) => Some(*w),
                    _ => None,
                };
                let input = match planned {
                    Planned::Stream(s) | Planned::Windowed(s, _) => s,
                    Planned::Changelog(s) => {
                        return Ok(Planned::Changelog(self.project_changelog(p, &s)?));
                    }
                    Planned::Windows(s, w) => self.window_rows(&s, &w)?,
                };
                let projected = self.project(
                    &input,
                    &p.expr,
                    p.input.schema(),
                    &stream_schema(&p.schema),
                    "project",
                )?;
                // The windows stay known while both their columns are projected as they are.
                let position = |column: usize| {
                    p.expr.iter().position(|e| {
                        matches!(unalias(e), Expr::Column(c) if p.input.schema().index_of_column(c).ok() == Some(column))
                    })
                };
                Ok(
                    match windows.and_then(|w| Some((w, position(w.start)?, position(w.end)?))) {
                        Some((w, start, end)) => Planned::Windowed(
                            projected,
                            WindowCols {
                                start,
                                end,
                                slide: w.slide,
                            },
                        ),
                        None => Planned::Stream(projected),
                    },
                )
            }
            LogicalPlan::Join(j) => self.join(j, None),
            // A WHERE over an inner join is part of its condition; over an outer join it filters
            // the join's result.
            LogicalPlan::Filter(f)
                if matches!(f.input.as_ref(), LogicalPlan::Join(j)
                    if j.join_type == datafusion_expr::JoinType::Inner) =>
            {
                let LogicalPlan::Join(j) = f.input.as_ref() else {
                    return Err(self.err("a filter over a join lost its join"));
                };
                self.join(j, Some(&f.predicate))
            }
            LogicalPlan::Filter(f) => {
                if let Some(top) = self.top_n(plan, f)? {
                    return Ok(top);
                }
                if let Some(s) = self.filter_into_source(f)? {
                    return Ok(Planned::Stream(s));
                }
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let name = format!("{}", f.predicate);
                let apply = |s: &DataStream| {
                    let p = predicate.clone();
                    s.filter_batches(&name, move |batch| {
                        let v = p
                            .evaluate(batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .map_err(|e| Error::user(e.strip_backtrace()))?;
                        Ok(v.as_boolean_opt()
                            .ok_or_else(|| Error::user("a filter gave no booleans"))?
                            .clone())
                    })
                };
                match self.plan(&f.input)? {
                    Planned::Stream(s) => Ok(Planned::Stream(apply(&s))),
                    Planned::Windowed(s, w) => Ok(Planned::Windowed(apply(&s), w)),
                    Planned::Changelog(s) => Ok(Planned::Changelog(apply(&s))),
                    Planned::Windows(s, w) => {
                        // Window columns come last: a predicate over the input's alone runs
                        // before the windows.
                        let inputs = s.schema().fields().len();
                        let uses_window = f.predicate.column_refs().iter().any(|c| {
                            f.input
                                .schema()
                                .index_of_column(c)
                                .is_ok_and(|i| i >= inputs)
                        });
                        if uses_window {
                            return Err(SqlError::at(
                                w.at,
                                "a WHERE on window_start, window_end or window_time is not \
                                 supported",
                            ));
                        }
                        Ok(Planned::Windows(apply(&s), w))
                    }
                }
            }
            LogicalPlan::Aggregate(a) => match self.plan(&a.input)? {
                Planned::Windows(s, w) => self.window_aggregate(&s, WindowSource::Tvf(&w), a),
                Planned::Windowed(s, w) => {
                    let grouped = |column: usize| {
                        a.group_expr.iter().any(|g| {
                            matches!(unalias(g), Expr::Column(c) if a.input.schema().index_of_column(c).ok() == Some(column))
                        })
                    };
                    if grouped(w.start) && grouped(w.end) {
                        self.window_aggregate(&s, WindowSource::Cascade(w), a)
                    } else {
                        self.group_aggregate(&s, false, a)
                    }
                }
                Planned::Stream(s) => self.group_aggregate(&s, false, a),
                Planned::Changelog(s) => self.group_aggregate(&s, true, a),
            },
            LogicalPlan::Window(w) => self.over_aggregate(w),
            LogicalPlan::Union(u) => {
                let schema = stream_schema(&u.schema);
                let mut streams = Vec::new();
                for input in &u.inputs {
                    let s = self.stream(input)?;
                    let target = schema.clone();
                    streams.push(s.map_batches("union input", schema.clone(), move |batch| {
                        connectors::cast_to(&batch, &target)
                    }));
                }
                let (first, rest) = streams
                    .split_first()
                    .ok_or_else(|| self.err("UNION of nothing"))?;
                Ok(Planned::Stream(first.union(rest)))
            }
            other => Err(self.err(format!(
                "not supported in a streaming query yet: {}",
                other
                    .display()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
            ))),
        }
    }

    /// A projection of a changelog: the row kind goes along, the last column, after every column
    /// the expressions read.
    fn project_changelog(
        &self,
        p: &datafusion_expr::logical_plan::Projection,
        s: &DataStream,
    ) -> Result<DataStream, SqlError> {
        let mut fields = stream_schema(&p.schema).fields().to_vec();
        fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        let out = Arc::new(Schema::new(fields));
        let exprs = p
            .expr
            .iter()
            .map(|e| self.physical(e, p.input.schema()))
            .collect::<Result<Vec<_>, _>>()?;
        let target = out.clone();
        let values = Arc::new(Schema::new(out.fields()[..out.fields().len() - 1].to_vec()));
        Ok(s.map_batches("project", out, move |batch| {
            let mut columns = evaluate(&exprs, &batch, &values)?.columns().to_vec();
            columns.push(batch.column(batch.num_columns() - 1).clone());
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        }))
    }

    /// One aggregate call (`COUNT`, `SUM`, `AVG`, `MIN`, `MAX`, with `DISTINCT` in `COUNT` and
    /// `FILTER (WHERE ...)`) as the group aggregation's accumulators take it: its function, the
    /// expression its argument column is computed by, and how its result is finished.
    fn aggregate_call(
        &self,
        e: &Expr,
        function: &str,
        args: &[Expr],
        distinct: bool,
        filter: Option<&Expr>,
        schema: &DFSchema,
    ) -> Result<AggregateCall, SqlError> {
        let err = |m: String| self.err(m);
        let name = function.to_ascii_lowercase();
        let arg = args.first();
        #[expect(deprecated, reason = "COUNT(*) still plans to a wildcard argument")]
        let counts_rows = name == "count"
            && match arg {
                None | Some(Expr::Wildcard { .. }) => true,
                Some(Expr::Literal(v, _)) => !v.is_null(),
                _ => false,
            };
        let mut kind = match name.as_str() {
            "count" if counts_rows => GroupAggKind::CountRows,
            "count" => GroupAggKind::Count,
            "sum" => GroupAggKind::Sum,
            "avg" => GroupAggKind::Avg,
            "min" => GroupAggKind::Min,
            "max" => GroupAggKind::Max,
            _ => return Err(err(format!("aggregate {e} is not supported yet"))),
        };
        let mut arg: Option<Expr> = if counts_rows { None } else { arg.cloned() };
        if distinct {
            if kind != GroupAggKind::Count {
                return Err(err(format!(
                    "{e}: DISTINCT is supported in COUNT(DISTINCT x) only, for now"
                )));
            }
            kind = GroupAggKind::CountDistinct;
        }
        if let Some(condition) = filter {
            // `agg(x) FILTER (WHERE c)` is `agg(CASE WHEN c THEN x END)`: the rows where c
            // does not hold have no value; `COUNT(*) FILTER` counts the rows where it holds.
            let value = arg
                .clone()
                .unwrap_or(Expr::Literal(ScalarValue::Int64(Some(1)), None));
            arg = Some(
                datafusion_expr::when(condition.clone(), value)
                    .end()
                    .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?,
            );
            if kind == GroupAggKind::CountRows {
                kind = GroupAggKind::Count;
            }
        }
        let arg_type = match &arg {
            Some(x) => Some(
                x.get_type(schema)
                    .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?,
            ),
            None => None,
        };
        let text = arg_type.as_ref().is_some_and(is_text)
            && matches!(
                kind,
                GroupAggKind::Min | GroupAggKind::Max | GroupAggKind::CountDistinct
            );
        if kind == GroupAggKind::CountDistinct
            && !(text || arg_type.as_ref().is_some_and(DataType::is_integer))
        {
            return Err(err(format!(
                "{e}: COUNT(DISTINCT x) of an x that is neither an integer nor a string is \
                 not supported yet"
            )));
        }
        let decimal = matches!(arg_type, Some(DataType::Decimal128(..)));
        let is_float = matches!(
            arg_type,
            Some(DataType::Float16 | DataType::Float32 | DataType::Float64)
        );
        if let Some(t) = &arg_type
            && !(t.is_integer() || decimal || is_float || text)
            && !matches!(kind, GroupAggKind::Count | GroupAggKind::CountDistinct)
        {
            return Err(err(format!("{e}: {name} of {t} is not supported yet")));
        }
        if decimal && kind == GroupAggKind::Avg {
            return Err(err(format!("{e}: AVG of a DECIMAL is not supported yet")));
        }
        let arg = match arg {
            Some(x) if kind == GroupAggKind::Count => Some(
                // Only whether it is null counts: 1 where it is not, NULL where it is.
                datafusion_expr::when(x.is_null(), Expr::Literal(ScalarValue::Int64(None), None))
                    .otherwise(Expr::Literal(ScalarValue::Int64(Some(1)), None))
                    .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?,
            ),
            other if kind != GroupAggKind::CountRows => other,
            _ => None,
        };
        let counted = matches!(kind, GroupAggKind::Count | GroupAggKind::CountRows);
        Ok(AggregateCall {
            kind,
            arg,
            unscaled: decimal && !counted,
            text,
            result_type: match kind {
                GroupAggKind::Count | GroupAggKind::CountRows | GroupAggKind::CountDistinct => {
                    DataType::Int64
                }
                _ if text => DataType::Utf8,
                _ if is_float => DataType::Float64,
                _ => DataType::Int64,
            },
            finish: if decimal && !counted {
                Finish::Unscaled
            } else {
                Finish::AsIs
            },
        })
    }

    /// `agg(x) OVER (PARTITION BY .. ORDER BY <time> <frame>)`: every aggregate of the node must
    /// share one window (as Flink requires), ordered by the input's event time, ascending, with a
    /// frame that ends at the current row. The node's columns are its input's and the aggregates.
    fn over_aggregate(
        &self,
        w: &datafusion_expr::logical_plan::Window,
    ) -> Result<Planned, SqlError> {
        use datafusion_expr::{WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition};
        let err = |m: String| self.err(m);
        let input = match self.plan(&w.input)? {
            Planned::Stream(s) | Planned::Windowed(s, _) => s,
            Planned::Changelog(_) => {
                return Err(err(
                    "an OVER aggregation takes an insert-only input, and this one is updated \
                     (Flink rejects it too)"
                        .into(),
                ));
            }
            Planned::Windows(..) => {
                return Err(err(
                    "an OVER aggregation over a windowing TVF's rows is not supported yet".into(),
                ));
            }
        };
        let Some(time) = input.time.clone() else {
            return Err(err(
                "an OVER aggregation is ordered by event time, and its input has no time \
                 attribute (a WATERMARK)"
                    .into(),
            ));
        };
        let schema = w.input.schema();
        let columns = schema.fields().len();
        let mut window: Option<(&[Expr], OverFrame)> = None;
        let mut pre_exprs: Vec<Expr> = Vec::new();
        let mut unscaled: Vec<bool> = Vec::new();
        let mut aggs = Vec::new();
        let mut result_types = Vec::new();
        let mut finish = Vec::new();
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = unalias(e) else {
                return Err(err(format!("{e} is not a window function")));
            };
            let WindowFunctionDefinition::AggregateUDF(udf) = &f.fun else {
                return Err(err(format!(
                    "{e}: only aggregates (COUNT, SUM, AVG, MIN, MAX) take an OVER window here; \
                     ROW_NUMBER() does when filtered to rn <= N (a Top-N)"
                )));
            };
            let p = &f.params;
            if p.filter.is_some() {
                return Err(err(format!(
                    "{e}: FILTER in OVER aggregates is not supported (nor by Flink)"
                )));
            }
            let ordered_by_time = match p.order_by.as_slice() {
                [sort] if sort.asc => match &sort.expr {
                    Expr::Column(c) => schema
                        .index_of_column(c)
                        .ok()
                        .is_some_and(|i| input.schema().field(i).name() == &time.column),
                    _ => false,
                },
                _ => false,
            };
            if !ordered_by_time {
                return Err(err(format!(
                    "{e}: an OVER window must be ORDER BY the time attribute {} ascending",
                    time.column
                )));
            }
            let frame = &p.window_frame;
            if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
                return Err(err(format!(
                    "{e}: an OVER window must end at the CURRENT ROW"
                )));
            }
            let preceding = match &frame.start_bound {
                WindowFrameBound::Preceding(v) if v.is_null() => None,
                WindowFrameBound::Preceding(v) => Some(v),
                _ => return Err(err(format!("{e}: the frame must start PRECEDING"))),
            };
            let over = match frame.units {
                WindowFrameUnits::Rows => OverFrame::Rows(match preceding {
                    None => None,
                    Some(v) => Some(
                        v.cast_to(&DataType::UInt64)
                            .ok()
                            .and_then(|v| match v {
                                ScalarValue::UInt64(n) => n,
                                _ => None,
                            })
                            .ok_or_else(|| err(format!("{e}: ROWS {v} PRECEDING")))?,
                    ),
                }),
                WindowFrameUnits::Range => OverFrame::Range(match preceding {
                    None => None,
                    Some(v) => Some(
                        interval_ms(v).ok_or_else(|| err(format!("{e}: RANGE {v} PRECEDING")))?,
                    ),
                }),
                WindowFrameUnits::Groups => {
                    return Err(err(format!("{e}: GROUPS frames are not supported")));
                }
            };
            match window {
                None => window = Some((&p.partition_by, over)),
                Some((partition, frame))
                    if partition == p.partition_by.as_slice() && frame == over => {}
                Some(_) => {
                    return Err(err(format!(
                        "{e}: every OVER aggregate of a query must have the same window, as in Flink"
                    )));
                }
            }
            let call = self.aggregate_call(e, udf.name(), &p.args, p.distinct, None, schema)?;
            let input_column = call.arg.map(|x| {
                pre_exprs.push(x);
                unscaled.push(call.unscaled);
                columns + pre_exprs.len() - 1
            });
            aggs.push(GroupAgg {
                kind: call.kind,
                input: input_column,
                text: call.text,
            });
            result_types.push(call.result_type);
            finish.push(call.finish);
        }
        let Some((partition, frame)) = window else {
            return Err(err("an OVER node without aggregates".into()));
        };
        // The operator's input: the node's input columns, the partition key, the arguments.
        let mut keys: Vec<Expr> = partition.to_vec();
        if keys.is_empty() {
            keys.push(Expr::Literal(ScalarValue::Int32(Some(0)), None));
        }
        let key_count = keys.len();
        let extra: Vec<Expr> = keys.into_iter().chain(pre_exprs).collect();
        let mut fields: Vec<Field> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut evaluated_fields = Vec::new();
        let mut physical = Vec::new();
        let mut targets = Vec::new();
        for (i, e) in extra.iter().enumerate() {
            let data_type = e
                .get_type(schema)
                .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?;
            let (name, target) = if i < key_count {
                (format!("__key{i}"), data_type.clone())
            } else if matches!(
                data_type,
                DataType::Float16 | DataType::Float32 | DataType::Float64
            ) {
                (format!("__arg{i}"), DataType::Float64)
            } else if is_text(&data_type) {
                (format!("__arg{i}"), DataType::Utf8)
            } else {
                (format!("__arg{i}"), DataType::Int64)
            };
            evaluated_fields.push(Field::new(&name, data_type, true));
            fields.push(Field::new(&name, target.clone(), true));
            targets.push(target);
            physical.push(self.physical(e, schema)?);
        }
        // Argument columns shift by the keys.
        for a in &mut aggs {
            if let Some(i) = &mut a.input {
                *i += key_count;
            }
        }
        let evaluated = Arc::new(Schema::new(evaluated_fields));
        let pre_schema = Arc::new(Schema::new(fields));
        let target = pre_schema.clone();
        let unscaled_args = unscaled.clone();
        let pre = input.map_batches("over input", pre_schema.clone(), move |batch| {
            let values = evaluate(&physical, &batch, &evaluated)?;
            let mut out = batch.columns().to_vec();
            for (i, column) in values.columns().iter().enumerate() {
                let arg = i.checked_sub(key_count);
                out.push(if arg.is_some_and(|a| unscaled_args[a]) {
                    Arc::new(unscaled_values(column)?) as ArrayRef
                } else if column.data_type() != &targets[i] {
                    arrow::compute::cast(column, &targets[i])?
                } else {
                    column.clone()
                });
            }
            Ok(RecordBatch::try_new(target.clone(), out)?)
        });
        let key_names: Vec<String> = (0..key_count).map(|i| format!("__key{i}")).collect();
        let over = pre
            .key_by(&str_refs(&key_names))
            .over_aggregate(frame, aggs, &result_types);
        // To the node's columns: its input's, then the aggregates.
        let out = stream_schema(&w.schema);
        let target = out.clone();
        let skip = extra.len();
        let result = over.map_batches("over result", out, move |batch| {
            let mut columns: Vec<ArrayRef> = batch.columns()[..columns].to_vec();
            let results = batch.columns()[columns.len() + skip..].iter();
            for ((column, how), field) in
                results.zip(&finish).zip(&target.fields()[columns.len()..])
            {
                columns.push(match how {
                    Finish::Unscaled => from_unscaled(column, field)?,
                    _ => column.clone(),
                });
            }
            connectors::columns_as(columns, &target)
        });
        Ok(Planned::Stream(result))
    }

    /// Flink's Top-N, if `f` is one: a filter `rn <= N` (or `rn < N`, `rn = 1`) of the
    /// `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` of a window node below it (through
    /// projections and aliases that keep `rn` as it is). It becomes a keyed Top-N whose changelog
    /// has the window node's columns (the rank among them); the projections above the window are
    /// applied to it, and the filter needs nothing more. `None` if `f` is another filter.
    fn top_n(
        &self,
        filter: &LogicalPlan,
        f: &datafusion_expr::logical_plan::Filter,
    ) -> Result<Option<Planned>, SqlError> {
        use datafusion_expr::utils::split_conjunction;
        use datafusion_expr::{BinaryExpr, Operator};
        let err = |m: String| self.err(m);
        // Projections and aliases down to the window node, and where each column of the
        // filter's input comes from in the node below.
        let mut chain: Vec<&LogicalPlan> = Vec::new();
        let mut node = f.input.as_ref();
        let w = loop {
            match node {
                LogicalPlan::Projection(p) => {
                    chain.push(node);
                    node = &p.input;
                }
                LogicalPlan::SubqueryAlias(a) => {
                    chain.push(node);
                    node = &a.input;
                }
                LogicalPlan::Window(w) => break w,
                _ => return Ok(None),
            }
        };
        let below = |mut column: usize| -> Option<usize> {
            for n in &chain {
                match n {
                    LogicalPlan::Projection(p) => match unalias(p.expr.get(column)?) {
                        Expr::Column(c) => column = p.input.schema().index_of_column(c).ok()?,
                        _ => return None,
                    },
                    LogicalPlan::SubqueryAlias(_) => {}
                    _ => return None,
                }
            }
            Some(column)
        };
        // Anything but one ROW_NUMBER() is an OVER aggregation, filtered.
        let [expr] = w.window_expr.as_slice() else {
            return Ok(None);
        };
        let Expr::WindowFunction(function) = unalias(expr) else {
            return Ok(None);
        };
        if function.fun.name() != "row_number" {
            return Ok(None);
        }
        let rank_column = w.input.schema().fields().len();
        // Whether the rank is read above the filter (a projection right above it says; else the
        // filter is the query's result, rank and all). Without it, Flink's Top-N changelog
        // inserts and deletes rows, with it, it updates ranks: a sink keyed by other columns
        // than the rank needs the former.
        let rank = match self.rank_used.borrow().as_ref() {
            Some((at, used)) if std::ptr::eq(*at, filter) => {
                used.iter().any(|&c| below(c) == Some(rank_column))
            }
            _ => true,
        };
        // The rank's bound: every conjunct compares the rank with a number.
        let mut limit: Option<usize> = None;
        for conjunct in split_conjunction(&f.predicate) {
            let bound = match conjunct {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let mut left = left.as_ref();
                    while let Expr::Cast(c) = left {
                        left = &c.expr;
                    }
                    let is_rank = match left {
                        Expr::Column(c) => {
                            f.input.schema().index_of_column(c).ok().and_then(below)
                                == Some(rank_column)
                        }
                        _ => false,
                    };
                    let mut right = right.as_ref();
                    while let Expr::Cast(c) = right {
                        right = &c.expr;
                    }
                    let number = match right {
                        Expr::Literal(v, _) => {
                            v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                                ScalarValue::Int64(Some(n)) => Some(n),
                                _ => None,
                            })
                        }
                        _ => None,
                    };
                    match (is_rank, op, number) {
                        (true, Operator::LtEq, Some(n)) if n >= 1 => Some(n as usize),
                        (true, Operator::Lt, Some(n)) if n >= 2 => Some(n as usize - 1),
                        (true, Operator::Eq, Some(1)) => Some(1),
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some(bound) = bound else {
                return Err(err(format!(
                    "{conjunct}: a filter of a ROW_NUMBER() is supported as rn <= N, rn < N or \
                     rn = 1 (a Top-N), and nothing else beside it, for now"
                )));
            };
            limit = Some(limit.map_or(bound, |l| l.min(bound)));
        }
        let Some(limit) = limit else {
            return Ok(None);
        };
        let planned = self.plan(&w.input)?;
        // The window columns of a windowing TVF's rows or of a window aggregation's result, and
        // the TVF's time column.
        let (window, tvf_time) = match &planned {
            Planned::Windows(s, tvf) => {
                let n = s.schema().fields().len();
                (Some((n, n + 1)), Some(tvf.time_column.clone()))
            }
            Planned::Windowed(_, c) => (Some((c.start, c.end)), None),
            _ => (None, None),
        };
        let (input, updating) = match planned {
            Planned::Changelog(s) => (s, true),
            planned => (self.planned_stream(planned)?, false),
        };
        let schema = w.input.schema();
        let column_of = |e: &Expr, what: &str| match unalias(e) {
            Expr::Column(c) => schema
                .index_of_column(c)
                .map_err(|x| err(format!("{e}: {}", x.strip_backtrace()))),
            _ => Err(err(format!(
                "{e}: a Top-N's {what} is supported on columns only, for now"
            ))),
        };
        let key_columns = function
            .params
            .partition_by
            .iter()
            .map(|e| column_of(e, "PARTITION BY"))
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<String> = key_columns
            .iter()
            .map(|&i| input.schema().field(i).name().clone())
            .collect();
        // Flink's window Top-N: partitioned by the window, it goes out once when the window
        // closes.
        let per_window = window
            .is_some_and(|(start, end)| key_columns.contains(&start) && key_columns.contains(&end));
        let order = function
            .params
            .order_by
            .iter()
            .map(|s| {
                Ok(SortColumn {
                    column: column_of(&s.expr, "ORDER BY")?,
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        if order.is_empty() {
            return Err(err(format!("{expr}: a Top-N needs an ORDER BY")));
        }
        // Flink's deduplication keeping the last row by event time: the newest row wins ties.
        let time = input.time_column();
        let new_wins_ties = limit == 1
            && matches!(order.as_slice(), [o] if o.descending
                && [time, tvf_time.as_deref()].contains(&Some(input.schema().field(o.column).name().as_str())));
        if per_window {
            let ranked = input.key_by(&str_refs(&keys)).window_top_n(TopN {
                order,
                limit,
                rank: true,
                new_wins_ties,
            });
            let named = stream_schema(&w.schema);
            let target = named.clone();
            let mut s = ranked.map_batches("rank", named, move |batch| {
                Ok(RecordBatch::try_new(
                    target.clone(),
                    batch.columns().to_vec(),
                )?)
            });
            for n in chain.iter().rev() {
                if let LogicalPlan::Projection(p) = n {
                    s = self.project(
                        &s,
                        &p.expr,
                        p.input.schema(),
                        &stream_schema(&p.schema),
                        "project",
                    )?;
                }
            }
            return Ok(Some(Planned::Stream(s)));
        }
        if updating {
            // The row columns, then the row kind; a constant key (no PARTITION BY) goes after.
            let width = input.schema().fields().len() - 1;
            let keyed = if keys.is_empty() {
                let constant = Expr::Literal(ScalarValue::Int32(Some(0)), None);
                let mut with_row_kind = schema.as_ref().clone();
                with_row_kind.merge(
                    &DFSchema::try_from(Schema::new(vec![Field::new(
                        OP_COLUMN,
                        DataType::Int8,
                        false,
                    )]))
                    .map_err(|e| err(e.strip_backtrace()))?,
                );
                let (s, names, _) = self.with_keys(&input, &[constant], &with_row_kind, "top")?;
                s.key_by(&str_refs(&names))
            } else {
                input.key_by(&str_refs(&keys))
            };
            let ranked = keyed.retract_top_n(
                TopN {
                    order,
                    limit,
                    rank,
                    new_wins_ties: false,
                },
                width,
            );
            let mut fields = stream_schema(&w.schema).fields().to_vec();
            fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
            let named = Arc::new(Schema::new(fields));
            let target = named.clone();
            let mut s = ranked.map_batches("rank", named, move |batch| {
                let mut columns = batch.columns().to_vec();
                if !rank {
                    columns.insert(width, unread_rank(batch.num_rows()));
                }
                Ok(RecordBatch::try_new(target.clone(), columns)?)
            });
            for n in chain.iter().rev() {
                if let LogicalPlan::Projection(p) = n {
                    s = self.project_changelog(p, &s)?;
                }
            }
            return Ok(Some(Planned::Changelog(s)));
        }
        // Without PARTITION BY, one Top-N of everything: keyed by a constant column, appended
        // (after the columns the sort reads) and dropped again.
        let (keyed, keys, extra) = if keys.is_empty() {
            let constant = Expr::Literal(ScalarValue::Int32(Some(0)), None);
            self.with_keys(&input, &[constant], schema, "top")?
        } else {
            (input.clone(), keys, 0)
        };
        let width = input.schema().fields().len();
        let ranked = keyed.key_by(&str_refs(&keys)).top_n(TopN {
            order,
            limit,
            rank,
            new_wins_ties,
        });
        // To the window node's names, then up the chain.
        let mut fields = stream_schema(&w.schema).fields().to_vec();
        fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        let named = Arc::new(Schema::new(fields));
        let target = named.clone();
        let mut s = ranked.map_batches("rank", named, move |batch| {
            let mut columns = batch.columns()[..width].to_vec();
            if !rank {
                columns.push(unread_rank(batch.num_rows()));
            }
            columns.extend_from_slice(&batch.columns()[width + extra..]);
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        });
        for n in chain.iter().rev() {
            if let LogicalPlan::Projection(p) = n {
                s = self.project_changelog(p, &s)?;
            }
        }
        Ok(Some(Planned::Changelog(s)))
    }

    /// An inner join (with `filter`, the predicate of a `WHERE` right above it, as part of its
    /// condition): the equalities between an expression of the left side and one of the right are
    /// its keys, and the rest of the condition filters the joined rows. It becomes a regular join
    /// (Flink SQL's, with the script's `table.exec.state.ttl`).
    fn join(
        &self,
        j: &datafusion_expr::logical_plan::Join,
        filter: Option<&Expr>,
    ) -> Result<Planned, SqlError> {
        use datafusion_expr::utils::split_conjunction;
        use datafusion_expr::{BinaryExpr, JoinType, Operator};
        let outer = match j.join_type {
            JoinType::Inner => [false, false],
            JoinType::Left => [true, false],
            JoinType::Right => [false, true],
            JoinType::Full => [true, true],
            other => {
                return Err(self.err(format!(
                    "{other} joins are not supported (inner, left, right and full joins are)"
                )));
            }
        };
        let is_outer = outer.iter().any(|o| *o);
        let left_width = j.left.schema().fields().len();
        // Which side an expression reads: Some(true) left only, Some(false) right only.
        let side = |e: &Expr| -> Option<bool> {
            let refs = e.column_refs();
            let indices: Vec<usize> = refs
                .iter()
                .map(|c| j.schema.index_of_column(c).ok())
                .collect::<Option<_>>()?;
            if indices.is_empty() {
                None
            } else if indices.iter().all(|&i| i < left_width) {
                Some(true)
            } else if indices.iter().all(|&i| i >= left_width) {
                Some(false)
            } else {
                None
            }
        };
        let mut keys: Vec<(Expr, Expr)> = j.on.clone();
        let mut rest: Vec<Expr> = Vec::new();
        let conjuncts = j.filter.iter().chain(filter).flat_map(split_conjunction);
        for c in conjuncts {
            if let Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) = c
            {
                match (side(left), side(right)) {
                    (Some(true), Some(false)) => {
                        keys.push((left.as_ref().clone(), right.as_ref().clone()));
                        continue;
                    }
                    (Some(false), Some(true)) => {
                        keys.push((right.as_ref().clone(), left.as_ref().clone()));
                        continue;
                    }
                    _ => {}
                }
            }
            rest.push(c.clone());
        }
        // A condition on one side alone filters that side before the join.
        let mut before: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
        rest.retain(|c| match side(c) {
            Some(true) => {
                before[0].push(c.clone());
                false
            }
            Some(false) => {
                before[1].push(c.clone());
                false
            }
            None => true,
        });
        if keys.is_empty() {
            return Err(self.err(
                "a join needs an equality between a column of each side (cross joins and joins \
                 on other conditions alone are not supported)",
            ));
        }
        if let Some((scan, versioned)) = self.temporal_scan(&j.right) {
            return self.temporal_join(j, (scan, versioned), keys, rest, before);
        }
        if is_outer && (!rest.is_empty() || before.iter().any(|b| !b.is_empty())) {
            return Err(self.err(format!(
                "{} joins with conditions besides equalities of the two sides are not \
                 supported yet",
                j.join_type
            )));
        }
        let [left_before, right_before] = before;
        let left = self.filtered(self.stream(&j.left)?, left_before, j.left.schema())?;
        let right = self.filtered(self.stream(&j.right)?, right_before, j.right.schema())?;
        let interval = if is_outer {
            None
        } else {
            interval_bounds(&mut rest, &j.schema, &left, &right)
                .or_else(|| equal_times(&keys, &j.schema, &left, &right))
        };
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = keys.into_iter().unzip();
        let (left, left_names, left_extra) =
            self.with_keys(&left, &left_keys, j.left.schema(), "left")?;
        let (right, right_names, right_extra) =
            self.with_keys(&right, &right_keys, j.right.schema(), "right")?;
        let left_keyed = left.key_by(&str_refs(&left_names));
        let right_keyed = right.key_by(&str_refs(&right_names));
        let mut joined = match interval {
            Some((lower, upper)) => left_keyed.interval_join(&right_keyed, lower, upper),
            None => {
                let mut options =
                    crate::operators::regular_join::RegularJoin::new().outer(outer[0], outer[1]);
                if let Some(ttl) = self.state_ttl {
                    options = options.ttl(ttl);
                }
                left_keyed.regular_join(&right_keyed, options)
            }
        };
        // To the plan's columns (without the key columns computed for the join), then the row
        // kind of an outer join's changelog.
        let left_fields = left.schema().fields().len() - left_extra;
        let right_fields = right.schema().fields().len() - right_extra;
        let mut kept: Vec<usize> = (0..left_fields)
            .chain((0..right_fields).map(|i| left.schema().fields().len() + i))
            .collect();
        let mut out_fields = stream_schema(&j.schema).fields().to_vec();
        if is_outer {
            kept.push(joined.schema().fields().len() - 1);
            out_fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        }
        let out = Arc::new(Schema::new(out_fields));
        let target = out.clone();
        joined = joined.map_batches("join result", out, move |batch| {
            let columns = kept.iter().map(|&i| batch.column(i).clone()).collect();
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        });
        if is_outer {
            return Ok(Planned::Changelog(joined));
        }
        Ok(Planned::Stream(self.filtered(joined, rest, &j.schema)?))
    }

    /// The scan of a `FOR SYSTEM_TIME AS OF` table under `plan` (perhaps aliased), if it is one.
    fn temporal_scan<'p>(
        &self,
        plan: &'p LogicalPlan,
    ) -> Option<(&'p datafusion_expr::logical_plan::TableScan, &TemporalTable)> {
        match plan {
            LogicalPlan::SubqueryAlias(a) => self.temporal_scan(&a.input),
            LogicalPlan::TableScan(scan) => {
                Some((scan, self.catalog.temporal(scan.table_name.table())?))
            }
            _ => None,
        }
    }

    /// Flink SQL's event-time temporal join: `j`'s right side is the versioned table `versioned`
    /// (scanned by `scan`); `keys` are the join's equalities (left, right), `rest` its other
    /// conditions and `before` the conditions on one side alone.
    fn temporal_join(
        &self,
        j: &datafusion_expr::logical_plan::Join,
        (scan, versioned): (&datafusion_expr::logical_plan::TableScan, &TemporalTable),
        keys: Vec<(Expr, Expr)>,
        rest: Vec<Expr>,
        [left_before, right_before]: [Vec<Expr>; 2],
    ) -> Result<Planned, SqlError> {
        use crate::operators::temporal_join::TemporalJoin;
        use datafusion_expr::JoinType;
        let err = |m: String| SqlError::at(versioned.at, m);
        let name = &versioned.input;
        let outer = match j.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => {
                return Err(err(format!(
                    "a temporal join (FOR SYSTEM_TIME AS OF) is an inner or a LEFT join, not \
                     {other}"
                )));
            }
        };
        if !right_before.is_empty() || (outer && !(rest.is_empty() && left_before.is_empty())) {
            return Err(err(
                "a temporal join takes conditions besides the key equalities only on the left \
                 side of an inner join, for now"
                    .into(),
            ));
        }
        // The versioned side: a table with a primary key and an event-time attribute.
        let table = self.catalog.table(name).ok_or_else(|| {
            err(format!(
                "{name} is a view: a temporal join reads a table with a PRIMARY KEY and a \
                 watermark (versioned views are not supported yet)"
            ))
        })?;
        if table.primary_key.is_empty() {
            return Err(err(format!(
                "{name} has no PRIMARY KEY: a temporal join's versioned table needs one"
            )));
        }
        let mut right = self.relation(name)?;
        if right.time.is_none() {
            return Err(err(format!(
                "{name} has no watermark: a temporal join's versioned table needs an event-time \
                 attribute"
            )));
        }
        if let Some(columns) = &scan.projection {
            let names: Vec<String> = columns
                .iter()
                .map(|&i| right.schema().field(i).name().clone())
                .collect();
            right = right.select(&str_refs(&names));
        }
        let right_columns: Vec<String> = keys
            .iter()
            .filter_map(|(_, r)| match unalias(r) {
                Expr::Column(c) => Some(c.name.clone()),
                _ => None,
            })
            .collect();
        if let Some(missing) = table
            .primary_key
            .iter()
            .find(|k| !right_columns.contains(k))
        {
            return Err(err(format!(
                "the join condition must equal {name}'s primary key, but says nothing of {missing}"
            )));
        }
        // The left side's time attribute picks the versions.
        let left = self.filtered(self.stream(&j.left)?, left_before, j.left.schema())?;
        let time = versioned.time.join(".");
        let (qualifier, column) = match versioned.time.as_slice() {
            [column] => (None, column),
            [.., qualifier, column] => (Some(qualifier), column),
            [] => return Err(err("FOR SYSTEM_TIME AS OF needs a column".into())),
        };
        let time_index = (0..j.left.schema().fields().len())
            .find(|&i| {
                let (q, f) = j.left.schema().qualified_field(i);
                f.name() == column
                    && qualifier
                        .is_none_or(|want| q.is_some_and(|q| q.table().eq_ignore_ascii_case(want)))
            })
            .ok_or_else(|| {
                err(format!(
                    "FOR SYSTEM_TIME AS OF {time}: no such column on the left"
                ))
            })?;
        let time_name = left.schema().field(time_index).name().clone();
        if left.time.as_ref().map(|t| &t.column) != Some(&time_name) {
            return Err(err(format!(
                "FOR SYSTEM_TIME AS OF {time}: not the left side's event-time attribute (a \
                 processing-time temporal join needs a lookup source, and Flink's filesystem \
                 connector is none)"
            )));
        }
        let (left_keys, right_keys): (Vec<Expr>, Vec<Expr>) = keys.into_iter().unzip();
        let (left, left_names, left_extra) =
            self.with_keys(&left, &left_keys, j.left.schema(), "left")?;
        let (right, right_names, right_extra) =
            self.with_keys(&right, &right_keys, j.right.schema(), "right")?;
        let options = if outer {
            TemporalJoin::left_outer()
        } else {
            TemporalJoin::inner()
        };
        let joined = left
            .key_by(&str_refs(&left_names))
            .temporal_join(&right.key_by(&str_refs(&right_names)), options);
        // To the plan's columns, without the key columns computed for the join.
        let left_fields = left.schema().fields().len() - left_extra;
        let right_fields = right.schema().fields().len() - right_extra;
        let kept: Vec<usize> = (0..left_fields)
            .chain((0..right_fields).map(|i| left.schema().fields().len() + i))
            .collect();
        let out = stream_schema(&j.schema);
        let target = out.clone();
        let joined = joined.map_batches("join result", out, move |batch| {
            let columns = kept.iter().map(|&i| batch.column(i).clone()).collect();
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        });
        Ok(Planned::Stream(self.filtered(joined, rest, &j.schema)?))
    }

    /// `input` (whose plan schema is `schema`) with the rows where all `conditions` hold.
    fn filtered(
        &self,
        input: DataStream,
        conditions: Vec<Expr>,
        schema: &DFSchema,
    ) -> Result<DataStream, SqlError> {
        let Some(predicate) = conditions.into_iter().reduce(Expr::and) else {
            return Ok(input);
        };
        let p = self.physical(&predicate, schema)?;
        Ok(input.filter_batches(&format!("{predicate}"), move |batch| {
            let v = p
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|e| Error::user(e.strip_backtrace()))?;
            Ok(v.as_boolean_opt()
                .ok_or_else(|| Error::user("a condition gave no booleans"))?
                .clone())
        }))
    }

    /// One side of a join with its key columns: their names, and how many columns were added to
    /// hold keys that are not plain columns (computed, or cast to the other side's type).
    fn with_keys(
        &self,
        input: &DataStream,
        keys: &[Expr],
        schema: &DFSchema,
        side: &str,
    ) -> Result<(DataStream, Vec<String>, usize), SqlError> {
        let columns: Option<Vec<String>> = keys
            .iter()
            .map(|k| match unalias(k) {
                Expr::Column(c) => schema
                    .index_of_column(c)
                    .ok()
                    .map(|i| input.schema().field(i).name().clone()),
                _ => None,
            })
            .collect();
        if let Some(names) = columns {
            return Ok((input.clone(), names, 0));
        }
        let width = input.schema().fields().len();
        let mut exprs: Vec<Expr> = (0..width)
            .map(|i| Expr::Column(datafusion_common::Column::from(schema.qualified_field(i))))
            .collect();
        let mut fields: Vec<Field> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut names = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let name = format!("__{side}_key{i}");
            let data_type = k
                .get_type(schema)
                .map_err(|x| self.err(format!("{k}: {}", x.strip_backtrace())))?;
            fields.push(Field::new(&name, data_type, true));
            exprs.push(k.clone());
            names.push(name);
        }
        let out = Arc::new(Schema::new(fields));
        let s = self.project(input, &exprs, schema, &out, &format!("{side} join keys"))?;
        Ok((s, names, keys.len()))
    }

    /// `exprs` over `input` (whose plan schema is `schema`), as a stream of `out`.
    fn project(
        &self,
        input: &DataStream,
        exprs: &[Expr],
        schema: &DFSchema,
        out: &SchemaRef,
        name: &str,
    ) -> Result<DataStream, SqlError> {
        let physical = exprs
            .iter()
            .map(|e| self.physical(e, schema))
            .collect::<Result<Vec<_>, _>>()?;
        let target = out.clone();
        let mut s = input.map_batches(name, out.clone(), move |batch| {
            evaluate(&physical, &batch, &target)
        });
        // Event time survives a projection that keeps its column (perhaps renamed), and only then.
        s.time = input.time.as_ref().and_then(|t| {
            let index = input.schema().index_of(&t.column).ok()?;
            let kept = exprs.iter().position(|e| {
                matches!(unalias(e), Expr::Column(c) if schema.index_of_column(c).ok() == Some(index))
            })?;
            Some(TimeAttr {
                column: out.field(kept).name().clone(),
                offset: t.offset,
            })
        });
        Ok(s)
    }

    /// A table (through its connector, computed columns and watermark) or a view.
    fn relation(&self, name: &str) -> Result<DataStream, SqlError> {
        if let Some(view) = self.catalog.view(name) {
            return self.stream(view);
        }
        let table = self
            .catalog
            .table(name)
            .ok_or_else(|| self.err(format!("no table or view named {name}")))?;
        self.table(table, None)
    }

    /// A scan of `columns` (indices into the table's columns) with the projection pushed into
    /// the connector (Flink's projection push-down): the source generates only those columns and
    /// the watermark's.
    fn projected_table(
        &self,
        table: &TableDef,
        columns: &[usize],
        filter: Option<&SourceFilter>,
    ) -> Result<DataStream, SqlError> {
        let names: Vec<&str> = columns
            .iter()
            .filter_map(|&i| table.columns.get(i).map(|c| c.name.as_str()))
            .collect();
        let watermark = table.watermark.as_ref().map(|(column, _)| column.as_str());
        let mut narrowed = table.clone();
        narrowed
            .columns
            .retain(|c| names.contains(&c.name.as_str()) || watermark == Some(c.name.as_str()));
        let s = self.table(&narrowed, filter)?;
        let generated: Vec<&str> = narrowed.columns.iter().map(|c| c.name.as_str()).collect();
        Ok(if generated == names {
            s
        } else {
            s.select(&names)
        })
    }

    /// A WHERE directly over a projected scan of a table whose connector generates its rows
    /// (`nexmark`), evaluated in the source: the columns the predicate reads are generated for
    /// every row, the others only for the rows kept (Flink's filter push-down). Only in a
    /// pipeline where no operator reads event time ([`Compiler::filters_into_sources`]): the
    /// source's watermark then advances by the rows kept alone, which changes no result there.
    fn filter_into_source(
        &self,
        f: &datafusion_expr::logical_plan::Filter,
    ) -> Result<Option<DataStream>, SqlError> {
        let mut input = f.input.as_ref();
        while let LogicalPlan::SubqueryAlias(a) = input {
            input = a.input.as_ref();
        }
        let LogicalPlan::TableScan(scan) = input else {
            return Ok(None);
        };
        let (Some(columns), Some(table)) = (
            &scan.projection,
            self.catalog.projectable(scan.table_name.table()),
        ) else {
            return Ok(None);
        };
        if !self.filters_into_sources {
            return Ok(None);
        }
        // The predicate over a batch of just the columns it reads, in the scan's order.
        let predicate = self.physical(&f.predicate, f.input.schema())?;
        let mut read: Vec<usize> = collect_columns(&predicate)
            .iter()
            .map(|c| c.index())
            .collect();
        read.sort_unstable();
        read.dedup();
        let predicate = predicate
            .transform(|e| {
                Ok(match e.downcast_ref::<PhysicalColumn>() {
                    Some(c) => {
                        let at = read.iter().position(|&i| i == c.index()).unwrap_or(0);
                        Transformed::yes(
                            Arc::new(PhysicalColumn::new(c.name(), at)) as Arc<dyn PhysicalExpr>
                        )
                    }
                    None => Transformed::no(e),
                })
            })
            .map_err(|e| self.err(e.strip_backtrace()))?
            .data;
        let names = read
            .iter()
            .map(|&i| {
                columns
                    .get(i)
                    .and_then(|&c| table.columns.get(c))
                    .map(|c| c.name.clone())
                    .ok_or_else(|| self.err("a filter reads a column its scan lacks"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = SourceFilter {
            columns: names,
            predicate,
            text: f.predicate.to_string(),
        };
        self.projected_table(table, columns, Some(&filter))
            .map(Some)
    }

    /// A table's stream; with `filter`, of the rows it keeps (see [`Compiler::filter_into_source`]).
    fn table(
        &self,
        table: &TableDef,
        filter: Option<&SourceFilter>,
    ) -> Result<DataStream, SqlError> {
        let watermark = match &table.watermark {
            Some((column, expr)) => Some(WatermarkStrategy::bounded_out_of_orderness(
                column.clone(),
                Duration::from_millis(watermark_bound(column, expr).map_err(|m| {
                    SqlError::at(table.at, format!("WATERMARK FOR {column} AS {expr}: {m}"))
                })?),
            )),
            None => None,
        };
        // A watermark on a physical column goes into a source with splits (Flink's watermark
        // push-down): one watermark per split, not one over their interleaving.
        let push_down = watermark
            .clone()
            .filter(|w| table.computed.iter().all(|(name, _)| *name != w.column));
        let (mut s, pushed) = connectors::source(self.env, table, push_down, filter)?;
        if !table.computed.is_empty() {
            // `SELECT <physical columns>, <computed expressions> FROM t`, planned by DataFusion over
            // the physical columns and evaluated here.
            let plan = self.catalog.computed_columns_plan(table)?;
            let LogicalPlan::Projection(p) = &plan else {
                return Err(SqlError::at(
                    table.at,
                    "computed columns did not plan to a projection",
                ));
            };
            s = self.project(
                &s,
                &p.expr,
                p.input.schema(),
                &stream_schema(&p.schema),
                &format!("{} computed columns", table.name),
            )?;
        }
        if let Some(strategy) = watermark.filter(|_| !pushed) {
            s = s.assign_timestamps_and_watermarks(strategy);
        }
        Ok(s)
    }

    /// `GROUP BY [keys,] window_start, window_end` over a TUMBLE, HOP or SESSION, or over an
    /// earlier window aggregation's windows: a keyed window operator.
    fn window_aggregate(
        &self,
        input: &DataStream,
        source: WindowSource<'_>,
        a: &datafusion_expr::logical_plan::Aggregate,
    ) -> Result<Planned, SqlError> {
        let at = match &source {
            WindowSource::Tvf(w) => w.at,
            WindowSource::Cascade(_) => self.at,
        };
        let err = |m: String| SqlError::at(at, m);
        let schema = a.input.schema();
        let inputs = input.schema().fields().len();
        let column_index = |e: &Expr| match unalias(e) {
            Expr::Column(c) => schema.index_of_column(c).ok(),
            _ => None,
        };
        // The time the windows are over: a TVF's time attribute, or the earlier windows' ends
        // (their last millisecond).
        let time = match &source {
            WindowSource::Tvf(w) => {
                let time = input.time_column().map(str::to_owned);
                if time.as_deref() != Some(w.time_column.as_str()) {
                    return Err(err(format!(
                        "DESCRIPTOR({}) is not a time attribute of {}: declare WATERMARK FOR {} on \
                         the table{}",
                        w.time_column,
                        w.input,
                        w.time_column,
                        time.map_or(String::new(), |t| format!(" (its time attribute is {t})"))
                    )));
                }
                TimeAttr {
                    column: w.time_column.clone(),
                    offset: 0,
                }
            }
            WindowSource::Cascade(_) => input.time.clone().ok_or_else(|| {
                err("the windows of the aggregated window aggregation lost their time".into())
            })?,
        };
        let assigner = match &source {
            WindowSource::Tvf(w) => tvf_assigner(&w.kind),
            // Each earlier window ends on a multiple of its slide: the tumbling window of one
            // slide that holds its last millisecond fires when the watermark passes it, and the
            // window's own start and end are keys.
            WindowSource::Cascade(w) => {
                WindowAssigner::tumbling(Duration::from_millis(w.slide as u64))
            }
        };
        // What each GROUP BY expression is: a key, or one of the window columns.
        enum Group {
            Key(usize),
            Window(usize),
        }
        let mut keys: Vec<Expr> = Vec::new();
        let mut groups = Vec::new();
        for g in &a.group_expr {
            let window_column = match &source {
                WindowSource::Tvf(_) => {
                    column_index(g).filter(|&i| i >= inputs).map(|i| i - inputs)
                }
                WindowSource::Cascade(_) => None,
            };
            match window_column {
                Some(i) => groups.push(Group::Window(i)),
                None => {
                    groups.push(Group::Key(keys.len()));
                    keys.push(g.clone());
                }
            }
        }
        let has = |i: usize| {
            groups
                .iter()
                .any(|g| matches!(g, Group::Window(j) if *j == i))
        };
        // Where the result's window_start and window_end are, among the GROUP BY expressions.
        let window_position = |which: usize| match &source {
            WindowSource::Tvf(_) => groups
                .iter()
                .position(|g| matches!(g, Group::Window(j) if *j == which)),
            WindowSource::Cascade(w) => {
                let column = if which == 0 { w.start } else { w.end };
                a.group_expr
                    .iter()
                    .position(|g| column_index(g) == Some(column))
            }
        };
        if let WindowSource::Tvf(w) = &source {
            if !(has(0) && has(1)) {
                return Err(err(
                    "a window aggregation groups by window_start and window_end".into(),
                ));
            }
            if let WindowKind::Session { .. } = w.kind {
                // Sessions are per partition: the keys are the PARTITION BY columns.
                let mut key_columns: Vec<String> = keys
                    .iter()
                    .filter_map(|k| column_index(k).map(|i| schema.field(i).name().clone()))
                    .collect();
                key_columns.sort();
                let mut partition = w.partition.clone();
                partition.sort();
                if key_columns.len() != keys.len() || key_columns != partition {
                    return Err(err(format!(
                        "a SESSION window aggregation groups by its PARTITION BY columns ({}) \
                         and the window columns, and by nothing else",
                        w.partition.join(", ")
                    )));
                }
            }
        }
        if keys.is_empty() {
            keys.push(Expr::Literal(ScalarValue::Int32(Some(0)), None));
        }
        // The window operator's input: keys, aggregate arguments, the time column.
        let mut pre_exprs = keys.clone();
        let mut aggs = Vec::new();
        // How each aggregate's result is finished: AVG of integers is an integer in Flink (the
        // quotient rounded towards zero); SUM, MIN and MAX of decimals run on their unscaled
        // values (exact) and become decimals again.
        let mut finish = Vec::new();
        // The aggregate arguments that are decimals, by position among `pre_exprs`.
        let mut unscaled = vec![false; keys.len()];
        for (j, e) in a.aggr_expr.iter().enumerate() {
            let out = format!("__agg{j}");
            let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(e) else {
                return Err(err(format!("{e} is not an aggregate function")));
            };
            let name = func.name().to_ascii_lowercase();
            if !params.order_by.is_empty()
                || (params.distinct && !matches!(name.as_str(), "count" | "min" | "max"))
                || (params.filter.is_some() && !matches!(name.as_str(), "count" | "min" | "max"))
            {
                return Err(err(format!(
                    "{e}: ORDER BY in aggregates, and DISTINCT or FILTER but in COUNT, MIN and \
                     MAX, are not supported in window aggregations yet"
                )));
            }
            // `FILTER (WHERE c)`: the argument where `c` holds, null elsewhere (which the
            // aggregates skip).
            let filtered;
            let arg = match &params.filter {
                Some(condition) => {
                    #[expect(deprecated, reason = "COUNT(*) still plans to a wildcard argument")]
                    let value = match params.args.first() {
                        None | Some(Expr::Wildcard { .. }) => {
                            Expr::Literal(ScalarValue::Int64(Some(1)), None)
                        }
                        Some(x) => x.clone(),
                    };
                    filtered = Expr::Case(datafusion_expr::Case::new(
                        None,
                        vec![(condition.clone(), Box::new(value))],
                        None,
                    ));
                    Some(&filtered)
                }
                None => params.args.first(),
            };
            let decimal =
                arg.is_some_and(|x| matches!(x.get_type(schema), Ok(DataType::Decimal128(..))));
            let mut input_column = |pre: &mut Vec<Expr>, x: Expr| {
                pre.push(x);
                unscaled.push(decimal);
                format!("__arg{}", pre.len() - 1)
            };
            if decimal && !matches!(name.as_str(), "sum" | "min" | "max" | "count") {
                return Err(err(format!(
                    "{e}: {name} of a DECIMAL is not supported yet"
                )));
            }
            let agg = match (name.as_str(), arg) {
                ("count", Some(x)) if params.distinct => {
                    // The set of values seen: an accumulator of its own.
                    pre_exprs.push(x.clone());
                    unscaled.push(false);
                    Agg::udf(
                        Arc::new(CountDistinct {
                            column: pre_exprs.len() - 1,
                        }),
                        &out,
                    )
                }
                ("count", None) => Agg::count(&out),
                ("count", Some(Expr::Literal(v, _))) if !v.is_null() => Agg::count(&out),
                #[expect(deprecated, reason = "COUNT(*) still plans to a wildcard argument")]
                ("count", Some(Expr::Wildcard { .. })) => Agg::count(&out),
                ("count", Some(x)) => {
                    // COUNT(x) counts the rows where x is not null.
                    let one_if_set = Expr::Cast(datafusion_expr::Cast::new(
                        Box::new(x.clone().is_not_null()),
                        DataType::Int64,
                    ));
                    pre_exprs.push(one_if_set);
                    unscaled.push(false);
                    Agg::sum(&format!("__arg{}", pre_exprs.len() - 1), &out)
                }
                ("sum", Some(x)) => Agg::sum(&input_column(&mut pre_exprs, x.clone()), &out),
                ("min", Some(x)) => Agg::min(&input_column(&mut pre_exprs, x.clone()), &out),
                ("max", Some(x)) => Agg::max(&input_column(&mut pre_exprs, x.clone()), &out),
                ("avg", Some(x)) => Agg::avg(&input_column(&mut pre_exprs, x.clone()), &out),
                _ => return Err(err(format!("aggregate {e} is not supported yet"))),
            };
            let integer = arg.is_some_and(|x| x.get_type(schema).is_ok_and(|t| t.is_integer()));
            finish.push(match name.as_str() {
                "avg" if integer => Finish::TruncateMean,
                "sum" | "min" | "max" if decimal => Finish::Unscaled,
                _ => Finish::AsIs,
            });
            aggs.push(agg);
        }
        if aggs.is_empty() {
            // `GROUP BY` alone (distinct rows per window): the window operator needs an aggregate;
            // a count it is, left out of the result (`finish` has no entry for it).
            aggs.push(Agg::count("__rows"));
        }
        let key_count = keys.len();
        let mut fields: Vec<Field> = Vec::new();
        let mut physical = Vec::new();
        for (i, e) in pre_exprs.iter().enumerate() {
            let name = if i < key_count {
                format!("__key{i}")
            } else {
                format!("__arg{i}")
            };
            let data_type = e
                .get_type(schema)
                .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?;
            fields.push(Field::new(name, data_type, true));
            physical.push(self.physical(e, schema)?);
        }
        // What the expressions give (decimals as decimals); the operator gets their unscaled
        // values.
        let evaluated = Arc::new(Schema::new(fields.clone()));
        for (f, u) in fields.iter_mut().zip(&unscaled) {
            if *u {
                *f = Field::new(f.name(), DataType::Int64, true);
            }
        }
        // Expressions over the TVF's columns read only the input's (the window columns come
        // after them), so they evaluate on the input's batches.
        let time_index = input
            .schema()
            .index_of(&time.column)
            .map_err(|x| err(x.to_string()))?;
        fields.push(input.schema().field(time_index).as_ref().clone());
        let pre_schema = Arc::new(Schema::new(fields));
        let target = pre_schema.clone();
        let mut pre = input.map_batches("window input", pre_schema.clone(), move |batch| {
            let mut out = evaluate(&physical, &batch, &evaluated)?.columns().to_vec();
            for (column, u) in out.iter_mut().zip(&unscaled) {
                if *u {
                    *column = Arc::new(unscaled_values(column)?);
                }
            }
            out.push(batch.column(time_index).clone());
            Ok(RecordBatch::try_new(target.clone(), out)?)
        });
        pre.time = Some(time);
        let key_names: Vec<String> = (0..key_count).map(|i| format!("__key{i}")).collect();
        let key_refs: Vec<&str> = key_names.iter().map(String::as_str).collect();
        let windowed = pre.key_by(&key_refs).window(assigner).aggregate(&aggs);
        // To the Aggregate's columns: the GROUP BY expressions in order, then the aggregates.
        let out = stream_schema(&a.schema);
        let target = out.clone();
        let window_start = key_count;
        let (start, end) = (window_position(0), window_position(1));
        let mut result = windowed.map_batches("window result", out.clone(), move |batch| {
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
            for g in &groups {
                columns.push(match g {
                    Group::Key(i) => batch.column(*i).clone(),
                    Group::Window(0) => batch.column(window_start).clone(),
                    Group::Window(1) => batch.column(window_start + 1).clone(),
                    Group::Window(_) => {
                        // window_time: the last millisecond of the window.
                        let end = batch
                            .column(window_start + 1)
                            .as_primitive::<TimestampMillisecondType>();
                        let time: arrow::array::PrimitiveArray<TimestampMillisecondType> =
                            arrow::compute::kernels::arity::unary(end, |t| t - 1);
                        Arc::new(time) as ArrayRef
                    }
                });
            }
            let results = batch.columns()[window_start + 2..].iter().zip(&finish);
            for ((column, how), field) in results.zip(&target.fields()[groups.len()..]) {
                columns.push(match how {
                    Finish::AsIs => column.clone(),
                    Finish::TruncateMean => {
                        let mean = column.as_primitive::<arrow::datatypes::Float64Type>();
                        let whole: arrow::array::Float64Array =
                            arrow::compute::kernels::arity::unary(mean, f64::trunc);
                        Arc::new(whole) as ArrayRef
                    }
                    Finish::Unscaled => from_unscaled(column, field)?,
                });
            }
            connectors::columns_as(columns, &target)
        });
        // Results carry the window's last millisecond as their event time.
        result.time = end.map(|i| TimeAttr {
            column: out.field(i).name().clone(),
            offset: -1,
        });
        let slide = match &source {
            WindowSource::Tvf(w) => match w.kind {
                WindowKind::Tumble { size } => Some(size),
                WindowKind::Hop { slide, .. } => Some(slide),
                // Session windows end anywhere: no cascading over them.
                WindowKind::Session { .. } | WindowKind::Cumulate { .. } => None,
            },
            WindowSource::Cascade(w) => Some(w.slide),
        };
        Ok(match (start, end, slide) {
            (Some(start), Some(end), Some(slide)) => {
                Planned::Windowed(result, WindowCols { start, end, slide })
            }
            _ => Planned::Stream(result),
        })
    }
}

impl Compiler<'_> {
    /// `GROUP BY` without windows (Flink's group aggregation): a changelog of each key's
    /// result. `changelog`: the input is one itself (its last column is [`OP_COLUMN`]).
    fn group_aggregate(
        &self,
        input: &DataStream,
        changelog: bool,
        a: &datafusion_expr::logical_plan::Aggregate,
    ) -> Result<Planned, SqlError> {
        let err = |m: String| self.err(m);
        let schema = a.input.schema();
        let mut keys: Vec<Expr> = a.group_expr.clone();
        let global = keys.is_empty();
        if global {
            keys.push(Expr::Literal(ScalarValue::Int32(Some(0)), None));
        }
        let mut pre_exprs = keys.clone();
        // Per aggregate: how its argument is taken (unscaled decimal or not), its function, and
        // whether it is computed in floating point.
        let mut unscaled = vec![false; keys.len()];
        let mut aggs = Vec::new();
        let mut result_types = Vec::new();
        let mut finish = Vec::new();
        for e in &a.aggr_expr {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(e) else {
                return Err(err(format!("{e} is not an aggregate function")));
            };
            if !params.order_by.is_empty() {
                return Err(err(format!(
                    "{e}: ORDER BY in aggregates is not supported yet"
                )));
            }
            let call = self.aggregate_call(
                e,
                func.name(),
                &params.args,
                params.distinct,
                params.filter.as_deref(),
                schema,
            )?;
            let input = call.arg.map(|x| {
                pre_exprs.push(x);
                unscaled.push(call.unscaled);
                pre_exprs.len() - 1
            });
            aggs.push(GroupAgg {
                kind: call.kind,
                input,
                text: call.text,
            });
            result_types.push(call.result_type);
            finish.push(call.finish);
        }
        // The operator's input: keys, arguments (Int64, or Float64), the row kind.
        let key_count = keys.len();
        let mut fields: Vec<Field> = Vec::new();
        let mut physical = Vec::new();
        let mut arg_types = Vec::new();
        for (i, e) in pre_exprs.iter().enumerate() {
            let data_type = e
                .get_type(schema)
                .map_err(|x| err(format!("{e}: {}", x.strip_backtrace())))?;
            let name = if i < key_count {
                format!("__key{i}")
            } else {
                format!("__arg{i}")
            };
            arg_types.push(if i < key_count {
                data_type.clone()
            } else if matches!(
                data_type,
                DataType::Float16 | DataType::Float32 | DataType::Float64
            ) {
                DataType::Float64
            } else if is_text(&data_type) {
                DataType::Utf8
            } else {
                DataType::Int64
            });
            fields.push(Field::new(name, data_type, true));
            physical.push(self.physical(e, schema)?);
        }
        let evaluated = Arc::new(Schema::new(fields.clone()));
        for (f, t) in fields.iter_mut().zip(&arg_types) {
            *f = Field::new(f.name(), t.clone(), true);
        }
        if changelog {
            fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        }
        let pre_schema = Arc::new(Schema::new(fields));
        let target = pre_schema.clone();
        let pre = input.map_batches("aggregate input", pre_schema.clone(), move |batch| {
            let values = evaluate(&physical, &batch, &evaluated)?;
            let mut out = Vec::with_capacity(target.fields().len());
            for (i, (column, u)) in values.columns().iter().zip(&unscaled).enumerate() {
                out.push(if *u {
                    Arc::new(unscaled_values(column)?) as ArrayRef
                } else if i >= key_count && column.data_type() != target.field(i).data_type() {
                    arrow::compute::cast(column, target.field(i).data_type())?
                } else {
                    column.clone()
                });
            }
            if changelog {
                out.push(batch.column(batch.num_columns() - 1).clone());
            }
            Ok(RecordBatch::try_new(target.clone(), out)?)
        });
        let key_names: Vec<String> = (0..key_count).map(|i| format!("__key{i}")).collect();
        let aggregated = pre.key_by(&str_refs(&key_names)).group_aggregate(
            aggs,
            &result_types,
            changelog.then_some(pre_schema.fields().len() - 1),
        );
        // To the Aggregate's columns (the GROUP BY expressions, then the aggregates), then the
        // row kind.
        let mut out_fields = stream_schema(&a.schema).fields().to_vec();
        out_fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        let out = Arc::new(Schema::new(out_fields));
        let target = out.clone();
        let skip = usize::from(global);
        let result = aggregated.map_batches("aggregate result", out, move |batch| {
            let mut columns: Vec<ArrayRef> = batch.columns()[skip..key_count].to_vec();
            let results = batch.columns()[key_count..batch.num_columns() - 1].iter();
            for ((column, how), field) in results
                .zip(&finish)
                .zip(&target.fields()[key_count - skip..])
            {
                columns.push(match how {
                    Finish::Unscaled => from_unscaled(column, field)?,
                    _ => column.clone(),
                });
            }
            columns.push(batch.column(batch.num_columns() - 1).clone());
            connectors::columns_as(columns, &target)
        });
        Ok(Planned::Changelog(result))
    }
}

/// A string type (whatever its offsets or view).
/// `COUNT(DISTINCT x)` of a window: the distinct non-null values of column `column` seen, kept
/// sorted; windows merge (sessions, panes) by union.
struct CountDistinct {
    column: usize,
}

impl CountDistinct {
    fn insert(set: &mut crate::row::Row, value: crate::row::Value) {
        if value == crate::row::Value::Null {
            return;
        }
        let at = set.partition_point(|v| v.partial_cmp(&value) == Some(std::cmp::Ordering::Less));
        if set.get(at) != Some(&value) {
            set.insert(at, value);
        }
    }
}

impl crate::operators::aggregate::AggregateFunction for CountDistinct {
    fn output_type(&self) -> DataType {
        DataType::Int64
    }

    fn create(&self) -> crate::row::Row {
        Vec::new()
    }

    fn add(&self, acc: &mut crate::row::Row, input: &crate::row::Row) -> crate::error::Result<()> {
        let value = input
            .get(self.column)
            .cloned()
            .ok_or_else(|| Error::user("COUNT(DISTINCT): the argument column is missing"))?;
        Self::insert(acc, value);
        Ok(())
    }

    fn merge(&self, acc: &mut crate::row::Row, other: crate::row::Row) -> crate::error::Result<()> {
        for value in other {
            Self::insert(acc, value);
        }
        Ok(())
    }

    fn result(&self, acc: &crate::row::Row) -> crate::error::Result<crate::row::Value> {
        Ok(crate::row::Value::Int(acc.len() as i64))
    }
}

/// Nulls standing in for a Top-N's rank that nothing reads.
fn unread_rank(rows: usize) -> ArrayRef {
    arrow::array::new_null_array(&DataType::UInt64, rows)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Unscaled decimal values (`Int64`) as the decimal `field` is.
fn from_unscaled(column: &ArrayRef, field: &Field) -> crate::error::Result<ArrayRef> {
    let DataType::Decimal128(precision, scale) = field.data_type() else {
        return Err(Error::user(format!(
            "{} should be a DECIMAL, not {}",
            field.name(),
            field.data_type()
        )));
    };
    let values = arrow::compute::cast(column, &DataType::Int64)?;
    let values = values.as_primitive::<arrow::datatypes::Int64Type>();
    let decimals: arrow::array::Decimal128Array =
        arrow::compute::kernels::arity::unary(values, i128::from);
    Ok(Arc::new(decimals.with_precision_and_scale(*precision, *scale)?) as ArrayRef)
}

/// One aggregate call, planned for the group aggregation's accumulators.
struct AggregateCall {
    kind: GroupAggKind,
    /// What its argument column is computed by (none for `COUNT(*)`).
    arg: Option<Expr>,
    /// The argument is a decimal, taken as its unscaled values.
    unscaled: bool,
    text: bool,
    result_type: DataType,
    finish: Finish,
}

/// How a window aggregate's result column is finished.
#[derive(Clone, Copy)]
enum Finish {
    AsIs,
    /// Flink's AVG of integers: the quotient rounded towards zero.
    TruncateMean,
    /// An aggregate of a decimal's unscaled values, back to the decimal.
    Unscaled,
}

/// A decimal column's unscaled values (`12.345` at scale 3 is `12345`), as `Int64`.
fn unscaled_values(column: &ArrayRef) -> crate::error::Result<arrow::array::Int64Array> {
    let decimals = column.as_primitive::<arrow::datatypes::Decimal128Type>();
    decimals
        .iter()
        .map(|v| {
            v.map(|v| {
                i64::try_from(v).map_err(|_| {
                    Error::user(format!(
                        "the decimal {v} (unscaled) is too large to aggregate"
                    ))
                })
            })
            .transpose()
        })
        .collect()
}

fn str_refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// `col` or `col - INTERVAL '…' unit`: how far the watermark trails the largest time seen, in ms.
fn watermark_bound(
    column: &str,
    expr: &datafusion_sql::sqlparser::ast::Expr,
) -> Result<u64, String> {
    use datafusion_sql::sqlparser::ast::{BinaryOperator, Expr as Sql};
    let is_column = |e: &Sql| matches!(e, Sql::Identifier(i) if i.value == column);
    match expr {
        e if is_column(e) => Ok(0),
        Sql::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_column(left) => {
            let ms = super::tvf::interval_millis(right)?;
            u64::try_from(ms).map_err(|_| "the interval is negative".to_owned())
        }
        _ => Err(format!(
            "the watermark must be {column} or {column} - INTERVAL '…' unit"
        )),
    }
}

/// `SET 'table.exec.state.ttl' = '…'`: Flink's duration syntax, a number with an optional unit
/// (`ms`, `s`, `min`, `h`, `d`, or their long names; milliseconds without one). `0` is no TTL.
fn state_ttl(script: &PlannedScript) -> Result<Option<Duration>, SqlError> {
    let Some((_, value)) = script
        .settings
        .iter()
        .rev()
        .find(|(k, _)| k == "table.exec.state.ttl")
    else {
        return Ok(None);
    };
    let ms = parse_duration_ms(value).ok_or_else(|| {
        SqlError::at(
            Location::empty(),
            format!("table.exec.state.ttl: '{value}' is not a duration (like '1 h' or '500 ms')"),
        )
    })?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let scale = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// An interval join's bounds in `conditions` (over the join's `schema`, left columns first): the
/// comparisons between the two sides' event-time columns, each perhaps shifted by a constant
/// interval (`r.t BETWEEN l.t - INTERVAL '5' SECOND AND l.t + INTERVAL '10' SECOND`, or the same
/// as `>=`/`<=`/`>`/`<`), as inclusive bounds of `right time - left time` in milliseconds, as
/// the runtime's interval join takes them. Found only when they bound the difference from both
/// sides, as Flink requires; the conditions used are then removed from `conditions`.
fn interval_bounds(
    conditions: &mut Vec<Expr>,
    schema: &DFSchema,
    left: &DataStream,
    right: &DataStream,
) -> Option<(i64, i64)> {
    use datafusion_expr::Operator;
    let (left_time, right_time) = (left.time.as_ref()?, right.time.as_ref()?);
    let left_column = left.schema().index_of(&left_time.column).ok()?;
    let right_column =
        left.schema().fields().len() + right.schema().index_of(&right_time.column).ok()?;
    // A comparison `a op b` as bounds of `right - left` (in column values): which side `a`
    // reads, and `a`'s and `b`'s offsets.
    let bound = |a: &Expr, op: Operator, b: &Expr| -> Option<(Option<i64>, Option<i64>)> {
        let (ia, oa) = time_offset(a, schema)?;
        let (ib, ob) = time_offset(b, schema)?;
        // `right + x op left + y` is `right - left op y - x`.
        let (op, c) = if (ia, ib) == (right_column, left_column) {
            (op, ob.checked_sub(oa)?)
        } else if (ia, ib) == (left_column, right_column) {
            (op.swap()?, oa.checked_sub(ob)?)
        } else {
            return None;
        };
        match op {
            Operator::Gt => Some((Some(c.checked_add(1)?), None)),
            Operator::GtEq => Some((Some(c), None)),
            Operator::Lt => Some((None, Some(c.checked_sub(1)?))),
            Operator::LtEq => Some((None, Some(c))),
            _ => None,
        }
    };
    let mut lower: Option<i64> = None;
    let mut upper: Option<i64> = None;
    let mut used = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let parts: Vec<(Option<i64>, Option<i64>)> = match c {
            Expr::BinaryExpr(b) => bound(&b.left, b.op, &b.right).into_iter().collect(),
            Expr::Between(b) if !b.negated => {
                match (
                    bound(&b.expr, Operator::GtEq, &b.low),
                    bound(&b.expr, Operator::LtEq, &b.high),
                ) {
                    (Some(l), Some(h)) => vec![l, h],
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        if parts.is_empty() {
            continue;
        }
        for (l, u) in parts {
            if let Some(l) = l {
                lower = Some(lower.map_or(l, |x| x.max(l)));
            }
            if let Some(u) = u {
                upper = Some(upper.map_or(u, |x| x.min(u)));
            }
        }
        used.push(i);
    }
    let (lower, upper) = (lower?, upper?);
    for i in used.into_iter().rev() {
        conditions.remove(i);
    }
    // The runtime compares timestamps, a column's value plus its offset.
    let shift = right_time.offset.checked_sub(left_time.offset)?;
    Some((lower.checked_add(shift)?, upper.checked_add(shift)?))
}

/// `e` as a timestamp column of `schema` plus a constant number of milliseconds.
fn time_offset(e: &Expr, schema: &DFSchema) -> Option<(usize, i64)> {
    use datafusion_expr::Operator;
    match e {
        Expr::Alias(a) => time_offset(&a.expr, schema),
        Expr::Column(c) => {
            let i = schema.index_of_column(c).ok()?;
            matches!(schema.field(i).data_type(), DataType::Timestamp(..)).then_some((i, 0))
        }
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => {
            time_offset(&c.expr, schema)
        }
        Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
            let (i, o) = time_offset(&b.left, schema)?;
            let ms = interval_literal_ms(&b.right)?;
            let o = if b.op == Operator::Plus {
                o.checked_add(ms)?
            } else {
                o.checked_sub(ms)?
            };
            Some((i, o))
        }
        _ => None,
    }
}

/// A constant interval of days and smaller units, in whole milliseconds.
fn interval_literal_ms(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => i64::from(v.days)
            .checked_mul(86_400_000)?
            .checked_add(i64::from(v.milliseconds)),
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            (v.nanoseconds % 1_000_000 == 0).then_some(())?;
            i64::from(v.days)
                .checked_mul(86_400_000)?
                .checked_add(v.nanoseconds / 1_000_000)
        }
        Expr::Cast(c) => interval_literal_ms(&c.expr),
        _ => None,
    }
}

/// A RANGE frame's extent in milliseconds: an interval (days and smaller) or a number of
/// milliseconds.
fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalDayTime(Some(d)) => {
            Some(i64::from(d.days) * 86_400_000 + i64::from(d.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1000),
        other => other.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(n) => n,
            _ => None,
        }),
    }
}

/// The window assigner of a windowing TVF.
fn tvf_assigner(kind: &WindowKind) -> WindowAssigner {
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    match *kind {
        WindowKind::Tumble { size } => WindowAssigner::tumbling(ms(size)),
        WindowKind::Hop { slide, size } => WindowAssigner::sliding(ms(size), ms(slide)),
        WindowKind::Session { gap } => WindowAssigner::session(ms(gap)),
        WindowKind::Cumulate { step, size } => WindowAssigner::cumulative(ms(size), ms(step)),
    }
}

/// Bounds `[c, c]` of `right - left` event time when an equality key compares the two sides'
/// time attributes (`L.window_end = R.window_end` of a window join): the join is then an
/// interval join, whose state goes when the watermark passes.
fn equal_times(
    keys: &[(Expr, Expr)],
    schema: &DFSchema,
    left: &DataStream,
    right: &DataStream,
) -> Option<(i64, i64)> {
    let (left_time, right_time) = (left.time.as_ref()?, right.time.as_ref()?);
    let left_column = left.schema().index_of(&left_time.column).ok()?;
    let right_column =
        left.schema().fields().len() + right.schema().index_of(&right_time.column).ok()?;
    keys.iter().find_map(|(l, r)| {
        let (il, ol) = time_offset(l, schema)?;
        let (ir, or) = time_offset(r, schema)?;
        // `left + ol = right + or`: `right - left = ol - or` in column values.
        let c = if (il, ir) == (left_column, right_column) {
            ol.checked_sub(or)?
        } else {
            return None;
        };
        let c = c.checked_add(right_time.offset.checked_sub(left_time.offset)?)?;
        Some((c, c))
    })
}
