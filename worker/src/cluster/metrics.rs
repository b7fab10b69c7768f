//! Prometheus metrics of both roles, read from the live counters at each scrape (a
//! `prometheus-client` [`Collector`]), so nothing is copied on the data path.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One metric family as of a scrape.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counter: true,
            samples: Vec::new(),
        }
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counter: false,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        self.samples.push((
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        ));
    }
}

/// Something that can list its metric families at scrape time.
pub trait Source: Send + Sync + 'static {
    fn families(&self) -> Vec<Family>;
}

struct Scrape<S>(std::sync::Arc<S>);

impl<S> std::fmt::Debug for Scrape<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

struct Value(f64, bool);

impl EncodeMetric for Value {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        if self.1 {
            encoder.encode_counter::<Vec<(String, String)>, f64, f64>(&self.0, None)
        } else {
            encoder.encode_gauge(&self.0)
        }
    }

    fn metric_type(&self) -> MetricType {
        if self.1 {
            MetricType::Counter
        } else {
            MetricType::Gauge
        }
    }
}

impl<S: Source> Collector for Scrape<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.families() {
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                Value(*value, family.counter).encode(sample)?;
            }
        }
        Ok(())
    }
}

/// A registry that scrapes `source`.
pub fn registry<S: Source>(source: std::sync::Arc<S>) -> Registry {
    let mut registry = Registry::with_prefix("strom");
    registry.register_collector(Box::new(Scrape(source)));
    registry
}

/// The text exposition format of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Serves `GET /metrics` of `registry` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: std::sync::Arc<Registry>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&registry),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Source for Fixed {
        fn families(&self) -> Vec<Family> {
            let mut records = Family::counter("records_out", "records emitted");
            records.push(&[("vertex", "window")], 42.0);
            let mut lag = Family::gauge("watermark_lag_seconds", "how far event time trails");
            lag.push(&[("vertex", "sink")], 1.5);
            vec![records, lag]
        }
    }

    #[test]
    fn families_render_in_the_text_format() {
        let text = render(&registry(std::sync::Arc::new(Fixed)));
        assert!(text.contains("# TYPE strom_records_out counter"), "{text}");
        assert!(
            text.contains("strom_records_out_total{vertex=\"window\"} 42.0"),
            "{text}"
        );
        assert!(
            text.contains("strom_watermark_lag_seconds{vertex=\"sink\"} 1.5"),
            "{text}"
        );
    }
}
