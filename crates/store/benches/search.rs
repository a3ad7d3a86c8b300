//! Search benchmark (filled in below).
fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("search bench: not measuring (run with `cargo bench -p store --bench search`)");
    }
}
