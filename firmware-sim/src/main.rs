fn main() {
    eprintln!("firmware-sim: transport not wired yet");
    std::process::exit(2);
}
