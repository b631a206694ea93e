//! The origin service (filled in by the origin issue).
fn main() {
    println!("origin: not built yet");
}
