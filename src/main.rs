//! The `flashdmoe` command-line tool; run `flashdmoe --help`. The commands live in `cli`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
