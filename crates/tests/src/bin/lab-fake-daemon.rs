//! A stand-in daemon for testing the lab's process management without our
//! product binaries: `lab-fake-daemon [--listen ADDR].. [--require FILE]..
//! [--print-args]` checks the files exist (exit 2 if not), listens on the
//! addresses, accepts and closes connections until killed.

use std::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));
    let mut listeners = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            eprintln!("missing value for {a}");
            std::process::exit(2);
        };
        match a.as_str() {
            "--listen" => match TcpListener::bind(v) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    eprintln!("bind {v}: {e}");
                    std::process::exit(2);
                }
            },
            "--require" => {
                if !std::path::Path::new(v).exists() {
                    eprintln!("missing {v}");
                    std::process::exit(2);
                }
            }
            _ => {
                eprintln!("unknown flag {a}");
                std::process::exit(2);
            }
        }
    }
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                for c in l.incoming() {
                    drop(c);
                }
            })
        })
        .collect();
    if threads.is_empty() {
        loop {
            std::thread::park();
        }
    }
    for t in threads {
        let _ = t.join();
    }
}
