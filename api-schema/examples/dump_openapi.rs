//! Writes every generated document into a directory, for inspecting them or serving them to a
//! real kubectl from a throwaway server: `cargo run -p api-schema --example dump_openapi -- DIR`.
//!
//! Layout: `DIR/v3/index.json`, `DIR/v3/<key with / as __>.json`, `DIR/v2.json`, `DIR/v2.pb`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "openapi-dump".into()),
    );
    let api = api_schema::OpenApi::build();
    std::fs::create_dir_all(dir.join("v3"))?;
    std::fs::write(dir.join("v3/index.json"), api.v3_index())?;
    for key in api.v3_keys() {
        if let Some((doc, _)) = api.v3_document(key) {
            std::fs::write(dir.join(format!("v3/{}.json", key.replace('/', "__"))), doc)?;
        }
    }
    std::fs::write(dir.join("v2.json"), api.v2_json())?;
    std::fs::write(dir.join("v2.pb"), api.v2_protobuf())?;
    println!("wrote {}", dir.display());
    Ok(())
}
