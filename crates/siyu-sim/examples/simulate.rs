//! Writes a simulated merchant's stream to stdout as NDJSON:
//! `cargo run -p siyu-sim --example simulate -- consumer_goods 42 90 20000 [end-rfc3339]`.

use std::io::{BufWriter, Write};

use siyu_model::{Industry, Millis};
use siyu_sim::{write_ndjson_with_stats, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let industry: Industry = arg(0, "consumer_goods").parse().unwrap_or_else(|e| panic!("{e}"));
    let end = args.get(4).and_then(|t| Millis::parse_rfc3339(t)).unwrap_or_else(Millis::now);
    let config = SimConfig {
        seed: arg(1, "42").parse().expect("seed"),
        days: arg(2, "90").parse().expect("days"),
        audience: arg(3, "20000").parse().expect("audience"),
        ..SimConfig::new(industry, 0, end)
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let stats = write_ndjson_with_stats(&config, &mut out).expect("write");
    out.flush().expect("flush");
    eprintln!("{stats:?}");
}
