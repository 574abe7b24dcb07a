//! What `/metrics` served, parsed by `openmetrics-parser` (strict grammars of Prometheus
//! text 0.0.4 and OpenMetrics 1.0) and flattened into the samples a scraper stores, to
//! look values up by name and labels.

use std::collections::BTreeMap;

use openmetrics_parser::{HistogramValue, MetricNumber, OpenMetricsValue, PrometheusValue};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The families of one page (by the name its `TYPE` line gives) and their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
    pub units: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses Prometheus text format 0.0.4.
    pub fn prometheus(text: &str) -> Result<Exposition, String> {
        let parsed = openmetrics_parser::prometheus::parse_prometheus(text).map_err(|e| e.to_string())?;
        let mut out = Exposition::default();
        for (name, family) in parsed.families {
            out.types.insert(name.clone(), family.family_type.to_string());
            out.helps.insert(name.clone(), family.help.clone());
            for sample in family.iter_samples() {
                let labels = labels(sample.get_labelset().map_err(|e| e.to_string())?.iter());
                match &sample.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => out.push(&name, "", labels, n),
                    PrometheusValue::Counter(c) => out.push(&name, "", labels, &c.value),
                    PrometheusValue::Histogram(h) => out.histogram(&name, labels, h),
                    PrometheusValue::Summary(_) => return Err(format!("{name}: no summary is expected")),
                }
            }
        }
        Ok(out)
    }

    /// Parses OpenMetrics 1.0 text; samples get the names a scraper stores (a counter
    /// `x` as `x_total`, an info `x` as `x_info`).
    pub fn openmetrics(text: &str) -> Result<Exposition, String> {
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(text).map_err(|e| e.to_string())?;
        let mut out = Exposition::default();
        for (name, family) in parsed.families {
            out.types.insert(name.clone(), family.family_type.to_string());
            out.helps.insert(name.clone(), family.help.clone());
            if !family.unit.is_empty() {
                out.units.insert(name.clone(), family.unit.clone());
            }
            for sample in family.iter_samples() {
                let labels = labels(sample.get_labelset().map_err(|e| e.to_string())?.iter());
                match &sample.value {
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => out.push(&name, "", labels, n),
                    OpenMetricsValue::Counter(c) => out.push(&name, "_total", labels, &c.value),
                    OpenMetricsValue::Info => out.push(&name, "_info", labels, &MetricNumber::Int(1)),
                    OpenMetricsValue::Histogram(h) => out.histogram(&name, labels, h),
                    other => return Err(format!("{name}: unexpected value {other:?}")),
                }
            }
        }
        Ok(out)
    }

    fn push(&mut self, family: &str, suffix: &str, labels: BTreeMap<String, String>, value: &MetricNumber) {
        self.samples.push(Sample { name: format!("{family}{suffix}"), labels, value: value.as_f64() });
    }

    fn histogram(&mut self, family: &str, labels: BTreeMap<String, String>, h: &HistogramValue) {
        for bucket in &h.buckets {
            let mut with_le = labels.clone();
            let le = if bucket.upper_bound.is_infinite() { "+Inf".to_owned() } else { bucket.upper_bound.to_string() };
            with_le.insert("le".into(), le);
            self.push(family, "_bucket", with_le, &bucket.count);
        }
        if let Some(sum) = &h.sum {
            self.push(family, "_sum", labels.clone(), sum);
        }
        if let Some(count) = h.count {
            self.push(family, "_count", labels, &MetricNumber::Int(count as i64));
        }
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == labels).map(|s| s.value)
    }

    pub fn get(&self, name: &str, projection: &str, partition: &str) -> f64 {
        self.value(name, &[("projection", projection), ("partition", partition)])
            .unwrap_or_else(|| panic!("no sample {name}{{{projection},{partition}}}"))
    }

    /// Every sample of `name`, with its labels.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn labels<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> BTreeMap<String, String> {
    pairs.map(|(k, v)| (k.clone(), v.clone())).collect()
}
