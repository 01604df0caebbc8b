//! `cargo run --release -p siyu-engine --example segment_bench -- [profiles] [events_per_profile]`
fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let profiles = args.next().unwrap_or(100_000);
    let per = args.next().unwrap_or(20);
    let r = siyu_engine::audience::bench::run_segment_bench(profiles, per);
    println!("{r:#?}");
}
