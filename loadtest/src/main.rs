//! `loadtest`: Shardgate's bundled HTTP/1.1 load generator (closed and open loop, with
//! coordinated-omission correction), connection holder, and fast fixed-response upstream.
//!
//! Thread-per-core like the gateway: one monoio runtime per worker thread, pinned to a CPU,
//! connections spread over the workers, figures kept per worker and merged at the end.

mod cli;
mod client;
mod closed_loop;
mod hold;
mod html;
mod load;
mod open_loop;
mod plot;
mod progress;
mod report;
mod response;
mod rt;
mod schedule;
mod stats;
mod target;
mod upstream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadtest: {e}\n(see loadtest --help)");
            std::process::exit(2);
        }
    };
    let result = match command {
        cli::Command::Help => {
            print!("{}", cli::HELP);
            Ok(0)
        }
        cli::Command::Load(o) => load::run(o),
        cli::Command::Hold(o) => hold::run(o),
        cli::Command::Upstream(o) => upstream::run(o),
        cli::Command::Compare(o) => html::compare(&o),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(1);
        }
    }
}
