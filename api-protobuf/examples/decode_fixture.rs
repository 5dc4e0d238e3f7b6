//! Prints the JSON a protobuf body decodes to: `cargo run -p api-protobuf --example
//! decode_fixture -- body.pb`. Handy when capturing new kubectl bodies as fixtures.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for path in std::env::args().skip(1) {
        let result = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|body| api_protobuf::decode(&body).map_err(|e| e.to_string()))
            .and_then(|value| serde_json::to_string_pretty(&value).map_err(|e| e.to_string()));
        match result {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("{path}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
