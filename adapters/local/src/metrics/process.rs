//! The standard `process_*` metrics (CPU time, memory, file descriptors, threads, start
//! time), read from the operating system at each scrape by `metrics-process` (on Linux
//! from `/proc/self`). A value the platform does not give is left out, not reported as 0.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Registers with [`prometheus_client::registry::Registry::register_collector`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let m = metrics_process::collector::collect();
        if let Some(seconds) = m.cpu_seconds_total {
            let counter = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds.";
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                help,
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_open_fds", "Number of open file descriptors.", None, m.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", None, m.max_fds.map(limit)),
            ("process_virtual_memory", "Virtual memory size in bytes.", Some(Unit::Bytes), m.virtual_memory_bytes),
            (
                "process_virtual_memory_max",
                "Maximum amount of virtual memory available in bytes.",
                Some(Unit::Bytes),
                m.virtual_memory_max_bytes.map(limit),
            ),
            ("process_resident_memory", "Resident memory size in bytes.", Some(Unit::Bytes), m.resident_memory_bytes),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                m.start_time_seconds,
            ),
            ("process_threads", "Number of OS threads in the process.", None, m.threads),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// A resource limit: `metrics-process` gives 0 for "unlimited" (no running process can
/// have 0 as a real limit on descriptors or address space), which is reported as
/// `RLIM_INFINITY`, as the Go client does.
fn limit(n: u64) -> u64 {
    if n == 0 {
        u64::MAX
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reports_the_standard_process_metrics() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE process_threads gauge",
        ] {
            assert!(text.contains(family), "{family} in\n{text}");
        }
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_open_fds") >= 1.0);
    }
}
