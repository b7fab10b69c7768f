//! Flink's built-in functions that DataFusion does not have under Flink's name and meaning, as
//! DataFusion scalar functions: `DATE_FORMAT`, `HOUR`, `MOD`, `SPLIT_INDEX`, `REGEXP_EXTRACT`.
//! The rest (`UPPER`, `LOWER`, `CONCAT`, `SUBSTRING`, `CHAR_LENGTH`, `TRIM`, `ABS`, ...) are
//! DataFusion's own.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use datafusion_common::{DataFusionError, Result, exec_err, plan_err};
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Every function of this module.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    [
        Flink::DateFormat,
        Flink::Hour,
        Flink::Mod,
        Flink::SplitIndex,
        Flink::RegexpExtract,
    ]
    .into_iter()
    .map(|f| {
        Arc::new(ScalarUDF::new_from_impl(Function {
            signature: Signature::user_defined(Volatility::Immutable),
            f,
        }))
    })
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Flink {
    /// `DATE_FORMAT(timestamp, 'yyyy-MM-dd HH:mm')`: Java's date pattern letters.
    DateFormat,
    /// `HOUR(timestamp)`: the hour of the day, BIGINT.
    Hour,
    /// `MOD(a, b)`: the remainder, with the sign of `a`.
    Mod,
    /// `SPLIT_INDEX(s, separator, i)`: the `i`-th (0-based) piece, or NULL.
    SplitIndex,
    /// `REGEXP_EXTRACT(s, regex[, group])`: the group (default 1; 0 is the whole match), or NULL.
    RegexpExtract,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Function {
    signature: Signature,
    f: Flink,
}

fn millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        match self.f {
            Flink::DateFormat => "date_format",
            Flink::Hour => "hour",
            Flink::Mod => "mod",
            Flink::SplitIndex => "split_index",
            Flink::RegexpExtract => "regexp_extract",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let want: &[DataType] = match self.f {
            Flink::DateFormat => &[millis(), DataType::Utf8],
            Flink::Hour => &[millis()],
            Flink::Mod => &[DataType::Int64, DataType::Int64],
            Flink::SplitIndex => &[DataType::Utf8, DataType::Utf8, DataType::Int64],
            Flink::RegexpExtract if args.len() == 2 => &[DataType::Utf8, DataType::Utf8],
            Flink::RegexpExtract => &[DataType::Utf8, DataType::Utf8, DataType::Int64],
        };
        if args.len() != want.len() {
            return plan_err!(
                "{} takes {} arguments, not {}",
                self.name().to_ascii_uppercase(),
                want.len(),
                args.len()
            );
        }
        Ok(want.to_vec())
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.f {
            Flink::Hour | Flink::Mod => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: ArrayRef = match self.f {
            Flink::DateFormat => {
                let times = arrays[0].as_primitive::<TimestampMillisecondType>();
                let patterns = arrays[1].as_string::<i32>();
                let mut cache: Option<(String, String)> = None;
                let mut out = Vec::with_capacity(times.len());
                for i in 0..times.len() {
                    if times.is_null(i) || patterns.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    let pattern = patterns.value(i);
                    if cache.as_ref().is_none_or(|(p, _)| p != pattern) {
                        cache = Some((pattern.to_owned(), strftime(pattern)?));
                    }
                    let format = cache.as_ref().map_or("", |(_, f)| f.as_str());
                    let t = arrow::temporal_conversions::timestamp_ms_to_datetime(times.value(i))
                        .ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "timestamp {} is out of range",
                            times.value(i)
                        ))
                    })?;
                    out.push(Some(t.format(format).to_string()));
                }
                Arc::new(StringArray::from(out))
            }
            Flink::Hour => {
                let times = arrays[0].as_primitive::<TimestampMillisecondType>();
                let hours: Int64Array = times
                    .iter()
                    .map(|t| t.map(|t| t.rem_euclid(86_400_000) / 3_600_000))
                    .collect();
                Arc::new(hours)
            }
            Flink::Mod => {
                let (a, b) = (
                    arrays[0].as_primitive::<Int64Type>(),
                    arrays[1].as_primitive::<Int64Type>(),
                );
                let mut out = Vec::with_capacity(a.len());
                for (x, y) in a.iter().zip(b.iter()) {
                    out.push(match (x, y) {
                        (Some(_), Some(0)) => return exec_err!("MOD by zero"),
                        (Some(x), Some(y)) => Some(x.wrapping_rem(y)),
                        _ => None,
                    });
                }
                Arc::new(Int64Array::from(out))
            }
            Flink::SplitIndex => {
                let (s, sep, index) = (
                    arrays[0].as_string::<i32>(),
                    arrays[1].as_string::<i32>(),
                    arrays[2].as_primitive::<Int64Type>(),
                );
                let out: StringArray = (0..s.len())
                    .map(|i| {
                        if s.is_null(i) || sep.is_null(i) || index.is_null(i) {
                            return None;
                        }
                        let n = usize::try_from(index.value(i)).ok()?;
                        let sep = sep.value(i);
                        if sep.is_empty() {
                            return (n == 0).then(|| s.value(i).to_owned());
                        }
                        s.value(i).split(sep).nth(n).map(str::to_owned)
                    })
                    .collect();
                Arc::new(out)
            }
            Flink::RegexpExtract => {
                let (s, patterns) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
                let groups = arrays.get(2).map(|g| g.as_primitive::<Int64Type>());
                let mut cache: Option<(String, regex::Regex)> = None;
                let mut out = Vec::with_capacity(s.len());
                for i in 0..s.len() {
                    let group = match groups {
                        Some(g) if g.is_null(i) => None,
                        Some(g) => usize::try_from(g.value(i)).ok(),
                        None => Some(1),
                    };
                    if s.is_null(i) || patterns.is_null(i) || group.is_none() {
                        out.push(None);
                        continue;
                    }
                    let pattern = patterns.value(i);
                    if cache.as_ref().is_none_or(|(p, _)| p != pattern) {
                        let re = regex::Regex::new(pattern).map_err(|e| {
                            DataFusionError::Execution(format!(
                                "REGEXP_EXTRACT: bad pattern {pattern}: {e}"
                            ))
                        })?;
                        cache = Some((pattern.to_owned(), re));
                    }
                    let extracted = cache.as_ref().and_then(|(_, re)| {
                        let captures = re.captures(s.value(i))?;
                        Some(captures.get(group?)?.as_str().to_owned())
                    });
                    out.push(extracted);
                }
                Arc::new(StringArray::from(out))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// A Java date pattern (`yyyy-MM-dd HH:mm:ss.SSS`) as a chrono format string. Letters it does
/// not know are an error; text in single quotes is literal.
fn strftime(pattern: &str) -> Result<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        if c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == '\'')
                .map_or(chars.len(), |p| i + 1 + p);
            out.extend(chars[i + 1..end].iter().map(|&d| match d {
                '%' => "%%".to_owned(),
                d => d.to_string(),
            }));
            i = end + 1;
            continue;
        }
        let piece = match (c, run) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', _) => "%3f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            (c, _) if c.is_ascii_alphabetic() => {
                return plan_err!("DATE_FORMAT: pattern letter '{c}' is not supported");
            }
            ('%', _) => "%%",
            _ => {
                out.extend(std::iter::repeat_n(c, run));
                i += run;
                continue;
            }
        };
        out.push_str(piece);
        i += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date_patterns_become_chrono_formats() {
        assert_eq!(
            strftime("yyyy-MM-dd HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
        assert_eq!(strftime("HH:mm").unwrap(), "%H:%M");
        assert_eq!(strftime("yyyy'T'dd").unwrap(), "%YT%d");
        assert!(strftime("QQ").is_err());
    }
}
