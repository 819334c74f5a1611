fn main() {
    std::process::exit(refract::cli::main());
}
